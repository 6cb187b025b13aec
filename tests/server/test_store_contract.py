"""The storage contract (server/store/base.py), run against every backend.

Each backend comes as a factory: calling it again gives a store over the same
data, as a restarted server would see it (the memory store's "restart" is the
same object: nothing survives its process, but the contract still holds).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgpack
import pytest

from statecast.protocol import codec
from statecast.server.store import Store, open_store
from statecast.server.store.base import (
    Fenced,
    RoomLost,
    RoomRecord,
    RoomSummary,
    StoredChange,
    StoreUnavailable,
)
from statecast.server.store.memory import MemoryStore
from statecast.server.store.redis import RedisStore
from statecast.server.store.sqlite import SQLiteStore
from tests.redis_server import RedisServer, free_port
from tests.serve_process import ServeProcess, serve_process

Factory = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """A way to (re)open one backend's data; every store it made is closed afterwards."""
    made: list[Store] = []
    memory = MemoryStore()
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    def make() -> Store:
        store: Store
        if request.param == "memory":
            store = memory
        elif request.param == "sqlite":
            store = SQLiteStore(str(tmp_path / "s.db"))
        else:
            store = RedisStore(redis_url)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
async def store(factory: Factory) -> Store:
    """An open store of each backend."""
    s = factory()
    await s.open()
    return s


def record(epoch: str = "epoch-0001", state: object = None) -> RoomRecord:
    return RoomRecord(
        epoch=epoch,
        type_name="statecast.server.rooms.document:DocumentRoom",
        checkpoint_seq=0,
        checkpoint_state=msgpack.packb(state if state is not None else {}),
    )


def diff(seq: int, value: int = 0) -> bytes:
    return codec.encode_diff(seq, [[0, ["k"], value]])


async def test_unknown_room_loads_as_none(store: Store) -> None:
    """A room never created loads as None and is not listed."""
    assert await store.load("nope") is None
    assert await store.rooms() == []
    assert await store.diffs_after("nope", 0) == []


async def test_create_then_load_returns_the_record(store: Store) -> None:
    """load returns exactly what create stored, and rooms lists it."""
    rec = record(state={"a": [1, 2]})
    rec.acked = {"c1": 3}
    rec.diffs = [(1, diff(1))]
    await store.create("r1", rec)
    loaded = await store.load("r1")
    assert loaded == rec
    assert loaded is not None and loaded.head == 1
    assert await store.rooms() == ["r1"]


async def test_append_records_diffs_and_acked_aids(store: Store) -> None:
    """Appended diffs come back in seq order with each client's last aid; rejections keep aids."""
    await store.create("r", record())
    await store.append(
        "r",
        [
            StoredChange(1, diff(1, 1), "a", 1),
            StoredChange(1, None, "b", 7),  # rejected: an aid without a diff
            StoredChange(2, diff(2, 2), "a", 2),
        ],
    )
    await store.append("r", [StoredChange(3, diff(3, 3), "b", 8)])
    loaded = await store.load("r")
    assert loaded is not None
    assert loaded.diffs == [(1, diff(1, 1)), (2, diff(2, 2)), (3, diff(3, 3))]
    assert loaded.acked == {"a": 2, "b": 8}
    assert loaded.head == 3


async def test_answers_are_kept_with_their_aid_through_checkpoints_and_reopening(
    factory: Factory,
) -> None:
    """A handler's answer is stored with the aid it answered, in the append that records
    the aid; a later answer replaces it, a checkpoint leaves it, a reopened store has it,
    and re-creating the room replaces the answers with the record's."""
    first = factory()
    await first.open()
    await first.create("r", record())
    await first.append(
        "r",
        [
            StoredChange(1, diff(1, 1), "a", 1, b"\xa2t1"),
            StoredChange(1, None, "b", 4, b"\x01"),
            StoredChange(2, diff(2, 2), "a", 2, b"\xa2t2"),
        ],
    )
    await first.append("r", [StoredChange(2, None, "b", 5)])  # rejected: no answer
    await first.checkpoint("r", 2, msgpack.packb({"k": 2}), {"a": 2, "b": 5})
    loaded = await first.load("r")
    assert loaded is not None
    # b's answer is for aid 4; its last aid is 5, so that answer no longer answers it.
    assert loaded.answers == {"a": (2, b"\xa2t2"), "b": (4, b"\x01")}
    assert loaded.acked == {"a": 2, "b": 5}
    await first.close()
    second = factory()
    await second.open()
    again = await second.load("r")
    assert again is not None and again.answers == loaded.answers
    await second.create("r", RoomRecord("epoch-0002", "t", 0, msgpack.packb({}), {"c": 1}))
    fresh = await second.load("r")
    assert fresh is not None and fresh.answers == {} and fresh.acked == {"c": 1}


