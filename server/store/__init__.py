"""Storage backends, chosen by URL: ``memory``, ``sqlite:PATH``, ``redis://`` or ``rediss://``."""

from __future__ import annotations

from statecast.server.store.base import RoomRecord, Store, StoredChange


def open_store(
    url: str, *, durability: str = "ack", retain_diffs: int = 10_000, wait_replicas: int = 0
) -> Store:
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
    if url.startswith(("redis://", "rediss://")):
        from statecast.server.store.redis import RedisStore

        return RedisStore(url, retain_diffs=retain_diffs, wait_replicas=wait_replicas)
    raise ValueError(
        f"unknown store {url!r}: use 'memory', 'sqlite:PATH' or 'redis://HOST:PORT/DB'"
    )


__all__ = ["RoomRecord", "Store", "StoredChange", "open_store"]
