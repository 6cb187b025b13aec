"""The agent's seat in one room: one statecast client connection, and the HTTP side.

Everything the tools do goes through :class:`Seat`, which knows nothing of MCP. It
holds the shipped client (protocol/client.py: resume, aids, exactly-once) and connects
it on first use, so ``statecast mcp`` starts (and a host lists its tools) even while
the statecast server is down; a tool then answers why it cannot reach the room, and the
next call tries again. Failures are :class:`SeatError` with a message for the model
that says what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from statecast.mcp_server.keystore import KeyStore, Stored
from statecast.mcp_server.ledger import KeyReused, Ledger, describe, fingerprint
from statecast.protocol import ops
from statecast.protocol.client import Changed, RoomClient, StateReplaced
from statecast.protocol.errors import (
    AnswerLost,
    ClientIdTakenOver,
    ConnectFailed,
    Rejection,
    ServerClosed,
    StatecastError,
)
from statecast.protocol.messages import Role

log = structlog.get_logger("statecast.mcp")

#: A path into the state: map keys and list indexes from the root.
StatePath = list[str | int]

#: What a close code at the start of a connection means for the agent's operator.
CLOSE_ADVICE = {
    4001: "the statecast server refused the token (missing, malformed, badly signed or "
    "expired): give statecast mcp a valid one with --token",
    4003: "the token does not allow this room in this role (--role): mint one that grants it",
    4004: "the room does not exist and the server does not create rooms on join: check "
    "--room, or create the room first",
    4009: "another connection took over this agent's client id: give each agent its own --client",
}


#: Refusals that say "not now" rather than "no": nothing was applied, and a retry under
#: the same key runs the action again instead of answering the refusal again.
PASSING_REFUSALS = frozenset({"rate_limited", "unavailable"})


class SeatError(Exception):
    """Why a tool cannot answer: ``code`` for programs, the message for the model."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class SeatConfig:
    url: str
    room: str
    client: str
    http_url: str
    token: str | None = None
    role: Role = "agent"
    connect_timeout: float = 10.0
    call_timeout: float = 30.0
    #: Where keys outlive the process (--keys), if anywhere.
    keys_file: str | None = None
    #: The part of the room the seat sees (--view; None: all it may see).
    view: list[list[str]] | None = None

    @property
    def room_url(self) -> str:
        return f"{self.url.rstrip('/')}/rooms/{quote(self.room, safe='')}"

    @property
    def room_http(self) -> str:
        return f"{self.http_url.rstrip('/')}/rooms/{quote(self.room, safe='')}"


def closed_advice(exc: BaseException, config: SeatConfig) -> SeatError:
    """A connection failure as a SeatError naming the cause and the fix."""
    if isinstance(exc, ClientIdTakenOver):
        return SeatError("taken_over", CLOSE_ADVICE[4009], client=config.client)
    if isinstance(exc, ServerClosed):
        advice = CLOSE_ADVICE.get(exc.code)
        reason = f" ({exc.reason})" if exc.reason else ""
        if advice is not None:
            return SeatError(f"closed_{exc.code}", f"{advice}{reason}", close_code=exc.code)
        return SeatError(
            "closed",
            f"the statecast server at {config.url} ended the connection with {exc.code}{reason}",
            close_code=exc.code,
        )
    if isinstance(exc, ConnectFailed):
        return SeatError(
            "unreachable",
            f"cannot reach the statecast server at {config.room_url}: {exc}. Check that it "
            "runs and that --url points at it; the next call tries again",
        )
    return SeatError("unreachable", f"cannot reach the statecast server: {exc}")


def touches(op_path: list[Any], path: StatePath) -> bool:
    """Whether an op at ``op_path`` can change what lies at ``path`` (one is a prefix
    of the other)."""
    n = min(len(op_path), len(path))
    return list(op_path[:n]) == list(path[:n])


def readable_ops(wire_ops: list[Any]) -> list[dict[str, Any]]:
    """Net-change ops as the model reads them: each path with its new value, or removed."""
    out: list[dict[str, Any]] = []
    for op in wire_ops:
        if op[0] == ops.DEL:
            out.append({"path": op[1], "removed": True})
        elif op[0] == ops.INS:
            out.append({"path": op[1], "inserted": op[2]})
        else:
            out.append({"path": op[1], "value": op[2]})
    return out


