// backoff.js: how long the client waits before it reconnects; protocol/backoff.py's twin,
// checked against the same vectors. No I/O: times (ms) and randomness come in.
//
// A retry waits a random delay, uniform between 0 and min(maxDelay, baseDelay * 2^attempt),
// where attempt counts the retries since the client last held a connection that stayed up
// (from its WELCOME to its end) for stableAfter ms: a WELCOME alone does not reset it, so a
// server that welcomes the client and closes it again is not hammered. After close 1012 the
// retry is at once; after close 4029 (rate limit exceeded repeatedly) it waits
// rateLimitedDelay more, on top of the jittered delay.

export const BACKOFF_DEFAULTS = Object.freeze({
  baseDelay: 50,
  maxDelay: 5000,
  rateLimitedDelay: 1000,
  stableAfter: 10000,
});

export class Backoff {
  constructor(options = {}) {
    Object.assign(this, BACKOFF_DEFAULTS, options);
    /** Retries since the last connection that stayed up for stableAfter. */
    this.attempt = 0;
    this._up = null;
  }

  /** The connection was accepted (WELCOME) at `now` (ms, any monotonic clock). */
  welcomed(now) {
    this._up = now;
  }

  /** The connection (or an attempt at one) ended with `code` at `now`: the wait in ms. */
  delay(code, now, jitter) {
    if (this._up !== null && now - this._up >= this.stableAfter) this.attempt = 0;
    this._up = null;
    this.attempt += 1;
    if (code === 1012) return 0;
    let wait = jitter * Math.min(this.maxDelay, this.baseDelay * 2 ** Math.min(this.attempt, 30));
    if (code === 4029) wait += this.rateLimitedDelay;
    return wait;
  }
}
