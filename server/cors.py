"""CORS on the HTTP side, so that a page on another origin can poll ``/state`` (aiohttp-cors).

Off unless ``--cors-origins`` names origins. When on, every route answers
preflights (``OPTIONS``) and cross-origin requests from those origins: a page
may send ``Authorization`` (a bearer token), ``If-None-Match`` (to poll with
ETags) and ``Content-Type`` (to POST a JSON action), and may read ``ETag`` and
``WWW-Authenticate`` in the answers. No credentials mode: statecast reads
tokens from ``Authorization``, never from cookies. Every answer carries
``Vary: Origin``, since whether it may be read depends on the asking origin.
"""

from __future__ import annotations

import re

import aiohttp_cors
from aiohttp import web

#: Request headers a page may send: a bearer token, a conditional poll, a JSON body.
ALLOW_HEADERS = ("Authorization", "Content-Type", "If-None-Match")
#: Response headers a page may read beyond the CORS-safelisted ones.
EXPOSE_HEADERS = ("ETag", "WWW-Authenticate")
#: Seconds a browser may cache a preflight answer.
MAX_AGE = 600

_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s,]+")


def parse_origins(text: str) -> list[str]:
    """``*`` or a comma-separated list of origins (scheme://host[:port], no path)."""
    origins = [o.strip() for o in text.split(",") if o.strip()]
    if origins == ["*"]:
        return origins
    for origin in origins:
        if origin == "*":
            raise ValueError("cors_origins: * stands alone, not in a list")
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(
                f"cors_origins: {origin!r} is not an origin such as https://app.example:8443 "
                "(lowercase scheme and host, no path or trailing slash)"
            )
    return origins


def enable_cors(app: web.Application, origins: list[str]) -> None:
    """Answer CORS on every route of ``app``: call it once all routes are added."""
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,
        expose_headers=EXPOSE_HEADERS,
        allow_headers=ALLOW_HEADERS,
        max_age=MAX_AGE,
    )
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(origins, options))
    for route in list(app.router.routes()):
        cors.add(route)
    app.on_response_prepare.append(_vary_origin)


async def _vary_origin(request: web.Request, response: web.StreamResponse) -> None:
    vary = response.headers.get("Vary")
    if vary is None:
        response.headers["Vary"] = "Origin"
    elif "origin" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Origin"
