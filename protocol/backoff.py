"""How long a client waits before it reconnects. No I/O: times and randomness come in.

The rule (docs/browser.md states the same for the JS client, server/web/backoff.js):

* A retry waits a random delay, uniform between 0 and
  ``min(max_delay, base_delay * 2**attempt)`` ("full jitter"), where ``attempt``
  counts the retries since the client last held a connection that stayed up
  (from its WELCOME to its end) for at least ``stable_after`` seconds. A WELCOME
  alone does not reset it: a server that welcomes a client and then closes it
  at once must not be hammered by one that starts its backoff again each time.
* After close 1012 (this server is leaving) the retry is at once: another server
  of the cluster takes the room.
* After close 4029 (rate limit exceeded repeatedly) the retry waits
  ``rate_limited_delay`` more, on top of the jittered delay: the server has asked
  for a pause, so even the first retry waits at least that long, and retries
  that keep being closed with 4029 wait longer each time.

The defaults are those of both clients: 50 ms, 5 s, 1 s and 10 s.
"""

from __future__ import annotations

from typing import Final

#: The defaults, in seconds.
BASE_DELAY: Final = 0.05
MAX_DELAY: Final = 5.0
RATE_LIMITED_DELAY: Final = 1.0
STABLE_AFTER: Final = 10.0

#: Close codes with a rule of their own.
LEAVING: Final = 1012
RATE_LIMITED: Final = 4029

__all__ = ["Backoff"]


class Backoff:
    """One client's reconnection delays: call :meth:`welcomed` and :meth:`delay`."""

    __slots__ = ("_up", "attempt", "base_delay", "max_delay", "rate_limited_delay", "stable_after")

    def __init__(
        self,
        *,
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
        rate_limited_delay: float = RATE_LIMITED_DELAY,
        stable_after: float = STABLE_AFTER,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.rate_limited_delay = rate_limited_delay
        self.stable_after = stable_after
        #: Retries since the last connection that stayed up for ``stable_after``.
        self.attempt = 0
        self._up: float | None = None

    def welcomed(self, now: float) -> None:
        """The connection was accepted (WELCOME) at ``now`` (any monotonic clock)."""
        self._up = now

    def delay(self, code: int, now: float, jitter: float) -> float:
        """The connection (or an attempt at one) ended with ``code`` at ``now``: the wait.

        ``jitter`` is a uniform random number in [0, 1).
        """
        if self._up is not None and now - self._up >= self.stable_after:
            self.attempt = 0
        self._up = None
        self.attempt += 1
        if code == LEAVING:
            return 0.0
        wait = jitter * min(self.max_delay, self.base_delay * 2.0 ** min(self.attempt, 30))
        if code == RATE_LIMITED:
            wait += self.rate_limited_delay
        return wait
