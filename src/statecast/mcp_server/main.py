"""The MCP server of ``statecast mcp``, on the official SDK's low-level :class:`Server`.

The tools are made at run time from the room's type (statecast.mcp_server.tools), which
is why this is the low-level server and not the decorator-based one. Both MCP eras are
served: a 2025 host subscribes to the state resource with ``resources/subscribe`` and
gets ``notifications/resources/updated`` on its session; a 2026-07-28 host opens a
``subscriptions/listen`` stream, fed through the SDK's subscription bus.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sqlite3
import sys
import uuid
from typing import Any
from urllib.parse import urlsplit

import mcp_types as types
import structlog
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPError

from statecast.mcp_server.cli import default_http_url, parse_view
from statecast.mcp_server.keystore import KeyStore
from statecast.mcp_server.seat import Seat, SeatConfig, SeatError
from statecast.mcp_server.tools import READERS, ActionTool, action_tools, check_arguments
from statecast.server.registry import load_room_class
from statecast.server.room import Room

log = structlog.get_logger("statecast.mcp")

INSTRUCTIONS = """\
You have a seat in a statecast room: a shared state that changes only through the room's
actions. Each action is a tool; its answer says the seq (the state's version) after it.
Read the state with get_state (or the state resource); later, changes_since(seq) tells
what changed while you were away, and wait_for_change waits for the next change.
If an action tool answers that it is pending, or the host retries a call, call it again
with the same key: it takes effect once and answers the first call's outcome."""


def state_uri(config: SeatConfig) -> str:
    return f"statecast://{urlsplit(config.url).netloc}/rooms/{config.room}/state"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def ok(result: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=_json(result))], structured_content=result
    )


def failed(code: str, message: str, **details: Any) -> types.CallToolResult:
    error = {"code": code, "message": message, **details}
    return types.CallToolResult(
        content=[types.TextContent(text=f"{code}: {message}")],
        structured_content={"error": error},
        is_error=True,
    )


