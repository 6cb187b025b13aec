"""Storage backends, chosen by URL: ``memory``, ``sqlite:PATH`` (later ``redis://...``)."""

from __future__ import annotations

from statecast.server.store.base import RoomRecord, Store, StoredChange


def open_store(url: str, *, durability: str = "ack") -> Store:
    """The store a ``--store`` value names; backends are imported only when used.

    ``durability`` is the server's ``--durability``: a durable backend tunes its
    sync settings to it and, after an ``async`` run that did not stop cleanly,
    starts every room on a new epoch (diffs that clients saw may be lost).
    """
    if url == "memory":
        from statecast.server.store.memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite:"):
        from statecast.server.store.sqlite import SQLiteStore

        store: Store = SQLiteStore(url.removeprefix("sqlite:"), durability=durability)
        return store
    raise ValueError(f"unknown store {url!r}: use 'memory' or 'sqlite:PATH'")


__all__ = ["RoomRecord", "Store", "StoredChange", "open_store"]
