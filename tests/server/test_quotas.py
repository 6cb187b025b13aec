"""What one identity may cost (server/quotas.py), and the store's bounds: each flood is
refused past its quota while another identity is still served. The server trusts
127.0.0.1 as a proxy here, so X-Forwarded-For makes the test's clients distinct
identities (the way a deployment behind a proxy tells its clients apart)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import websockets

from tests.helpers import BareClient, RunningServer, eventually, http_session, running_server

PROXIED = {"trusted_proxies": "127.0.0.1"}


async def post(
    http: aiohttp.ClientSession, server: RunningServer, room: str, body: dict[str, Any], who: str
) -> tuple[int, Any]:
    headers = {"X-Forwarded-For": who}
    url = f"{server.http_url}/rooms/{room}/actions"
    async with http.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


@contextlib.asynccontextmanager
async def client_from(url: str, who: str) -> AsyncIterator[BareClient]:
    headers = {"X-Forwarded-For": who}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        yield BareClient(ws)


async def answer(ws: BareClient) -> list[Any]:
    """The next ACK or ERROR, skipping DIFFs."""
    while True:
        message = await ws.recv()
        if message[0] in (7, 8):
            return message


async def test_one_identity_cannot_create_rooms_without_bound() -> None:
    async with running_server(identity_rooms_per_minute=5, **PROXIED) as server:
        async with http_session() as http:
            for i in range(5):
                body = {"client": f"c{i}", "aid": 1, "name": "patch", "args": []}
                assert (await post(http, server, f"flood-{i}", body, "10.0.0.1"))[0] == 200
            status, refused = await post(
                http, server, "flood-5", {"client": "c", "aid": 1, "name": "patch"}, "10.0.0.1"
            )
            assert status == 429 and "--identity-rooms-per-minute" in refused["message"]
            # Rooms that exist take actions still; another identity still creates rooms.
            body = {"client": "c0", "aid": 2, "name": "patch", "args": []}
            assert (await post(http, server, "flood-0", body, "10.0.0.1"))[0] == 200
            other = {"client": "o", "aid": 1, "name": "patch", "args": []}
            assert (await post(http, server, "other-1", other, "10.0.0.2"))[0] == 200
        async with client_from(server.room_url("flood-ws"), "10.0.0.1") as ws:
            await ws.send([1, {"v": 1, "role": "agent"}])
            assert await ws.closed() == 1013
            assert "--identity-rooms-per-minute" in str(ws.ws.close_reason)
        assert "flood-5" not in server.app.rooms.rooms and "flood-ws" not in server.app.rooms.rooms


async def test_rotating_client_ids_does_not_sidestep_the_rate_limit() -> None:
    async with running_server(identity_action_rate=10, **PROXIED) as server:
        async with http_session() as http:
            statuses = [
                (await post(http, server, "r",
                            {"client": f"id-{i}", "aid": 1, "name": "patch", "args": []},
                            "10.0.0.1"))[0]
                for i in range(60)
            ]  # fmt: skip
            assert statuses.count(429) >= 30 and statuses.count(200) >= 10
            other = {"client": "o", "aid": 1, "name": "patch", "args": []}
            assert (await post(http, server, "r", other, "10.0.0.2"))[0] == 200
        async with client_from(server.room_url("r"), "10.0.0.3") as ws:
            await ws.hello(client="ws-agent")
            await ws.recv_type(3)
            await ws.send(*([4, aid, "patch", []] for aid in range(1, 41)))
            answers = [await answer(ws) for _ in range(40)]
            refused = [a for a in answers if a[0] == 8]
            assert refused and all("--identity-action-rate" in a[3] for a in refused)


async def test_throwaway_client_ids_cannot_lock_a_room_against_others() -> None:
    settings = {"room_clients_per_identity": 5, "max_room_clients": 300, **PROXIED}
    async with running_server(**settings) as server, http_session() as http:
        for i in range(5):
            body = {"client": f"junk-{i}", "aid": 1, "name": "patch", "args": []}
            assert (await post(http, server, "locked", body, "10.0.0.1"))[0] == 200
        status, refused = await post(
            http, server, "locked", {"client": "junk-5", "aid": 1, "name": "patch"}, "10.0.0.1"
        )
        assert status == 403 and "--room-clients-per-identity" in refused["message"]
        body = {"client": "junk-0", "aid": 2, "name": "patch", "args": []}  # one it has: fine
        assert (await post(http, server, "locked", body, "10.0.0.1"))[0] == 200
        async with client_from(server.room_url("locked"), "10.0.0.1") as ws:
            await ws.send([1, {"v": 1, "role": "agent", "client": "junk-6"}])
            assert await ws.closed() == 4003
        async with client_from(server.room_url("locked"), "10.0.0.2") as ws:
            welcome = await ws.hello(client="newcomer")
            assert welcome["client"] == "newcomer"


async def test_one_identity_holds_a_bounded_number_of_connections() -> None:
    async with running_server(identity_connections=3, **PROXIED) as server:
        url = server.room_url("conns")
        async with contextlib.AsyncExitStack() as held:
            for _ in range(3):
                ws = await held.enter_async_context(client_from(url, "10.0.0.1"))
                await ws.hello()
            async with client_from(url, "10.0.0.1") as fourth:
                await fourth.send([1, {"v": 1, "role": "spectator"}])
                assert await fourth.closed() == 1013
                assert "--identity-connections" in str(fourth.ws.close_reason)
            async with client_from(url, "10.0.0.2") as other:
                await other.hello()
        # Closed connections are given back: the first identity may connect again.
        async with client_from(url, "10.0.0.1") as again:
            await again.hello()
        await eventually(lambda: "ip:10.0.0.1" not in server.app.quotas.connections)


async def test_a_forwarded_address_counts_only_from_a_trusted_proxy() -> None:
    """Without --trusted-proxies, X-Forwarded-For is the client's own claim: ignored."""
    async with running_server(identity_rooms_per_minute=2) as server, http_session() as http:
        for i in range(2):
            body = {"client": "c", "aid": 1, "name": "patch", "args": []}
            assert (await post(http, server, f"spoof-{i}", body, f"10.9.9.{i}"))[0] == 200
        body = {"client": "c", "aid": 1, "name": "patch", "args": []}
        assert (await post(http, server, "spoof-2", body, "10.9.9.2"))[0] == 429


