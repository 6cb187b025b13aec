"""Storage backends, chosen by URL: ``memory``, ``sqlite:PATH`` (later ``redis://...``)."""

from __future__ import annotations

from server.store.base import RoomRecord, Store, StoredChange


def open_store(url: str) -> Store:
    """The store a ``--store`` value names; backends are imported only when used."""
    if url == "memory":
        from server.store.memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite:"):
        from server.store.sqlite import SQLiteStore  # type: ignore[import-not-found]

        store: Store = SQLiteStore(url.removeprefix("sqlite:"))
        return store
    raise ValueError(f"unknown store {url!r}: use 'memory' or 'sqlite:PATH'")


__all__ = ["RoomRecord", "Store", "StoredChange", "open_store"]
