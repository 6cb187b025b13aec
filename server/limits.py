"""Per-connection action rate limiting: a token bucket with strikes."""

from __future__ import annotations

import time

from protocol.errors import RateLimitExceeded


class TokenBucket:
    """``rate`` actions per second, bursts up to ``burst``.

    An action over the limit is refused with ERROR ``rate_limited``; after
    ``strikes`` refusals in a row (no accepted action between them) the
    connection is closed with 4029.
    """

    __slots__ = ("_refused", "_stamp", "_tokens", "burst", "rate", "strikes")

    def __init__(self, rate: float, burst: int, strikes: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.strikes = strikes
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._refused = 0

    def check(self) -> str | None:
        """None if the action may go ahead, else why not; raises after too many refusals."""
        if self.rate <= 0:
            return None
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._refused = 0
            return None
        self._refused += 1
        if self._refused >= self.strikes:
            raise RateLimitExceeded("rate limit exceeded repeatedly")
        return f"over {self.rate:g} actions/s"
