"""Idempotency keys: a retried tool call answers the first call's outcome.

MCP has no exactly-once: a host that timed out, or whose connection dropped, may send
the same tool call again. Each action call carries a key (the caller's ``key``
argument, else one made from the MCP request id) and the ledger maps it to the one
statecast action it started. That action has an aid in the statecast client
(protocol/client.py), which re-sends it with that aid after every reconnect, so the
server applies it at most once; a retry with the same key never starts a second one,
it waits for the first one's outcome (or reads it, if it is known).

The ledger lives in the ``statecast mcp`` process, as the client's aids do: it covers
retries over any number of MCP connections to that process (Streamable HTTP keeps one
process for every session), and it is bounded (:data:`MAX_KEYS`, oldest settled
entries dropped first). ``--keys`` writes the keys down too
(statecast.mcp_server.keystore), for retries in a later process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

#: Keys remembered at most; the oldest settled ones go first.
MAX_KEYS: Final = 10_000


class KeyReused(Exception):
    """The key names another call (another action or other arguments)."""

    def __init__(self, key: str, first: str) -> None:
        super().__init__(
            f"key {key!r} was already used for another call ({first}): a retry must repeat "
            "the same action with the same arguments; use a new key for a new call"
        )


def fingerprint(name: str, args: Any) -> str:
    """The call a key stands for, compared on retry (canonical JSON of name and args)."""
    return json.dumps([name, args], sort_keys=True, separators=(",", ":"), default=repr)


@dataclass
class Entry:
    fingerprint: str
    task: asyncio.Task[Any]


class Ledger:
    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def start(
        self, key: str, name: str, args: Any, perform: Callable[[], Awaitable[Any]]
    ) -> tuple[asyncio.Task[Any], bool]:
        """The task that carries the call under ``key``, and whether it is a retry.

        A new key starts ``perform()`` in a task of its own, so a caller that gives up
        waiting (a timeout, a dropped MCP connection) does not cancel the action.
        """
        print_ = fingerprint(name, args)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fingerprint != print_:
                raise KeyReused(key, describe(entry.fingerprint))
            self._entries.move_to_end(key)
            return entry.task, True
        task = asyncio.ensure_future(perform())
        task.add_done_callback(_consume)
        self._entries[key] = Entry(print_, task)
        self._trim()
        return task, False

    def forget(self, key: str, task: asyncio.Task[Any]) -> None:
        """Free ``key`` (if it still carries ``task``): its action was refused without
        effect for a passing reason, so a retry may try it again."""
        entry = self._entries.get(key)
        if entry is not None and entry.task is task:
            del self._entries[key]

    def _trim(self) -> None:
        while len(self._entries) > self.max_keys:
            for key, entry in self._entries.items():
                if entry.task.done():
                    del self._entries[key]
                    break
            else:
                return  # every entry is still in flight: keep them all

    def cancel_all(self) -> None:
        for entry in self._entries.values():
            entry.task.cancel()


def _consume(task: asyncio.Task[Any]) -> None:
    """Mark the task's exception as retrieved: it is read by whoever asks for the key,
    and a key never asked for again must not log 'exception was never retrieved'."""
    if not task.cancelled():
        with contextlib.suppress(BaseException):
            task.exception()


def describe(print_: str) -> str:
    name, args = json.loads(print_)
    text = json.dumps(args)
    return f"{name} with {text if len(text) <= 200 else text[:200] + '...'}"
