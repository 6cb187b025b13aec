"""The SQLite store: a log of diffs per room, periodic checkpoints, group commit.

Layout: ``rooms`` holds each room's epoch and checkpoint (encoded state at
``checkpoint_seq``), ``diffs`` the log of encoded DIFFs, ``acked`` each client's
last processed aid, ``answers`` each client's last handler answer and the aid it
answered. An appended batch writes its diffs, its clients' aids and answers in
one transaction, so after a crash a diff and the aid that produced it survive
or vanish together.

Group commit: every write (append, create, checkpoint) goes into one queue. A
single writer takes everything queued as one transaction and commits once;
whatever arrives while that commit is syncing rides in the next. Rooms that
append concurrently therefore share a commit (and its fsync), and an idle
server pays no added delay. If a grouped transaction fails, each write in it is
retried alone, so one room's failure does not fail its neighbours.

Settings (see the durability notes in the docs):

* ``journal_mode=WAL``: a commit appends to the write-ahead log, one fsync.
* ``synchronous=FULL`` when ACK means durable (``--durability ack``): the WAL is
  synced at every commit, so an acknowledged action survives power loss, not
  just a process crash. ``NORMAL`` with ``--durability async``: a crash of the
  process loses nothing committed; a power loss may lose the last commits,
  which that mode has already traded away.
* ``locking_mode=EXCLUSIVE``: the first write takes the lock and keeps it, so
  a second server on the same file fails at start instead of interleaving
  histories; the OS releases it when the process dies, even by ``kill -9``.

Epochs: with ``--durability async`` the server publishes diffs before they are
committed, so a crash can lose diffs that clients saw. The store records, while
open, that such a run is in progress; if it finds that mark at the next start
(the run never closed cleanly), every room goes on from its stored head as seq 0
of a new epoch, so no ``(epoch, seq)`` can name two different states. (A failed write in that mode,
with the server still running, is handled by the room manager the same way.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import structlog

from statecast.server.epoch import fold, new_epoch
from statecast.server.store.base import RoomRecord, RoomSummary, StoredChange, StoreUsage

log = structlog.get_logger()

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rooms (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    epoch TEXT NOT NULL,
    type_name TEXT NOT NULL,
    checkpoint_seq INTEGER NOT NULL,
    checkpoint_state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS diffs (
    room INTEGER NOT NULL REFERENCES rooms (id),
    seq INTEGER NOT NULL,
    diff BLOB NOT NULL,
    PRIMARY KEY (room, seq)
);
CREATE TABLE IF NOT EXISTS acked (
    room INTEGER NOT NULL REFERENCES rooms (id),
    client TEXT NOT NULL,
    aid INTEGER NOT NULL,
    PRIMARY KEY (room, client)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS answers (
    room INTEGER NOT NULL REFERENCES rooms (id),
    client TEXT NOT NULL,
    aid INTEGER NOT NULL,
    answer BLOB NOT NULL,
    PRIMARY KEY (room, client)
) WITHOUT ROWID;
"""

_UPSERT_ANSWER = (
    "INSERT INTO answers (room, client, aid, answer) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (room, client) DO UPDATE SET aid = excluded.aid, answer = excluded.answer"
)

_UPSERT_ACKED = (
    "INSERT INTO acked (room, client, aid) VALUES (?, ?, ?) "
    "ON CONFLICT (room, client) DO UPDATE SET aid = excluded.aid"
)

_SUMMARY = (
    "SELECT r.name, r.type_name, r.epoch, "
    "max(r.checkpoint_seq, coalesce((SELECT max(seq) FROM diffs WHERE room = r.id), 0)) "
    "FROM rooms r "
)

Db = aiosqlite.Connection


