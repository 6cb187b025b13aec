"""Keys that outlive the ``statecast mcp`` process (``--keys FILE``, SQLite).

Over stdio the host's connection is the process: a host that restarts it and retries a
call would find an empty ledger. With ``--keys`` each key is written down with its
action's aid *before* the action is sent, and with its outcome once known. A retry in a
later process then answers the outcome if it was recorded; if the process ended first,
the room's record settles it: WELCOME's ``acked`` is the client's last processed aid, so
an aid above it was never applied (the action runs now), the aid equal to it was
applied and its answer is still kept (asked again over HTTP with that aid, which applies
nothing), and one below it was applied with its answer gone.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

#: Keys kept at most; the oldest go first.
MAX_KEYS: Final = 10_000


@dataclass(frozen=True)
class Stored:
    fingerprint: str
    aid: int | None
    #: The call's result, or ``{"error": {...}}``; None while unknown.
    outcome: dict[str, Any] | None


class KeyStore:
    def __init__(self, path: str, room: str, client: str, max_keys: int = MAX_KEYS) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)  # autocommit: each write lands
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS keys (room TEXT, client TEXT, key TEXT, "
            "fingerprint TEXT, aid INTEGER, outcome TEXT, PRIMARY KEY (room, client, key))"
        )
        self.scope = (room, client)
        self.max_keys = max_keys

    def get(self, key: str) -> Stored | None:
        row = self.db.execute(
            "SELECT fingerprint, aid, outcome FROM keys WHERE room=? AND client=? AND key=?",
            (*self.scope, key),
        ).fetchone()
        if row is None:
            return None
        return Stored(row[0], row[1], json.loads(row[2]) if row[2] is not None else None)

    def started(self, key: str, fingerprint: str, aid: int) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO keys VALUES (?, ?, ?, ?, ?, NULL)",
            (*self.scope, key, fingerprint, aid),
        )
        self.db.execute(
            "DELETE FROM keys WHERE rowid IN (SELECT rowid FROM keys ORDER BY rowid DESC "
            "LIMIT -1 OFFSET ?)",
            (self.max_keys,),
        )

    def unsent_above(self, acked: int) -> None:
        """Keys whose action an earlier process numbered above ``acked`` (the room's
        last processed aid when this process joined) were never processed: their aid is
        dropped, since this process numbers its own actions from ``acked + 1`` (a retry
        of such a key sends its action afresh)."""
        self.db.execute(
            "UPDATE keys SET aid=NULL WHERE room=? AND client=? AND outcome IS NULL AND aid > ?",
            (*self.scope, acked),
        )

    def settled(self, key: str, outcome: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE keys SET outcome=? WHERE room=? AND client=? AND key=?",
            (json.dumps(outcome), *self.scope, key),
        )

    def forget(self, key: str) -> None:
        self.db.execute("DELETE FROM keys WHERE room=? AND client=? AND key=?", (*self.scope, key))

    def close(self) -> None:
        self.db.close()