async def test_diffs_after_serves_the_log_beyond_a_seq(store: Store) -> None:
    """diffs_after returns every logged diff above the seq, oldest first."""
    await store.create("r", record())
    await store.append("r", [StoredChange(s, diff(s, s), "a", s) for s in range(1, 6)])
    assert await store.diffs_after("r", 3) == [(4, diff(4, 4)), (5, diff(5, 5))]
    assert await store.diffs_after("r", 5) == []


async def test_checkpoint_replaces_the_base_of_load(store: Store) -> None:
    """After a checkpoint, load starts from it: its state and aids, then only later diffs."""
    await store.create("r", record())
    await store.append("r", [StoredChange(s, diff(s, s), "a", s) for s in range(1, 4)])
    await store.checkpoint("r", 3, msgpack.packb({"k": 3}), {"a": 3, "z": 1})
    await store.append("r", [StoredChange(4, diff(4, 4), "a", 4)])
    loaded = await store.load("r")
    assert loaded is not None
    assert loaded.checkpoint_seq == 3
    assert msgpack.unpackb(loaded.checkpoint_state) == {"k": 3}
    assert loaded.diffs == [(4, diff(4, 4))]
    assert loaded.acked == {"a": 4, "z": 1}
    assert loaded.head == 4


async def test_rooms_are_independent(store: Store) -> None:
    """Appends and checkpoints of one room leave another untouched."""
    await store.create("x", record("epoch-xxxx"))
    await store.create("y", record("epoch-yyyy"))
    await store.append("x", [StoredChange(1, diff(1), "a", 1)])
    await store.checkpoint("x", 1, msgpack.packb({"k": 0}), {"a": 1})
    y = await store.load("y")
    assert y is not None and y.epoch == "epoch-yyyy" and y.head == 0 and y.acked == {}
    assert await store.rooms() == ["x", "y"]


async def test_concurrent_appends_from_many_rooms_all_land(store: Store) -> None:
    """Rooms appending at the same moment each get all their changes, in order."""
    names = [f"room{i}" for i in range(20)]
    for name in names:
        await store.create(name, record())
    for seq in (1, 2, 3):
        await asyncio.gather(
            *(
                store.append(name, [StoredChange(seq, diff(seq, i), "a", seq)])
                for i, name in enumerate(names)
            )
        )
    for i, name in enumerate(names):
        loaded = await store.load(name)
        assert loaded is not None
        assert loaded.diffs == [(s, diff(s, i)) for s in (1, 2, 3)]
        assert loaded.acked == {"a": 3}


async def test_everything_survives_close_and_reopen(factory: Factory) -> None:
    """What was appended and checkpointed before close is loaded the same after reopening."""
    first = factory()
    await first.open()
    await first.create("r", record("epoch-keep"))
    await first.append("r", [StoredChange(1, diff(1, 1), "a", 1)])
    await first.checkpoint("r", 1, msgpack.packb({"k": 1}), {"a": 1})
    await first.append("r", [StoredChange(2, diff(2, 2), "a", 2), StoredChange(2, None, "b", 5)])
    before = await first.load("r")
    await first.close()
    second = factory()
    await second.open()
    after = await second.load("r")
    assert after == before
    assert after is not None and after.epoch == "epoch-keep" and after.head == 2