class Seat:
    def __init__(self, config: SeatConfig) -> None:
        self.config = config
        self.ledger = Ledger()
        #: Keys written down for later processes (--keys), or None.
        self.keys: KeyStore | None = None
        if config.keys_file is not None:
            self.keys = KeyStore(config.keys_file, config.room, config.client)
        self._client: RoomClient | None = None
        #: WELCOME's ``acked`` when this process first joined: what an earlier process
        #: sent under a saved key was processed iff its aid is at or below it (a later
        #: ``acked`` counts this process's own actions, which reuse those aids).
        self._acked0: int | None = None
        #: The highest seq a tool answered: with a view the copy's seq may stay below it.
        self._answered = 0
        #: Why the last connection attempt failed (its SeatError code), if it did.
        self._failing: str | None = None
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self._watch: asyncio.Task[None] | None = None
        #: Called (synchronously) whenever the room's state moved on.
        self.on_change: list[Callable[[], None]] = []

    # --- the connection -----------------------------------------------------------------

    async def room(self) -> RoomClient:
        """The live client, connected now if it is not (or no longer) connected."""
        client = self._client
        if client is not None and client.status != "closed":
            return client
        async with self._lock:
            client = self._client
            if client is not None and client.status != "closed":
                return client
            client = RoomClient(
                self.config.room_url,
                role=self.config.role,
                client=self.config.client,
                token=self.config.token,
                connect_timeout=self.config.connect_timeout,
                open_timeout=self.config.connect_timeout,
                view=self.config.view,
            )
            try:
                await client.start()
            except (StatecastError, OSError) as exc:
                error = closed_advice(exc, self.config)
                # The seat keeps trying while the server is away: a warning when the
                # reason changes, the repeats at debug.
                report = log.warning if error.code != self._failing else log.debug
                report("statecast_connect_failed", url=self.config.room_url, error=str(exc))
                self._failing = error.code
                raise error from None
            self._failing = None
            if self._acked0 is None:
                self._acked0 = client.sync.acked
                if self.keys is not None:  # before this process numbers any action
                    self.keys.unsent_above(self._acked0)
            log.info(
                "statecast_connected",
                url=self.config.room_url,
                client=self.config.client,
                seq=client.seq,
            )
            self._client = client
            if self._watch is not None:
                self._watch.cancel()
            self._watch = asyncio.create_task(self._watch_changes(client))
            return client

    async def _watch_changes(self, client: RoomClient) -> None:
        with contextlib.suppress(StatecastError, OSError):
            async for event in client.changes():
                if isinstance(event, (Changed, StateReplaced)):
                    for callback in self.on_change:
                        callback()

    async def close(self) -> None:
        self.ledger.cancel_all()
        if self._watch is not None:
            self._watch.cancel()
        if self._client is not None:
            await self._client.close()
        if self._http is not None:
            await self._http.close()
        if self.keys is not None:
            self.keys.close()

    # --- reading ------------------------------------------------------------------------

    async def state(self, path: StatePath | None = None) -> dict[str, Any]:
        client = await self.room()
        # Read with no await between: the value and the seq belong together.
        value: Any = client.state
        for seg in path or []:
            in_map = isinstance(value, dict) and isinstance(seg, str) and seg in value
            in_list = isinstance(value, list) and type(seg) is int and 0 <= seg < len(value)
            if in_map or in_list:
                value = value[seg]
            else:
                raise SeatError(
                    "no_such_path",
                    f"nothing at {path!r} in the room's state (at seq {client.seq}): "
                    "call get_state without a path to see what is there",
                    seq=client.seq,
                )
        if not path:  # as GET /rooms/{room}/state answers it
            return {"epoch": client.epoch, "seq": client.seq, "state": value}
        return {"epoch": client.epoch, "seq": client.seq, "path": path, "value": value}

    async def _get(self, url: str, params: dict[str, str] | None = None) -> Any:
        return await self._request("GET", url, params=params)

    async def _post(self, url: str, body: dict[str, Any]) -> Any:
        return await self._request("POST", url, json=body)

    async def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        """A request to the server's HTTP side, with the token; its JSON body, or a
        SeatError with the server's error code and message."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.connect_timeout)
            )
        headers = {"Authorization": f"Bearer {self.config.token}"} if self.config.token else {}
        try:
            async with self._http.request(method, url, headers=headers, **kwargs) as response:
                body = await response.json(content_type=None)
                if response.status >= 400:
                    error = body if isinstance(body, dict) else {}
                    raise SeatError(
                        str(error.get("code") or response.status),
                        str(error.get("message") or f"HTTP {response.status}"),
                        status=response.status,
                    )
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SeatError(
                "unreachable",
                f"cannot reach the statecast server's HTTP side at {self.config.http_url} "
                f"({type(exc).__name__}: {exc}): give statecast mcp the right --http-url",
            ) from None

    async def info(self) -> dict[str, Any]:
        """The room type, its actions, who is present and the seq (GET /rooms/{room})."""
        await self.room()  # an agent's join creates the room, as any agent's does
        body: dict[str, Any] = await self._get(self.config.room_http)
        return body

    async def changes_since(self, since: int) -> dict[str, Any]:
        """The net change since ``since``: each touched path with its value now, or removed."""
        client = await self.room()
        if since > max(client.seq, self._answered):
            raise SeatError(
                "ahead",
                f"seq {since} is ahead of the room's (the agent has seen {client.seq}): "
                "pass a seq a tool answered",
                seq=client.seq,
            )
        query = {"epoch": client.epoch or "", "since": str(since), "compact": "1"}
        if self.config.view is not None:
            query["view"] = json.dumps(self.config.view)  # the seat's part's net change
        try:
            body = await self._get(f"{self.config.room_http}/changes", query)
        except SeatError as exc:
            if exc.details.get("status") == 410:
                raise SeatError(
                    "gone",
                    f"the changes since seq {since} are no longer kept (or the room was "
                    "reset): call get_state for the whole state and its seq",
                ) from None
            raise
        return {
            "since": since,
            "seq": body["to"],
            "changes": readable_ops(body["ops"]),
        }

    async def wait_for_change(
        self, since: int, path: StatePath | None, timeout: float
    ) -> dict[str, Any]:
        """Return once the state (under ``path``) differs from what it was at ``since``,
        with the net change; or, after ``timeout`` seconds, ``changed: false``."""
        client = await self.room()
        if since > max(client.seq, self._answered):
            raise SeatError(
                "ahead",
                f"seq {since} is ahead of the room's (the agent has seen {client.seq}): "
                "pass a seq a tool answered",
                seq=client.seq,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        events = client.changes()  # before the first look: nothing slips in between
        try:
            while True:
                if client.seq > since:
                    result = await self.changes_since(since)
                    if path:
                        changes = result["changes"]
                        result["changes"] = [c for c in changes if touches(c["path"], path)]
                    if result["changes"]:
                        return {"changed": True, **result}
                while True:
                    left = deadline - loop.time()
                    if left <= 0:
                        return {"changed": False, "since": since, "seq": client.seq, "changes": []}
                    try:
                        event = await asyncio.wait_for(anext(events), left)
                    except TimeoutError:
                        continue
                    except (StopAsyncIteration, StatecastError) as exc:
                        raise closed_advice(exc, self.config) from None
                    if isinstance(event, StateReplaced):
                        break
                    if isinstance(event, Changed) and (
                        not path or any(touches(op[1], path) for op in event.ops)
                    ):
                        break
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    # --- acting -------------------------------------------------------------------------

    async def act(self, key: str, name: str, args: Any) -> dict[str, Any]:
        """Run action ``name`` once under ``key``: its seq and answer, or a SeatError.

        Only keys the model gave are written down (--keys): a key made from an MCP
        request id means nothing to a later process, whose host numbers its requests
        from 1 again."""
        print_ = fingerprint(name, args)
        stored = None
        keys = self.keys if not key.startswith(IMPLICIT_KEY_PREFIXES) else None
        if keys is not None and key not in self.ledger:
            stored = keys.get(key)  # from an earlier process of this seat
            if stored is not None:
                if stored.fingerprint != print_:
                    first = str(KeyReused(key, describe(stored.fingerprint)))
                    raise SeatError("key_reused", first, key=key)
                if stored.outcome is not None:
                    return _replay(stored.outcome, key)
        try:
            task, retry = self.ledger.start(
                key, name, args, lambda: self._perform(key, print_, name, args, stored, keys)
            )
        except KeyReused as exc:
            raise SeatError("key_reused", str(exc), key=key) from None
        log.debug("mcp_action", key=key, action=name, retry=retry)
        try:
            result: dict[str, Any] = await asyncio.wait_for(
                asyncio.shield(task), self.config.call_timeout
            )
        except TimeoutError:
            client = self._client
            status = client.status if client is not None else "connecting"
            why = client.last_error if client is not None and status != "live" else ""
            raise SeatError(
                "pending",
                f"no outcome within {self.config.call_timeout:g} s ({status}"
                f"{': ' + why if why else ''}). The action is kept and sent when the connection "
                f"is back, and takes effect at most once: call {name} again with key {key!r} "
                "to get its outcome",
                key=key,
            ) from None
        except SeatError as exc:
            if exc.code in PASSING_REFUSALS or exc.details.get("unsent"):
                self.ledger.forget(key, task)  # nothing applied: a retry runs it
            details = {k: v for k, v in exc.details.items() if k != "unsent"}
            raise SeatError(exc.code, exc.message, **details, key=key) from None
        return {**result, "retried": True} if retry else result

    async def _perform(
        self,
        key: str,
        print_: str,
        name: str,
        args: Any,
        stored: Stored | None,
        keys: KeyStore | None,
    ) -> dict[str, Any]:
        """The action under ``key``, to its outcome (recorded in ``keys``, if given)."""
        try:
            client = await self.room()
        except SeatError as exc:
            exc.details["unsent"] = True
            raise
        earlier = stored.aid if stored is not None else None
        acked0 = self._acked0 if self._acked0 is not None else client.sync.acked
        if keys is not None and earlier is not None and earlier <= acked0:
            # Sent by an earlier process, and applied: settle it, never send it again.
            applied = await self._applied_earlier(key, earlier, name, args, client, acked0)
            keys.settled(key, applied)
            return applied

        def on_aid(aid: int) -> None:
            assert keys is not None
            try:
                keys.started(key, print_, aid)
            except sqlite3.Error as exc:
                log.warning("mcp_keys_unwritable", key=key, error=str(exc))

        try:
            acked = await client.perform(name, args, on_aid=on_aid if keys is not None else None)
        except Rejection as exc:
            if keys is not None:
                if exc.code in PASSING_REFUSALS:
                    keys.forget(key)
                else:
                    keys.settled(key, {"error": {"code": exc.code, "message": exc.message}})
            raise SeatError(exc.code, exc.message) from None
        except (StatecastError, OSError) as exc:
            error = closed_advice(exc, self.config)
            error.message += " (the action's outcome is unknown: read the state to see it)"
            raise error from None
        if acked.seq is not None and not client.sync.live:
            # A live copy holds the action's effect already (its DIFF came before its ACK,
            # §5.10; with a view, all of it the view shows). A copy waiting for a RESYNC's
            # answer gets it when that comes: what the model reads next includes it.
            with contextlib.suppress(StatecastError, TimeoutError):
                await asyncio.wait_for(client.wait_for_seq(acked.seq), self.config.call_timeout)
        seq = acked.seq if acked.seq is not None else client.seq
        self._answered = max(self._answered, seq)
        result: dict[str, Any] = {"key": key, "seq": seq}
        if not acked.answer_known:
            result["answer_lost"] = str(AnswerLost(acked.aid))
            result["outcome"] = PROCESSED_EARLIER
        elif acked.answer is not None:
            result["answer"] = acked.answer
        elif acked.seq is None:
            # Processed while the connection was away, and its outcome is not repeated
            # (§6.7): applied, or refused; the state tells which.
            result["outcome"] = PROCESSED_EARLIER
        if keys is not None:
            keys.settled(key, result)
        return result

    async def _applied_earlier(
        self, key: str, aid: int, name: str, args: Any, client: RoomClient, acked0: int
    ) -> dict[str, Any]:
        """The outcome of an action an earlier process sent as ``aid``, which the room
        processed: its answer is still kept if it is the client's last aid (sent again over
        HTTP, which applies nothing and answers it), else it is gone; without an answer it
        may have been applied or refused, and the result says so."""
        result: dict[str, Any] = {"key": key, "seq": client.seq, "retried": True}
        if aid < acked0 or aid < client.sync.acked:
            result["answer_lost"] = str(AnswerLost(aid))
            result["outcome"] = PROCESSED_EARLIER
            return result
        body = await self._post(
            f"{self.config.room_http}/actions",
            {"client": self.config.client, "aid": aid, "name": name, "args": args},
        )
        if "answer" in body:
            result["answer"] = body["answer"]
        else:
            result["outcome"] = PROCESSED_EARLIER
        return result


#: A key made from an MCP request id (main.implicit_key), never written down.
IMPLICIT_KEY_PREFIXES: tuple[str, ...] = ("request:", "call:")
#: The result of an action processed while the seat was away, whose outcome the room does
#: not repeat (docs/protocol.md §6.7).
PROCESSED_EARLIER = (
    "processed earlier, while the connection was away: applied or refused (the room does "
    "not repeat the outcome); read the state to see which"
)


def _replay(outcome: dict[str, Any], key: str) -> dict[str, Any]:
    """A recorded outcome, as a retry answers it."""
    error = outcome.get("error")
    if error is not None:
        raise SeatError(str(error["code"]), str(error["message"]), key=key, retried=True)
    return {**outcome, "retried": True}