async def test_the_store_bound_stops_growth_and_creation_but_not_shrinking() -> None:
    async with (
        running_server(max_store_bytes=20_000, max_stored_rooms=0) as server,
        http_session() as http,
    ):
        grow = {"client": "a", "aid": 1, "name": "patch", "args": [[0, ["big"], "x" * 30_000]]}
        assert (await post(http, server, "big", grow, "-"))[0] == 200
        await eventually(lambda: server.app.bounds.full is not None)
        more = {"client": "a", "aid": 2, "name": "patch", "args": [[0, ["more"], "y"]]}
        status, refused = await post(http, server, "big", more, "-")
        assert status == 413, refused
        assert refused["code"] == "too_large" and "--max-store-bytes" in refused["message"]
        status, refused = await post(
            http, server, "new", {"client": "a", "aid": 1, "name": "patch"}, "-"
        )
        assert status == 503 and "--max-store-bytes" in refused["message"]
        shrink = {"client": "a", "aid": 3, "name": "patch", "args": [[1, ["big"]]]}
        assert (await post(http, server, "big", shrink, "-"))[0] == 200
        # The log still holds the big diff until a checkpoint trims it: the store stays
        # full, and says so, until then.
        async with http.get(f"{server.http_url}/metrics") as resp:
            metrics = await resp.text()
        assert 'statecast_quota_refusals_total{quota="store"} 1.0' in metrics
        assert "statecast_store_bytes " in metrics


async def test_the_store_holds_a_bounded_number_of_rooms() -> None:
    async with running_server(max_stored_rooms=3) as server, http_session() as http:
        for i in range(3):
            body = {"client": "a", "aid": 1, "name": "patch", "args": []}
            assert (await post(http, server, f"room-{i}", body, "-"))[0] == 200
        bounds = server.app.bounds
        await eventually(lambda: bounds.usage is not None and bounds.usage.rooms == 3)
        status, refused = await post(
            http, server, "room-3", {"client": "a", "aid": 1, "name": "patch"}, "-"
        )
        assert status == 503 and "--max-stored-rooms" in refused["message"]
        body = {"client": "a", "aid": 2, "name": "patch", "args": [[0, ["k"], 1]]}
        assert (await post(http, server, "room-0", body, "-"))[0] == 200


@pytest.mark.parametrize("value", ["10.0.0.0/33", "proxy.example"])
def test_a_bad_trusted_proxy_is_named(value: str) -> None:
    from statecast.server.config import Config

    with pytest.raises(ValueError) as bad:
        Config(trusted_proxies=value)
    assert "--trusted-proxies" in str(bad.value) and repr(value) in str(bad.value)


async def test_large_writes_are_bounded_per_identity_in_bytes() -> None:
    """--identity-write-rate: 512 KiB patches pass until the identity's bytes run out
    (a burst of 16 s of its rate), over HTTP and WebSocket alike; another identity is
    served meanwhile."""
    blob = "x" * (512 << 10)
    async with running_server(identity_write_rate=100_000, **PROXIED) as server:
        async with http_session() as http:
            statuses = []
            for i in range(6):
                body = {"client": "w", "aid": i + 1, "name": "patch", "args": [[0, ["k"], blob]]}
                statuses.append(await post(http, server, "writes", body, "10.0.0.1"))
            assert [s for s, _ in statuses[:3]] == [200, 200, 200]
            assert statuses[-1][0] == 429 and "--identity-write-rate" in statuses[-1][1]["message"]
            body = {"client": "o", "aid": 1, "name": "patch", "args": [[0, ["o"], blob]]}
            assert (await post(http, server, "writes", body, "10.0.0.2"))[0] == 200
        async with client_from(server.room_url("writes"), "10.0.0.1") as ws:
            await ws.hello(client="ws-writer")
            await ws.recv_type(3)
            await ws.send([4, 1, "patch", [[0, ["w"], blob]]])
            refused = await answer(ws)
            assert refused[:3] == [8, 1, "rate_limited"] and "--identity-write-rate" in refused[3]
