"""Host and Origin checks: DNS rebinding and cross-site writes against a loopback server."""

from __future__ import annotations

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from statecast import connect
from tests.helpers import RunningServer, http_session, running_server


async def test_a_foreign_host_is_refused_on_both_listeners(server: RunningServer) -> None:
    """A page on attacker.example resolving to 127.0.0.1 (DNS rebinding) sends
    `Host: attacker.example`: 403 naming --allowed-hosts, on HTTP and on the handshake."""
    async with http_session() as http:
        headers = {"Host": "attacker.example:8766"}
        async with http.get(f"{server.http_url}/rooms", headers=headers) as r:
            body = await r.json()
            assert r.status == 403 and "--allowed-hosts" in body["message"]
        async with http.get(f"{server.http_url}/rooms", headers={"Host": "localhost"}) as r:
            assert r.status == 200
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(
            server.room_url("g"), additional_headers={"Host": "attacker.example"}
        ):
            pass
    assert refused.value.response.status_code == 403


async def test_a_page_on_another_origin_can_neither_post_nor_open_a_websocket(
    server: RunningServer,
) -> None:
    evil = "http://attacker.example"
    body = {"client": "x", "aid": 1, "name": "patch", "args": [[0, ["pwned"], 1]]}
    async with http_session() as http:
        url = f"{server.http_url}/rooms/g-origin/actions"
        async with http.post(url, json=body, headers={"Origin": evil}) as r:
            assert r.status == 403 and "--allowed-origins" in (await r.json())["message"]
        own = server.http_url.replace("127.0.0.1", "localhost")
        async with http.post(url, json=body, headers={"Origin": own}) as r:
            assert r.status == 200  # the server's own pages may
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(server.room_url("g-origin"), origin=evil):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    async with connect(server.room_url("g-origin"), role="spectator") as spectator:
        assert spectator.state == {"pwned": 1}  # no Origin (not a browser): served


async def test_allowed_hosts_and_origins_widen_the_defaults() -> None:
    settings = {"allowed_hosts": "statecast.internal", "allowed_origins": "https://app.example"}
    async with running_server(**settings) as srv, http_session() as http:
        headers = {"Host": "statecast.internal", "Origin": "https://app.example"}
        body = {"client": "x", "aid": 1, "name": "patch", "args": []}
        async with http.post(f"{srv.http_url}/rooms/g2/actions", json=body, headers=headers) as r:
            assert r.status == 200
        async with http.get(f"{srv.http_url}/rooms", headers={"Host": "127.0.0.1"}) as r:
            assert r.status == 403  # the list replaces the loopback default
