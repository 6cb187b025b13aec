"""Conformance: docs/protocol.md §10, HTTP (polling with ETag, changefeed, actions, health)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import rfc8785

from tests.helpers import RunningServer, http_session, make_room, running_server
from tests.server.test_protocol_messages import joined


async def post_action(
    http: aiohttp.ClientSession, server: RunningServer, room: str, body: Any
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, (str, bytes)) else {"json": body}
    if "data" in kwargs:  # raw text, sent as JSON would be
        kwargs["headers"] = {"Content-Type": "application/json"}
    async with http.post(f"{server.http_url}/rooms/{room}/actions", **kwargs) as r:
        return r.status, await r.json()


async def patch(
    http: aiohttp.ClientSession, server: RunningServer, room: str, aid: int, *ops: list[Any]
) -> int:
    status, body = await post_action(
        http, server, room, {"client": "h", "aid": aid, "name": "patch", "args": list(ops)}
    )
    assert status == 200, body
    return int(body["seq"])


async def get(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, Mapping[str, str], Any]:
    async with http.get(url, headers=headers or {}) as r:
        text = await r.text()
        body = await r.json() if text and r.content_type == "application/json" else text
        return r.status, r.headers.copy(), body


# --- /state -----------------------------------------------------------------------------------


async def test_state_has_etag_and_body(server: RunningServer) -> None:
    """§10.2, §10.3: GET /state answers {epoch, seq, state} with ETag "epoch:seq"."""
    async with http_session() as http:
        await patch(http, server, "h-state", 1, [0, ["a"], [1, 2.5, "x", None, True]])
        status, headers, body = await get(http, f"{server.http_url}/rooms/h-state/state")
        assert status == 200
        assert body == {
            "epoch": body["epoch"],
            "seq": 1,
            "state": {"a": [1, 2.5, "x", None, True]},
        }
        assert headers["ETag"] == f'"{body["epoch"]}:1"'


@pytest.mark.parametrize(
    "header",
    ["{tag}", "W/{tag}", '"nope", {tag}', 'W/"nope", W/{tag}', "*"],
    ids=["exact", "weak", "list", "weak-list", "star"],
)
async def test_if_none_match_gets_304(server: RunningServer, header: str) -> None:
    """§10.1: If-None-Match with the ETag (exact, weak W/, in a list, or *) gets 304 with
    no body.
    """
    async with http_session() as http:
        await patch(http, server, "h-304", 1, [0, ["a"], 1])
        url = f"{server.http_url}/rooms/h-304/state"
        _, headers, _ = await get(http, url)
        tag = headers["ETag"]
        for path in ("state", "head"):
            async with http.get(
                f"{server.http_url}/rooms/h-304/{path}",
                headers={"If-None-Match": header.format(tag=tag)},
            ) as r:
                assert r.status == 304
                assert await r.read() == b""
                assert r.headers["ETag"] == tag


async def test_stale_if_none_match_gets_200(server: RunningServer) -> None:
    """§10.1: An ETag from before a change no longer matches: 200 with the new state and ETag."""
    async with http_session() as http:
        await patch(http, server, "h-stale", 1, [0, ["a"], 1])
        url = f"{server.http_url}/rooms/h-stale/state"
        _, headers, _ = await get(http, url)
        old = headers["ETag"]
        await patch(http, server, "h-stale", 2, [0, ["a"], 2])
        status, headers, body = await get(http, url, {"If-None-Match": old})
        assert status == 200 and body["state"] == {"a": 2} and headers["ETag"] != old
        status, _, _ = await get(http, url, {"If-None-Match": '"other:1"'})
        assert status == 200


async def test_unknown_room_is_404_and_gets_never_create_it(server: RunningServer) -> None:
    """§10.1, §10.9: GETs on an unknown room are 404 no_such_room, and never create the room."""
    async with http_session() as http:
        for _ in range(2):
            for path in ("state", "head", "changes?epoch=abcdefgh&since=0", "clients/x"):
                status, _, body = await get(http, f"{server.http_url}/rooms/h-none/{path}")
                assert status == 404, path
                assert body["code"] == "no_such_room" and isinstance(body["message"], str)
        assert "h-none" not in server.app.rooms.rooms


# --- /head ------------------------------------------------------------------------------------


async def test_head_digest_is_sha256_of_jcs_state(server: RunningServer) -> None:
    """§10.3: /head's digest is hex SHA-256 of the state's RFC 8785 form; oldest is 0 with
    all held.
    """
    async with http_session() as http:
        await patch(http, server, "h-head", 1, [0, ["z"], {"b": 1.5, "a": "é"}], [0, ["n"], 1e21])
        await patch(http, server, "h-head", 2, [0, ["l"], [3, 2, 1]])
        _, _, state = await get(http, f"{server.http_url}/rooms/h-head/state")
        status, headers, head = await get(http, f"{server.http_url}/rooms/h-head/head")
        assert status == 200
        assert set(head) == {"epoch", "seq", "digest", "oldest"}
        assert head["epoch"] == state["epoch"] and head["seq"] == 2
        assert head["digest"] == hashlib.sha256(rfc8785.dumps(state["state"])).hexdigest()
        assert head["oldest"] == 0
        assert headers["ETag"] == f'"{head["epoch"]}:2"'


async def test_head_oldest_follows_trimming() -> None:
    """§10.2: With history_diffs=2, oldest is the oldest held diff's seq - 1; with none
    held, seq.
    """
    async with running_server(history_diffs=2) as server, http_session() as http:
        await make_room(server, "h-oldest")  # with no diffs
        _, _, head = await get(http, f"{server.http_url}/rooms/h-oldest/head")
        assert head["seq"] == 0 and head["oldest"] == 0
        for aid in range(1, 6):
            await patch(http, server, "h-oldest", aid, [0, ["n"], aid])
        _, _, head = await get(http, f"{server.http_url}/rooms/h-oldest/head")
        assert head["seq"] == 5 and head["oldest"] == 3


# --- /changes ---------------------------------------------------------------------------------


async def test_changes_since(server: RunningServer) -> None:
    """§10.4: /changes?epoch&since gives {epoch, from, to, changes[{seq, ops}]} after since."""
    async with http_session() as http:
        for aid in range(1, 4):
            await patch(http, server, "h-changes", aid, [0, ["n"], aid])
        _, _, head = await get(http, f"{server.http_url}/rooms/h-changes/head")
        epoch = head["epoch"]
        url = f"{server.http_url}/rooms/h-changes/changes?epoch={epoch}&since=1"
        status, _, body = await get(http, url)
        assert status == 200
        assert body == {
            "epoch": epoch,
            "from": 2,
            "to": 3,
            "changes": [{"seq": 2, "ops": [[0, ["n"], 2]]}, {"seq": 3, "ops": [[0, ["n"], 3]]}],
        }
        status, _, body = await get(
            http, f"{server.http_url}/rooms/h-changes/changes?epoch={epoch}&since=3"
        )
        assert status == 200 and body == {"epoch": epoch, "from": 4, "to": 3, "changes": []}


async def test_changes_gone() -> None:
    """§10.4: /changes is 410 for another epoch, since above the head, or since below oldest."""
    async with running_server(history_diffs=2) as server, http_session() as http:
        for aid in range(1, 6):
            await patch(http, server, "h-gone", aid, [0, ["n"], aid])
        _, _, head = await get(http, f"{server.http_url}/rooms/h-gone/head")
        epoch, oldest = head["epoch"], head["oldest"]
        base = f"{server.http_url}/rooms/h-gone/changes"
        for query in (
            "epoch=otherepoch&since=4",
            f"epoch={epoch}&since=6",
            f"epoch={epoch}&since={oldest - 1}",
        ):
            status, _, body = await get(http, f"{base}?{query}")
            assert status == 410, query
            assert {"code", "message"} <= set(body)
        status, _, body = await get(http, f"{base}?epoch={epoch}&since={oldest}")
        assert status == 200 and [c["seq"] for c in body["changes"]] == [4, 5]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?since=0",
        "?epoch=abcdefgh",
        "?epoch=abcdefgh&since=x",
        "?epoch=abcdefgh&since=-1",
        "?epoch=abcdefgh&since=1.5",
        "?epoch=abcdefgh&since=0_0",
        "?epoch=abcdefgh&since=%2B0",
        "?epoch=abcdefgh&since=%200",
        "?epoch=abcdefgh&since=" + "9" * 5000,
    ],
)
async def test_changes_bad_params_are_400(server: RunningServer, query: str) -> None:
    """§10.4: /changes with missing or malformed parameters is 400 invalid."""
    async with http_session() as http:
        await patch(http, server, "h-400", 1, [0, ["n"], 1])
        status, _, body = await get(http, f"{server.http_url}/rooms/h-400/changes{query}")
        assert status == 400 and body["code"] == "invalid"


# --- POST /actions and /clients ---------------------------------------------------------------


async def test_post_action_exactly_once(server: RunningServer) -> None:
    """§6.7, §10.5: POST /actions answers {seq}; the same aid again answers {seq: null} and changes
    nothing.
    """
    async with http_session() as http:
        body = {"client": "p", "aid": 1, "name": "patch", "args": [[0, ["a"], 1]]}
        assert await post_action(http, server, "h-post", body) == (200, {"seq": 1})
        assert await post_action(http, server, "h-post", body) == (200, {"seq": None})
        lower = {**body, "aid": 0}
        status, _ = await post_action(http, server, "h-post", lower)
        assert status == 400
        noop = {**body, "aid": 2, "args": []}
        assert await post_action(http, server, "h-post", noop) == (200, {"seq": 1})
        _, _, state = await get(http, f"{server.http_url}/rooms/h-post/state")
        assert state["seq"] == 1 and state["state"] == {"a": 1}
        _, _, client = await get(http, f"{server.http_url}/rooms/h-post/clients/p")
        assert client == {"client": "p", "acked": 2}
        _, _, other = await get(http, f"{server.http_url}/rooms/h-post/clients/nobody")
        assert other == {"client": "nobody", "acked": 0}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"client": "p", "aid": 1, "name": "patch", "args": [[1, ["missing"]]]}, "invalid"),
        ({"client": "p", "aid": 1, "name": "patch", "args": [[0, ["k"] * 65, 1]]}, "too_large"),
        ({"client": "p", "aid": 1, "name": "explode", "args": None}, "unknown_action"),
        ({"aid": 1, "name": "patch", "args": []}, "invalid"),
        ({"client": "", "aid": 1, "name": "patch", "args": []}, "invalid"),
        ({"client": "p", "aid": "1", "name": "patch", "args": []}, "invalid"),
        ({"client": "p", "aid": True, "name": "patch", "args": []}, "invalid"),
        ({"client": "p", "aid": 1, "name": 5, "args": []}, "invalid"),
        ([1, 2], "invalid"),
        ("not json", "invalid"),
        ('{"client": "p", "aid": 1' + "0" * 5000 + "}", "invalid"),  # past int()'s digit limit
    ],
)
async def test_post_action_errors(server: RunningServer, body: Any, code: str) -> None:
    """§10.5, §10.9: A bad action body or a rejected action answers 4xx with a JSON {code,
    message} body.
    """
    async with http_session() as http:
        status, answer = await post_action(http, server, "h-post-err", body)
        assert status == {"invalid": 400, "unknown_action": 400, "too_large": 413}[code]
        assert answer["code"] == code and isinstance(answer["message"], str)


async def test_client_id_that_is_not_utf8_is_400_and_the_room_serves_on(tmp_path: Path) -> None:
    """§10.5: A client id with a lone surrogate (JSON "\\ud800") is 400; it never reaches
    the store.
    """
    async with (
        running_server(store=f"sqlite:{tmp_path / 'x.db'}") as server,
        http_session() as http,
    ):
        bad = r'{"client": "\ud800", "aid": 1, "name": "patch", "args": []}'
        status, answer = await post_action(http, server, "h-utf8", bad)
        assert status == 400 and answer["code"] == "invalid"
        good = {"client": "ok", "aid": 1, "name": "patch", "args": [[0, ["a"], 1]]}
        assert await post_action(http, server, "h-utf8", good) == (200, {"seq": 1})


async def test_value_that_is_not_utf8_is_invalid_not_a_room_failure(server: RunningServer) -> None:
    """§10.5: A patch value with a lone surrogate (JSON "\\ud800") is 400 invalid for that
    reason.
    """
    async with http_session() as http:
        bad = r'{"client": "u", "aid": 1, "name": "patch", "args": [[0, ["a"], "\ud800"]]}'
        status, answer = await post_action(http, server, "h-utf8-value", bad)
        assert status == 400 and answer["code"] == "invalid"
        assert "UTF-8" in answer["message"], answer


async def test_rejected_http_action_counts_as_processed(server: RunningServer) -> None:
    """§6.7: A rejected aid is processed: re-posting it answers {seq: null}, and acked moves."""
    async with http_session() as http:
        bad = {"client": "r", "aid": 4, "name": "patch", "args": [[1, ["missing"]]]}
        status, _ = await post_action(http, server, "h-rej", bad)
        assert status == 400
        assert await post_action(http, server, "h-rej", bad) == (200, {"seq": None})
        _, _, client = await get(http, f"{server.http_url}/rooms/h-rej/clients/r")
        assert client["acked"] == 4


async def test_http_and_websocket_share_exactly_once(server: RunningServer) -> None:
    """§10.5: An aid processed over HTTP is a duplicate over WebSocket for the same client."""
    async with http_session() as http:
        await patch(http, server, "h-mixed", 1, [0, ["a"], 1])
    async with joined(server, "h-mixed", client="h") as (c, welcome):
        assert welcome["acked"] == 1
        await c.send([4, 1, "patch", [[0, ["a"], 2]]])
        assert await c.recv() == [7, 1, None]


# --- /healthz and /metrics --------------------------------------------------------------------


async def test_healthz_and_metrics(server: RunningServer) -> None:
    """§10.8: /healthz is 200; /metrics is Prometheus text with statecast_ metrics."""
    async with http_session() as http:
        await patch(http, server, "h-metrics", 1, [0, ["a"], 1])
        status, _, health = await get(http, f"{server.http_url}/healthz")
        assert status == 200 and health["status"] == "ok"
        async with http.get(f"{server.http_url}/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
        for name in ("statecast_actions_total", "statecast_diffs_total", "statecast_rooms"):
            assert f"\n{name}" in text, name
        assert 'statecast_actions_total{outcome="applied"} 1.0' in text


async def test_changes_are_paged() -> None:
    """§10.4: /changes returns at most a page; 'to' names the last seq included, to
    continue from.
    """
    async with running_server(action_rate=0) as server:
        async with joined(server, "h-pages", client="bulk") as (c, welcome):
            await c.send(*([4, aid, "patch", [[0, ["n"], aid]]] for aid in range(1, 1206)))
            while (await c.recv())[:2] != [7, 1205]:
                pass
        async with http_session() as http:
            base = f"{server.http_url}/rooms/h-pages/changes?epoch={welcome['epoch']}"
            seen: list[int] = []
            since = 0
            while since < 1205:
                status, _, body = await get(http, f"{base}&since={since}")
                assert status == 200 and body["from"] == since + 1
                page = [change["seq"] for change in body["changes"]]
                assert page and page[-1] == body["to"]
                seen.extend(page)
                since = body["to"]
            assert seen == list(range(1, 1206))


async def test_an_action_posted_as_anything_but_json_is_refused(server: RunningServer) -> None:
    """A page on another origin can POST text/plain (or a form) without a CORS preflight;
    a POST action must say application/json, or it is 415 and nothing is applied."""
    body = '{"client": "x", "aid": 1, "name": "patch", "args": [[0, ["pwned"], 1]]}'
    async with http_session() as http:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            async with http.post(
                f"{server.http_url}/rooms/h-ctype/actions", data=body.encode(), headers=headers
            ) as r:
                answer = await r.json()
                assert r.status == 415 and "application/json" in answer["message"]
        assert "h-ctype" not in server.app.rooms.rooms