class _Server(Server[Any]):
    """The SDK's server, telling a 2025 host at initialize, on every transport, that the
    tool list may change (once the room's actions are known, if the statecast server was
    unreachable at first)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


class SeatServer:
    """The MCP side of one seat: tools, the state resource and its notifications."""

    def __init__(self, seat: Seat) -> None:
        self.seat = seat
        self.uri = state_uri(seat.config)
        self.bus = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.bus)
        #: 2025-era connections subscribed to the state resource, by connection (the
        #: latest request's session object of each: it sends on the connection's channel).
        self.subscribers: dict[str, ServerSession] = {}
        self._actions: dict[str, ActionTool] | None = None
        #: Connections given the tools before the room's actions were known: told of the
        #: change once they are (2025 era; a 2026 host hears it on its listen stream).
        self.listed_early: dict[str, ServerSession] = {}
        self._changed = asyncio.Event()
        seat.on_change.append(self._changed.set)
        self.server = _Server(
            "statecast",
            version=_version(),
            title=f"statecast room {seat.config.room}",
            instructions=INSTRUCTIONS,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_read_resource=self.read_resource,
            on_subscribe_resource=self.subscribe,
            on_unsubscribe_resource=self.unsubscribe,
            on_subscriptions_listen=self.listen,
        )

    # --- tools --------------------------------------------------------------------------

    async def actions(self) -> dict[str, ActionTool]:
        """The room's action tools, made once from its type (SeatError while unreachable)."""
        if self._actions is None:
            info = await self.seat.info()
            room_type: type[Room] | None = None
            try:
                room_type = load_room_class(str(info["type"]))
            except ValueError as exc:
                log.warning("mcp_room_type_not_importable", type=info["type"], error=str(exc))
            tools = action_tools(room_type, list(info.get("actions", [])))
            self._actions = {tool.name: tool for tool in tools}
            await self._tools_changed()
        return self._actions

    async def _tools_changed(self) -> None:
        early, self.listed_early = self.listed_early, {}
        for connection, session in early.items():
            try:
                await session.send_tool_list_changed()
            except Exception as exc:  # a connection that has gone
                log.debug("mcp_connection_gone", connection=connection, error=repr(exc))
        await self.bus.publish(ToolsListChanged())

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        tools = [
            types.Tool(
                name=name,
                description=description,
                input_schema=schema,
                annotations=types.ToolAnnotations(read_only_hint=True),
            )
            for name, description, schema in READERS
        ]
        try:
            actions = await self.actions()
        except SeatError as exc:
            # The readers stay listed: each answers why the room cannot be reached.
            log.warning("mcp_actions_unknown", error=exc.message)
            self.listed_early[connection_id(ctx) or f"call:{uuid.uuid4()}"] = ctx.session
            actions = {}
        tools += [
            types.Tool(
                name=tool.name,
                description=tool.description,
                input_schema=tool.input_schema,
                annotations=types.ToolAnnotations(read_only_hint=False, idempotent_hint=False),
            )
            for tool in actions.values()
        ]
        return types.ListToolsResult(tools=tools)

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        arguments = dict(params.arguments or {})
        try:
            return ok(await self._call(ctx, params.name, arguments))
        except SeatError as exc:
            return failed(exc.code, exc.message, **exc.details)
        except ValueError as exc:
            return failed("invalid", f"{exc}: see the tool's input schema")
        except Exception as exc:  # a bug or a value the wire cannot carry: still a tool error
            log.exception("mcp_tool_failed", tool=params.name)
            return failed("internal", f"{params.name} failed: {type(exc).__name__}: {exc}")

    async def _call(
        self, ctx: ServerRequestContext[Any], name: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        for reader, _, schema in READERS:
            if name == reader:
                check_arguments(schema, arguments)
                return await self._read(name, arguments)
        tool = (await self.actions()).get(name)
        if tool is None:
            known = ", ".join([r[0] for r in READERS] + sorted(await self.actions()))
            raise SeatError("unknown_tool", f"no tool {name!r} here; the tools are {known}")
        args = tool.args(arguments)
        key = arguments.get("key") or implicit_key(ctx)
        return await self.seat.act(key, tool.action, args)

    async def _read(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        seat = self.seat
        if name == "get_state":
            return await seat.state(arguments.get("path"))
        if name == "changes_since":
            return await seat.changes_since(arguments["seq"])
        if name == "wait_for_change":
            timeout = float(arguments.get("timeout", 25))
            return await seat.wait_for_change(arguments["seq"], arguments.get("path"), timeout)
        info = await seat.info()
        actions = await self.actions()
        info["tools"] = {tool.name: tool.action for tool in actions.values()}
        info["you"] = seat.config.client
        return info

    # --- the state resource -------------------------------------------------------------

    async def list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        resource = types.Resource(
            uri=self.uri,
            name=f"{self.seat.config.room} state",
            description="The room's state as JSON, with its seq; subscribe to be told of changes.",
            mime_type="application/json",
        )
        return types.ListResourcesResult(resources=[resource])

    def _check_uri(self, uri: str) -> None:
        if uri != self.uri:
            raise MCPError(types.INVALID_PARAMS, f"no resource {uri!r}; this seat has {self.uri}")

    async def read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        self._check_uri(str(params.uri))
        try:
            state = await self.seat.state()
        except SeatError as exc:
            raise MCPError(types.INTERNAL_ERROR, f"{exc.code}: {exc.message}") from None
        contents = types.TextResourceContents(
            uri=self.uri,
            mime_type="application/json",
            text=_json(state),
            _meta={"statecast/seq": state["seq"], "statecast/epoch": state["epoch"]},
        )
        return types.ReadResourceResult(contents=[contents])

    async def subscribe(
        self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        self._check_uri(str(params.uri))
        self.subscribers[connection_id(ctx) or f"call:{uuid.uuid4()}"] = ctx.session
        with contextlib.suppress(SeatError):  # notifications start once it connects
            await self.seat.room()
        return types.EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        self._check_uri(str(params.uri))
        self.subscribers.pop(connection_id(ctx) or "", None)
        return types.EmptyResult()

    async def notify_changes(self) -> None:
        """Tell subscribers the state changed; changes during a round of sends coalesce
        into the next round (the resource is read whole anyway)."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            for connection, session in list(self.subscribers.items()):
                try:
                    await session.send_resource_updated(self.uri)
                except Exception as exc:  # a connection that has gone: forget it
                    log.debug("mcp_subscriber_gone", connection=connection, error=repr(exc))
                    self.subscribers.pop(connection, None)
            await self.bus.publish(ResourceUpdated(uri=self.uri))


def connection_id(ctx: ServerRequestContext[Any]) -> str | None:
    """Which MCP connection a request came on: stdio's one connection, or its Streamable
    HTTP session; None for a 2026-07-28 request over HTTP, which has no connection."""
    if ctx.request is None:
        return "stdio"
    headers = getattr(ctx.request, "headers", None)
    session = headers.get("mcp-session-id") if headers is not None else None
    return f"http:{session}" if session else None


def implicit_key(ctx: ServerRequestContext[Any]) -> str:
    """A call's key when the model gave none: its MCP request id, on its connection.

    A request without a connection to scope its id (every client numbers its own) gets
    a key of its own: only an explicit key dedupes it."""
    connection = connection_id(ctx)
    if connection is None:
        return f"call:{uuid.uuid4()}"
    return f"request:{connection}:{ctx.request_id}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("statecast")
    except PackageNotFoundError:
        return "0"


def seat_config(args: argparse.Namespace) -> SeatConfig:
    return SeatConfig(
        url=args.url,
        room=args.room,
        client=args.client,
        http_url=args.http_url or default_http_url(args.url),
        token=args.token,
        role=args.role,
        keys_file=args.keys,
        connect_timeout=args.connect_timeout,
        call_timeout=args.call_timeout,
        view=parse_view(args.view),
    )


async def serve(args: argparse.Namespace) -> None:
    seat = Seat(seat_config(args))
    app = SeatServer(seat)
    notifier = asyncio.create_task(app.notify_changes())
    connecting = asyncio.create_task(_keep_connecting(app))
    try:
        if args.http is None:
            log.info("mcp_serving", transport="stdio", room=args.room, client=args.client)
            async with stdio_server() as (read_stream, write_stream):
                await app.server.run(
                    read_stream, write_stream, app.server.create_initialization_options()
                )
        else:
            await _serve_http(app, args.http_host, args.http)
    finally:
        app.listen.close()
        notifier.cancel()
        connecting.cancel()
        await seat.close()


#: Refusals only the operator can lift: no point in trying again by itself.
FINAL = frozenset({"closed_4001", "closed_4003", "closed_4004", "taken_over"})


async def _keep_connecting(app: SeatServer) -> None:
    """Connect now and learn the room's actions, so that the first tool call finds the
    seat ready; while the statecast server is unreachable, keep trying, and tell the
    hosts that listed the tools without the actions once they are known."""
    while True:
        try:
            await app.actions()
            return
        except SeatError as exc:
            if exc.code in FINAL:
                return  # each tool answers why
        await asyncio.sleep(1.0)


async def _serve_http(app: SeatServer, host: str, port: int) -> None:
    import uvicorn

    starlette = app.server.streamable_http_app(host=host)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(starlette, log_config=None, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    log.info(
        "mcp_serving",
        transport="streamable-http",
        url=f"http://{host}:{bound}/mcp",
        port=bound,
        room=app.seat.config.room,
        client=app.seat.config.client,
    )
    await server.serve(sockets=[sock])


def run(args: argparse.Namespace) -> int:
    from statecast.server.logging import configure_logging

    configure_logging(args.log_level)
    if args.keys is not None:
        try:  # here, so that a bad --keys is one line and exit 2, not a traceback
            KeyStore(args.keys, args.room, args.client).close()
        except (sqlite3.Error, OSError) as exc:
            sys.stderr.write(f"statecast mcp: --keys {args.keys}: {exc}\n")
            return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0
