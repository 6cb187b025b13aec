"""CORS (--cors-origins): a page on another origin polls /state with ETags, on a real server."""

from __future__ import annotations

import pytest

from statecast.server.config import Config, load_config
from tests.helpers import http_session, running_server
from tests.server.test_http_api import get, patch

PAGE = "http://app.example:3000"


def preflight(method: str, headers: str) -> dict[str, str]:
    return {
        "Origin": PAGE,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_preflight_then_cross_origin_polling_reads_the_etag() -> None:
    async with (
        running_server(cors_origins=f"https://other.example,{PAGE}") as server,
        http_session() as http,
    ):
        await patch(http, server, "cors", 1, [0, ["a"], 1])
        url = f"{server.http_url}/rooms/cors/state"
        # The preflight a browser sends before a GET with a token and If-None-Match.
        async with http.options(url, headers=preflight("GET", "authorization,if-none-match")) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == PAGE
            allowed = {
                h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")
            }
            assert allowed == {"authorization", "if-none-match"}
            assert "GET" in r.headers["Access-Control-Allow-Methods"]
            assert "Access-Control-Allow-Credentials" not in r.headers
        # The GET itself: the page may read the body and the ETag.
        status, headers, body = await get(http, url, {"Origin": PAGE})
        assert (status, body["state"]) == (200, {"a": 1})
        assert headers["Access-Control-Allow-Origin"] == PAGE
        assert "ETag" in headers["Access-Control-Expose-Headers"].split(",")
        assert "Origin" in headers["Vary"]
        # The next poll is a 304, which the page must be allowed to see too.
        status, headers, _ = await get(
            http, url, {"Origin": PAGE, "If-None-Match": headers["ETag"]}
        )
        assert (status, headers["Access-Control-Allow-Origin"]) == (304, PAGE)
        # Errors are readable too, so the page can show {"code", "message"}.
        status, headers, body = await get(
            http, f"{server.http_url}/rooms/nope/state", {"Origin": PAGE}
        )
        assert (status, body["code"]) == (404, "no_such_room")
        assert headers["Access-Control-Allow-Origin"] == PAGE
        # A JSON action from the page: its preflight allows Content-Type on POST.
        actions = f"{server.http_url}/rooms/cors/actions"
        async with http.options(actions, headers=preflight("POST", "content-type")) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == PAGE


async def test_other_origins_are_refused_and_cors_is_off_by_default() -> None:
    async with running_server(cors_origins=PAGE) as server, http_session() as http:
        await patch(http, server, "cors", 1, [0, ["a"], 1])
        url = f"{server.http_url}/rooms/cors/state"
        stranger = {**preflight("GET", "if-none-match"), "Origin": "https://evil.example"}
        async with http.options(url, headers=stranger) as r:
            assert r.status == 403
            assert (await r.json())["code"] == "forbidden"
            assert "Access-Control-Allow-Origin" not in r.headers
        status, headers, _ = await get(http, url, {"Origin": "https://evil.example"})
        assert status == 200 and "Access-Control-Allow-Origin" not in headers
        for method, asked in (("GET", "x-custom"), ("DELETE", "")):
            async with http.options(url, headers=preflight(method, asked)) as r:
                assert r.status == 403, (method, asked)
    async with running_server() as server, http_session() as http:
        await patch(http, server, "cors", 1, [0, ["a"], 1])
        url = f"{server.http_url}/rooms/cors/state"
        async with http.options(url, headers=preflight("GET", "if-none-match")) as r:
            assert r.status == 405
            assert "Access-Control-Allow-Origin" not in r.headers
        status, headers, _ = await get(http, url, {"Origin": PAGE})
        assert status == 200 and "Access-Control-Allow-Origin" not in headers


async def test_any_origin() -> None:
    async with running_server(cors_origins="*") as server, http_session() as http:
        url = f"{server.http_url}/healthz"
        async with http.options(url, headers=preflight("GET", "authorization")) as r:
            assert (r.status, r.headers["Access-Control-Allow-Origin"]) == (200, PAGE)
        status, headers, _ = await get(http, url, {"Origin": "https://any.example"})
        assert (status, headers["Access-Control-Allow-Origin"]) == (200, "https://any.example")


def test_cors_origins_setting() -> None:
    env = {"STATECAST_CORS_ORIGINS": "https://a.example, http://localhost:8080"}
    assert load_config(environ=env).cors_origins == env["STATECAST_CORS_ORIGINS"]
    assert Config().cors_origins == ""
    for bad in ("https://a.example/", "a.example", "*,https://a.example", "HTTPS://A.example"):
        with pytest.raises(ValueError, match="cors_origins"):
            Config(cors_origins=bad)
