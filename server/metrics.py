"""Prometheus metrics, on a registry of the app's own (several apps may share a process)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "statecast_connections", "Open WebSocket connections", ["role"], registry=r
        )
        self.rooms = Gauge("statecast_rooms", "Rooms held in memory", registry=r)
        #: Which process answered (a worker of --workers); here, not in /healthz, since
        #: /metrics is the part an operator keeps private.
        Gauge("statecast_process_id", "The id of the process serving", registry=r).set(os.getpid())
        self.actions = Counter("statecast_actions", "Actions processed", ["outcome"], registry=r)
        self.diffs = Counter("statecast_diffs", "Diffs produced", registry=r)
        self.bytes_sent = Counter(
            "statecast_ws_bytes_sent", "WebSocket payload bytes written to subscribers", registry=r
        )
        self.frames_sent = Counter(
            "statecast_ws_frames_sent", "WebSocket frames written to subscribers", registry=r
        )
        self.resumes = Counter(
            "statecast_syncs", "Joins and resyncs by sync kind", ["sync"], registry=r
        )
        self.slow_skips = Counter(
            "statecast_slow_subscriber_skips", "Subscribers skipped ahead by SNAPSHOT", registry=r
        )
        self.closes = Counter(
            "statecast_closes", "Connections closed by code", ["code"], registry=r
        )
        self.fanout_latency = Histogram(
            "statecast_action_to_fanout_seconds",
            "From an action's arrival to its diff being written to every subscriber",
            buckets=(
                0.0001,
                0.00025,
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                1,
            ),
            registry=r,
        )
        self.http_requests = Counter(
            "statecast_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.quota_refusals = Counter(
            "statecast_quota_refusals",
            "Requests refused by a per-identity quota or the store's bounds",
            ["quota"],
            registry=r,
        )
        self.store_bytes = Gauge(
            "statecast_store_bytes",
            "Bytes the store holds (as the store measures them)",
            registry=r,
        )
        self.store_rooms = Gauge("statecast_store_rooms", "Rooms the store holds", registry=r)
        self.commit_seconds = Histogram(
            "statecast_store_commit_seconds", "Store commit time per batch", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