async def test_list_rooms_pages_in_name_order(store: Store) -> None:
    """list_rooms gives the rooms after a name, in name order, at most limit of them."""
    names = ["b", "a.1", "A", "c-2", "a", "Z_z", "0"]
    for i, name in enumerate(names):
        await store.create(name, record(f"epoch-{i:04d}"))
    ordered = sorted(names)
    assert [s.room for s in await store.list_rooms(None, 100)] == ordered
    assert [s.room for s in await store.list_rooms(None, 3)] == ordered[:3]
    assert [s.room for s in await store.list_rooms(ordered[2], 3)] == ordered[3:6]
    assert [s.room for s in await store.list_rooms("a", 2)] == ["a.1", "b"]  # after is exclusive
    assert [s.room for s in await store.list_rooms("aa", 100)] == ["b", "c-2"]  # not a room
    assert await store.list_rooms(ordered[-1], 10) == []
    walked: list[str] = []
    after = None
    while page := await store.list_rooms(after, 2):
        walked.extend(s.room for s in page)
        after = page[-1].room
    assert walked == ordered


async def test_list_rooms_reports_type_epoch_and_head(store: Store) -> None:
    """A row carries the stored type and epoch and the head: the last diff, else the checkpoint."""
    await store.create("r", record("epoch-rrrr"))
    await store.create("s", record("epoch-ssss"))
    await store.append("r", [StoredChange(s, diff(s, s), "a", s) for s in range(1, 4)])
    await store.checkpoint("r", 3, msgpack.packb({"k": 3}), {"a": 3})
    await store.append("r", [StoredChange(4, diff(4, 4), "a", 4)])
    await store.checkpoint("s", 0, msgpack.packb({}), {})
    type_name = "statecast.server.rooms.document:DocumentRoom"
    r = RoomSummary("r", type_name, "epoch-rrrr", 4)
    s = RoomSummary("s", type_name, "epoch-ssss", 0)
    assert await store.list_rooms(None, 10) == [r, s]
    assert await store.room_summary("r") == r
    assert await store.room_summary("s") == s
    assert await store.room_summary("t") is None


async def test_listing_neither_creates_nor_changes_rooms(store: Store) -> None:
    """Listing and summarising unknown names leave the store as it was."""
    await store.create("r", record())
    before = await store.load("r")
    assert await store.room_summary("nope") is None
    await store.list_rooms("nope", 10)
    assert await store.rooms() == ["r"]
    assert await store.load("r") == before
    assert await store.load("nope") is None


async def test_recreating_a_room_lists_it_once(store: Store) -> None:
    """create over an existing name (a new epoch) replaces its row, never adds a second."""
    await store.create("r", record("epoch-old1"))
    await store.create("r", record("epoch-new1"))
    assert [(s.room, s.epoch) for s in await store.list_rooms(None, 10)] == [("r", "epoch-new1")]


# --- SQLite specifics ----------------------------------------------------------------------


async def test_sqlite_groups_concurrent_rooms_into_one_commit(tmp_path: Path) -> None:
    """Appends from many rooms queued while a commit is pending share the next one."""
    store = SQLiteStore(str(tmp_path / "g.db"))
    await store.open()
    try:
        names = [f"g{i}" for i in range(30)]
        for name in names:
            await store.create(name, record())
        before = store.commits
        await asyncio.gather(*(store.append(n, [StoredChange(1, diff(1), "a", 1)]) for n in names))
        assert store.commits - before < len(names)
    finally:
        await store.close()


async def test_sqlite_refuses_a_reused_seq_and_keeps_the_batch_atomic(tmp_path: Path) -> None:
    """A batch that would log a seq twice fails whole: neither its diffs nor its aids land."""
    store = SQLiteStore(str(tmp_path / "a.db"))
    await store.open()
    try:
        await store.create("r", record())
        await store.append("r", [StoredChange(1, diff(1, 1), "a", 1)])
        with pytest.raises(sqlite3.IntegrityError):
            await store.append(
                "r", [StoredChange(2, diff(2, 2), "a", 2), StoredChange(1, diff(1, 9), "b", 1)]
            )
        loaded = await store.load("r")
        assert loaded is not None
        assert loaded.diffs == [(1, diff(1, 1))] and loaded.acked == {"a": 1}
    finally:
        await store.close()