async def _restart_epochs(db: Db) -> int:
    """Every room goes on from its stored head as seq 0 of a new epoch (acked kept)."""
    rooms = list(
        await db.execute_fetchall("SELECT id, checkpoint_seq, checkpoint_state FROM rooms")
    )
    for room_id, checkpoint_seq, state in rooms:
        diffs = await db.execute_fetchall(
            "SELECT seq, diff FROM diffs WHERE room = ? AND seq > ? ORDER BY seq",
            (room_id, checkpoint_seq),
        )
        await db.execute(
            "UPDATE rooms SET epoch = ?, checkpoint_seq = 0, checkpoint_state = ? WHERE id = ?",
            (new_epoch(), fold(bytes(state), [(s, bytes(d)) for s, d in diffs]), room_id),
        )
        await db.execute("DELETE FROM diffs WHERE room = ?", (room_id,))
    return len(rooms)


@dataclass(slots=True)
class _Write:
    """One queued write: an append's rows, or another statement sequence (``run``)."""

    room: str
    done: asyncio.Future[None]
    diffs: list[tuple[int, bytes]] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)
    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    run: Callable[[Db], Awaitable[None]] | None = None


class SQLiteStore:
    durable = True

    def __init__(
        self,
        path: str,
        *,
        durability: str = "ack",
        retain_diffs: int = 10_000,
        busy_timeout: float = 5.0,
        group_commit: bool = True,
    ) -> None:
        """``retain_diffs``: log entries kept at or below a checkpoint, for replay after restart.

        ``busy_timeout``: seconds to wait for a file another process holds.
        ``group_commit=False`` commits every write alone (to measure what grouping buys).
        """
        self.group_commit = group_commit
        self.path = path
        self.busy_timeout = busy_timeout
        self.durability = durability
        self.retain_diffs = retain_diffs
        self.synchronous = "FULL" if durability == "ack" else "NORMAL"
        self.commits = 0
        self._db: Db | None = None
        self._ids: dict[str, int] = {}
        self._queue: list[_Write] = []
        self._writer: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        db = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
        try:
            await db.execute("PRAGMA locking_mode = EXCLUSIVE")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {self.synchronous}")
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    await db.execute(statement)
            version = await _scalar(db, "SELECT value FROM meta WHERE key = 'schema'")
            if version is None:
                await db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif version != SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: schema {version}, this server reads {SCHEMA_VERSION}"
                )
            previous = await _scalar(db, "SELECT value FROM meta WHERE key = 'running'")
            if previous == "async":
                rows = await _restart_epochs(db)
                log.warning(
                    "the last run published ahead of its commits and did not stop cleanly: "
                    "every room starts a new epoch",
                    rooms=rows,
                )
            elif previous is not None:
                log.info("recovering after an unclean stop", store=self.path)
            await db.execute(
                "INSERT INTO meta VALUES ('running', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (self.durability,),
            )
            await db.execute("COMMIT")
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        db = self._db
        if db is None:
            return
        if self._writer is not None:
            await asyncio.shield(self._writer)
        self._db = None
        try:
            await db.execute("DELETE FROM meta WHERE key = 'running'")
        finally:
            await db.close()

    async def abandon(self) -> None:
        """Drop the connection as a crash would: no flush, no clean-stop mark (fault drills)."""
        db, self._db = self._db, None
        if self._writer is not None:
            self._writer.cancel()
        if db is not None:
            await db.close()

    # --- reads ---------------------------------------------------------------------------

    async def rooms(self) -> list[str]:
        rows = await self._conn().execute_fetchall("SELECT name FROM rooms ORDER BY name")
        return [row[0] for row in rows]

    async def list_rooms(self, after: str | None, limit: int) -> list[RoomSummary]:
        # The UNIQUE index on name serves the range; the diffs primary key the head.
        rows = await self._conn().execute_fetchall(
            _SUMMARY + "WHERE r.name > ? ORDER BY r.name LIMIT ?",
            ("" if after is None else after, limit),
        )
        return [RoomSummary(*row) for row in rows]

    async def usage(self) -> StoreUsage:
        """Rooms counted on the name index; bytes as the file's pages in use (the WAL,
        emptied at each checkpoint of SQLite's, aside)."""
        db = self._conn()
        rooms = await _scalar(db, "SELECT count(*) FROM rooms", ())
        pages = await _scalar(db, "PRAGMA page_count", ())
        free = await _scalar(db, "PRAGMA freelist_count", ())
        size = await _scalar(db, "PRAGMA page_size", ())
        return StoreUsage(int(rooms or 0), (int(pages or 0) - int(free or 0)) * int(size or 0))

    async def room_summary(self, room: str) -> RoomSummary | None:
        rows = list(await self._conn().execute_fetchall(_SUMMARY + "WHERE r.name = ?", (room,)))
        return RoomSummary(*rows[0]) if rows else None

    async def load(self, room: str) -> RoomRecord | None:
        db = self._conn()
        rows = list(
            await db.execute_fetchall(
                "SELECT id, epoch, type_name, checkpoint_seq, checkpoint_state "
                "FROM rooms WHERE name = ?",
                (room,),
            )
        )
        if not rows:
            return None
        room_id, epoch, type_name, checkpoint_seq, state = rows[0]
        self._ids[room] = room_id
        acked = await db.execute_fetchall(
            "SELECT client, aid FROM acked WHERE room = ?", (room_id,)
        )
        diffs = await db.execute_fetchall(
            "SELECT seq, diff FROM diffs WHERE room = ? AND seq > ? ORDER BY seq",
            (room_id, checkpoint_seq),
        )
        answers = await db.execute_fetchall(
            "SELECT client, aid, answer FROM answers WHERE room = ?", (room_id,)
        )
        return RoomRecord(
            epoch=epoch,
            type_name=type_name,
            checkpoint_seq=checkpoint_seq,
            checkpoint_state=bytes(state),
            acked={client: aid for client, aid in acked},
            diffs=[(seq, bytes(diff)) for seq, diff in diffs],
            answers={client: (aid, bytes(answer)) for client, aid, answer in answers},
        )

    async def diffs_after(self, room: str, seq: int) -> list[tuple[int, bytes]]:
        rows = await self._conn().execute_fetchall(
            "SELECT d.seq, d.diff FROM diffs d JOIN rooms r ON r.id = d.room "
            "WHERE r.name = ? AND d.seq > ? ORDER BY d.seq",
            (room, seq),
        )
        return [(s, bytes(d)) for s, d in rows]

    # --- writes --------------------------------------------------------------------------

    async def create(self, room: str, record: RoomRecord) -> None:
        async def run(db: Db) -> None:
            old = await _scalar(db, "SELECT id FROM rooms WHERE name = ?", (room,))
            if old is not None:
                await db.execute("DELETE FROM diffs WHERE room = ?", (old,))
                await db.execute("DELETE FROM acked WHERE room = ?", (old,))
                await db.execute("DELETE FROM answers WHERE room = ?", (old,))
                await db.execute("DELETE FROM rooms WHERE id = ?", (old,))
            cursor = await db.execute(
                "INSERT INTO rooms (name, epoch, type_name, checkpoint_seq, checkpoint_state) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    room,
                    record.epoch,
                    record.type_name,
                    record.checkpoint_seq,
                    record.checkpoint_state,
                ),
            )
            room_id = cursor.lastrowid
            assert room_id is not None
            self._ids[room] = room_id
            await db.executemany(
                "INSERT INTO acked (room, client, aid) VALUES (?, ?, ?)",
                [(room_id, c, a) for c, a in record.acked.items()],
            )
            await db.executemany(
                "INSERT INTO diffs (room, seq, diff) VALUES (?, ?, ?)",
                [(room_id, s, d) for s, d in record.diffs],
            )
            await db.executemany(
                "INSERT INTO answers (room, client, aid, answer) VALUES (?, ?, ?, ?)",
                [(room_id, c, a, ans) for c, (a, ans) in record.answers.items()],
            )

        self._ids.pop(room, None)
        await self._submit(room, run=run)

    async def append(self, room: str, changes: Sequence[StoredChange]) -> None:
        if room not in self._ids:
            await self._room_id(room)
        write = _Write(room, asyncio.get_running_loop().create_future())
        for change in changes:
            if change.diff is not None:
                write.diffs.append((change.seq, change.diff))
            if change.client is not None:
                write.acked[change.client] = change.aid
                if change.answer is not None:
                    write.answers[change.client] = (change.aid, change.answer)
        await self._enqueue(write)

    async def checkpoint(self, room: str, seq: int, state: bytes, acked: dict[str, int]) -> None:
        room_id = await self._room_id(room)
        retain_above = seq - self.retain_diffs

        async def run(db: Db) -> None:
            await db.execute(
                "UPDATE rooms SET checkpoint_seq = ?, checkpoint_state = ? WHERE id = ?",
                (seq, state, room_id),
            )
            await db.execute("DELETE FROM acked WHERE room = ?", (room_id,))
            await db.executemany(
                "INSERT INTO acked (room, client, aid) VALUES (?, ?, ?)",
                [(room_id, c, a) for c, a in acked.items()],
            )
            await db.execute(
                "DELETE FROM diffs WHERE room = ? AND seq <= ?", (room_id, retain_above)
            )

        await self._submit(room, run=run)

    # --- the writer ----------------------------------------------------------------------

    def _conn(self) -> Db:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    async def _room_id(self, room: str) -> int:
        room_id = self._ids.get(room)
        if room_id is None:
            room_id = await _scalar(self._conn(), "SELECT id FROM rooms WHERE name = ?", (room,))
            if room_id is None:
                raise KeyError(room)
            self._ids[room] = room_id
        return int(room_id)

    async def _submit(self, room: str, run: Callable[[Db], Awaitable[None]]) -> None:
        write = _Write(room, asyncio.get_running_loop().create_future(), run=run)
        await self._enqueue(write)

    async def _enqueue(self, write: _Write) -> None:
        self._conn()
        self._queue.append(write)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="sqlite writer")
        await write.done

    async def _write_all(self) -> None:
        """Commit whatever is queued, one transaction per round, until the queue is empty."""
        db = self._conn()
        while self._queue:
            if self.group_commit:
                group, self._queue = self._queue, []
            else:
                group, self._queue = self._queue[:1], self._queue[1:]
            try:
                await self._transaction(db, group)
            except Exception as exc:
                if len(group) == 1:
                    _settle(group, exc)
                    continue
                log.warning(
                    "grouped commit failed: retrying its writes one by one", writes=len(group)
                )
                for write in group:
                    try:
                        await self._transaction(db, [write])
                    except Exception as exc:
                        _settle([write], exc)
                    else:
                        _settle([write], None)
            else:
                _settle(group, None)

    async def _transaction(self, db: Db, group: list[_Write]) -> None:
        await db.execute("BEGIN IMMEDIATE")
        try:
            rows = _Rows()
            for write in group:
                if write.run is not None:
                    await rows.flush(db)
                    await write.run(db)
                    continue
                room_id = self._ids[write.room]
                rows.diffs.extend((room_id, s, d) for s, d in write.diffs)
                rows.acked.extend((room_id, c, a) for c, a in write.acked.items())
                rows.answers.extend(
                    (room_id, c, a, answer) for c, (a, answer) in write.answers.items()
                )
            await rows.flush(db)
            await db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await db.execute("ROLLBACK")
            raise
        self.commits += 1


@dataclass(slots=True)
class _Rows:
    """Appended rows of a transaction, written by one executemany per table."""

    diffs: list[tuple[int, int, bytes]] = field(default_factory=list)
    acked: list[tuple[int, str, int]] = field(default_factory=list)
    answers: list[tuple[int, str, int, bytes]] = field(default_factory=list)

    async def flush(self, db: Db) -> None:
        if self.diffs:
            await db.executemany("INSERT INTO diffs (room, seq, diff) VALUES (?, ?, ?)", self.diffs)
            self.diffs.clear()
        if self.acked:
            await db.executemany(_UPSERT_ACKED, self.acked)
            self.acked.clear()
        if self.answers:
            await db.executemany(_UPSERT_ANSWER, self.answers)
            self.answers.clear()


def _settle(group: list[_Write], exc: BaseException | None) -> None:
    for write in group:
        if write.done.done():
            continue
        if exc is None:
            write.done.set_result(None)
        else:
            write.done.set_exception(exc)


async def _scalar(db: Db, sql: str, params: tuple[Any, ...] = ()) -> Any:
    rows = list(await db.execute_fetchall(sql, params))
    return rows[0][0] if rows else None
