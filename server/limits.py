"""Action rate limiting: a token bucket, with strikes for clients that ignore refusals."""

from __future__ import annotations

import time
from typing import Final

import structlog

from statecast.protocol.errors import RateLimitExceeded

log = structlog.get_logger()

#: File descriptors kept for everything but WebSocket connections: the store,
#: HTTP connections, listening sockets, logs.
FD_RESERVE: Final = 1024

#: Strikes fade over this many seconds: a client is closed when it is refused
#: more than ``strikes`` times in about this long, or keeps being refused faster
#: than ``strikes`` per this long.
STRIKE_WINDOW: Final = 1.0


class TokenBucket:
    """``rate`` actions per second, bursts up to ``burst`` (``rate`` <= 0: unlimited).

    :meth:`check` refuses an action over the limit (the caller answers ERROR
    ``rate_limited``) and counts a strike; strikes fade at ``strikes`` per
    :data:`STRIKE_WINDOW`, so a client refused a few times now and then is only
    told so, while one that keeps sending into a full bucket reaches
    ``strikes`` and is closed with 4029. An accepted action does not clear the
    strikes: a client sending at twice the rate is refused every other time and
    would otherwise never be closed. ``strikes`` <= 0 never closes.
    """

    __slots__ = ("_stamp", "_strikes", "_tokens", "burst", "rate", "strikes")

    def __init__(self, rate: float, burst: int, strikes: int) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.strikes = strikes
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._strikes = 0.0

    def take(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are (no strikes: for HTTP, which answers 429).

        A cost above the burst is allowed once the bucket is full (so one large item
        is never refused forever), leaving it in debt."""
        if self.rate <= 0:
            return True
        now = time.monotonic()
        elapsed = now - self._stamp
        self._stamp = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        if self.strikes > 0:
            self._strikes = max(0.0, self._strikes - elapsed * self.strikes / STRIKE_WINDOW)
        if self._tokens >= min(cost, self.burst):
            self._tokens -= cost
            return True
        return False

    def full(self) -> bool:
        """Whether the bucket has refilled to its burst (its owner is idle)."""
        elapsed = time.monotonic() - self._stamp
        return self.rate <= 0 or self._tokens + elapsed * self.rate >= self.burst

    def check(self) -> str | None:
        """None if the action may go ahead, else why not; raises after too many refusals."""
        if self.take():
            return None
        if self.strikes > 0:
            self._strikes += 1.0
            if self._strikes >= self.strikes:
                raise RateLimitExceeded("rate limit exceeded repeatedly")
        return f"over {self.rate:g} actions/s"


def raise_open_file_limit(connections: int) -> int:
    """Raise the soft open-file limit to the hard one; return the soft limit now in force.

    Many systems start processes with a soft limit of 1,024 descriptors, so a
    room with a thousand spectators would fail in ``accept()`` long before
    ``--max-connections``. The hard limit is the administrator's; when it is
    below what ``connections`` needs, say so at start.
    """
    try:
        import resource
    except ImportError:  # not a Unix: nothing to raise
        return connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, connections + FD_RESERVE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < connections + FD_RESERVE:
        log.warning(
            "the open-file limit is below --max-connections: raise ulimit -n (hard limit)",
            limit=soft,
            max_connections=connections,
        )
    return soft