async def test_sqlite_one_failing_room_does_not_fail_its_commit_neighbours(tmp_path: Path) -> None:
    """When a grouped commit fails for one room, the other rooms' appends still land."""
    store = SQLiteStore(str(tmp_path / "n.db"))
    await store.open()
    try:
        for name in ("good", "bad"):
            await store.create(name, record())
            await store.append(name, [StoredChange(1, diff(1), "a", 1)])
        results = await asyncio.gather(
            store.append("good", [StoredChange(2, diff(2), "a", 2)]),
            store.append("bad", [StoredChange(1, diff(1, 5), "a", 2)]),
            return_exceptions=True,
        )
        assert results[0] is None and isinstance(results[1], sqlite3.IntegrityError)
        good = await store.load("good")
        assert good is not None and good.head == 2
    finally:
        await store.close()


async def test_sqlite_keeps_a_log_tail_below_the_checkpoint(tmp_path: Path) -> None:
    """A checkpoint keeps the last retain_diffs entries so a restarted room can still replay."""
    store = SQLiteStore(str(tmp_path / "t.db"), retain_diffs=2)
    await store.open()
    try:
        await store.create("r", record())
        await store.append("r", [StoredChange(s, diff(s, s), "a", s) for s in range(1, 6)])
        await store.checkpoint("r", 5, msgpack.packb({"k": 5}), {"a": 5})
        assert [s for s, _ in await store.diffs_after("r", 0)] == [4, 5]
        loaded = await store.load("r")
        assert loaded is not None and loaded.diffs == [] and loaded.head == 5
    finally:
        await store.close()


async def test_sqlite_says_recovering_only_after_a_run_that_did_not_stop(tmp_path: Path) -> None:
    """A new file under folders that do not exist yet, and a cleanly stopped one, start
    quietly; only after kill -9 does the server say it recovers (real processes)."""
    store = f"--store=sqlite:{tmp_path / 'new' / 'folder' / 's.db'}"

    def recovering(server: ServeProcess) -> bool:
        return any("unclean stop" in str(line.get("event")) for line in server.log)

    async with serve_process(store, cwd=tmp_path) as first:
        assert not recovering(first)
        assert await first.stop(signal.SIGTERM) == 0
    async with serve_process(store, cwd=tmp_path) as second:
        assert not recovering(second)
        await second.stop(signal.SIGKILL)
    async with serve_process(store, cwd=tmp_path) as third:
        assert recovering(third)


async def test_sqlite_file_is_held_by_one_server(tmp_path: Path) -> None:
    """A second store on a file already open fails to open instead of mixing histories."""
    path = str(tmp_path / "x.db")
    first = SQLiteStore(path)
    await first.open()
    try:
        second = SQLiteStore(path, busy_timeout=0.05)
        with pytest.raises(sqlite3.OperationalError):
            await second.open()
    finally:
        await first.close()


async def test_sqlite_async_run_that_never_closed_starts_new_epochs(tmp_path: Path) -> None:
    """After an async-durability run that did not close, each room goes on from its stored
    head as seq 0 of a new epoch (acked kept, log emptied); after ack, nothing changes."""
    path = str(tmp_path / "e.db")
    for mode, rotated in (("ack", False), ("async", True)):
        crashed = open_store(f"sqlite:{path}", durability=mode)
        await crashed.open()
        await crashed.create(mode, record(f"epoch-{mode}", {"j": 1}))
        await crashed.append(mode, [StoredChange(1, diff(1, 5), "a", 1)])
        await crashed.append(mode, [StoredChange(2, diff(2, 7), "a", 2)])
        assert isinstance(crashed, SQLiteStore)
        await crashed.abandon()  # as if the process died: no clean-close mark
        reopened = open_store(f"sqlite:{path}")
        await reopened.open()
        loaded = await reopened.load(mode)
        after = await reopened.diffs_after(mode, 0)
        await reopened.close()
        assert loaded is not None and loaded.acked == {"a": 2}
        assert (loaded.epoch != f"epoch-{mode}") is rotated
        if rotated:
            assert (loaded.head, loaded.checkpoint_seq, loaded.diffs, after) == (0, 0, [], [])
            assert msgpack.unpackb(loaded.checkpoint_state) == {"j": 1, "k": 7}
        else:
            assert loaded.head == 2


# --- Redis specifics -----------------------------------------------------------------------


async def test_redis_refuses_a_stale_owners_write_inside_the_script(redis_url: str) -> None:
    """Once another node takes the lease, the old owner's append and checkpoint change nothing."""
    old, new = RedisStore(redis_url, node_id="old"), RedisStore(redis_url, node_id="new")
    await old.open()
    await new.open()
    try:
        assert await old.acquire("r", ttl=0.2) is not None
        await old.create("r", record())
        await old.append("r", [StoredChange(1, diff(1, 1), "a", 1)])
        assert await new.acquire("r", ttl=5) is None  # held: refused
        # The old lease expires (a paused owner): the new node takes it once Redis has let
        # it go, however long that takes on a loaded machine.
        for _ in range(500):
            if await new.acquire("r", ttl=5) is not None:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the old lease never expired")
        assert await new.load("r") is not None
        # Before the new owner writes anything, the old one's head is still right: only the
        # fencing token tells the two apart.
        with pytest.raises(Fenced, match="fenced by a newer lease"):
            await old.append("r", [StoredChange(2, diff(2, 7), "a", 2)])
        await new.append("r", [StoredChange(2, diff(2, 2), "b", 1)])
        with pytest.raises(Fenced):
            await old.append("r", [StoredChange(2, diff(2, 9), "a", 2)])
        with pytest.raises(Fenced):
            await old.checkpoint("r", 1, msgpack.packb({"k": 9}), {"a": 9})
        assert await old.renew(["r"], ttl=5) == {"r"}
        loaded = await new.load("r")
        assert loaded is not None
        assert loaded.diffs == [(1, diff(1, 1)), (2, diff(2, 2))]
        assert loaded.acked == {"a": 1, "b": 1}
    finally:
        await old.close()
        await new.close()


async def test_redis_refuses_an_append_that_does_not_follow_the_head(redis_url: str) -> None:
    """A writer whose idea of the head is stale cannot write a seq twice."""
    first, second = RedisStore(redis_url), RedisStore(redis_url)
    await first.open()
    await second.open()
    try:
        await first.create("r", record())
        assert await second.load("r") is not None
        await first.append("r", [StoredChange(1, diff(1, 1), "a", 1)])
        with pytest.raises(Fenced):
            await second.append("r", [StoredChange(1, diff(1, 7), "b", 1)])
        loaded = await first.load("r")
        assert loaded is not None and loaded.diffs == [(1, diff(1, 1))]
        assert loaded.acked == {"a": 1}
    finally:
        await first.close()
        await second.close()


async def test_redis_reports_lost_keys(redis_url: str, redis_server: RedisServer) -> None:
    """An append to a room whose keys Redis lost raises RoomLost and writes nothing."""
    store = RedisStore(redis_url)
    await store.open()
    try:
        await store.create("r", record())
        redis_server.flush()
        with pytest.raises(RoomLost):
            await store.append("r", [StoredChange(1, diff(1), "a", 1)])
        assert await store.load("r") is None
    finally:
        await store.close()


async def test_redis_trims_the_log_only_behind_the_checkpoint(redis_url: str) -> None:
    """A checkpoint trims entries older than retain_diffs below it, and nothing above it."""
    store = RedisStore(redis_url, retain_diffs=2)
    await store.open()
    try:
        await store.create("r", record())
        await store.append("r", [StoredChange(s, diff(s, s), "a", s) for s in range(1, 8)])
        await store.checkpoint("r", 5, msgpack.packb({"k": 5}), {"a": 5})
        assert [s for s, _ in await store.diffs_after("r", 0)] == [4, 5, 6, 7]
        loaded = await store.load("r")
        assert loaded is not None and [s for s, _ in loaded.diffs] == [6, 7]
        with pytest.raises(Fenced):  # a checkpoint ahead of the log is refused
            await store.checkpoint("r", 9, msgpack.packb({}), {})
    finally:
        await store.close()


async def test_redis_unreachable_is_reported_not_hung(redis_url: str) -> None:
    """Against a port nothing listens on, a write fails with StoreUnavailable within seconds."""
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    await store.open()
    try:
        async with asyncio.timeout(5):
            with pytest.raises(StoreUnavailable):
                await store.create("r", record())
    finally:
        await store.close()
