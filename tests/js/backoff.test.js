// server/web/backoff.js against the backoff vectors generated from protocol/backoff.py
// (seconds there, milliseconds here).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { Backoff } from "../../server/web/backoff.js";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));
const NAMES = { base_delay: "baseDelay", max_delay: "maxDelay", rate_limited_delay: "rateLimitedDelay", stable_after: "stableAfter" };

for (const script of vectors.backoff) {
  test(`backoff vector: ${script.name}`, () => {
    const options = Object.fromEntries(Object.entries(script.options).map(([k, v]) => [NAMES[k], v * 1000]));
    const backoff = new Backoff(options);
    for (const step of script.steps) {
      const [what, t, code, jitter] = step.do;
      if (what === "welcomed") {
        backoff.welcomed(t * 1000);
      } else {
        const wait = backoff.delay(code, t * 1000, jitter);
        assert.ok(Math.abs(wait - step.wait * 1000) < 1e-6, `${JSON.stringify(step.do)}: ${wait} ms, not ${step.wait * 1000}`);
      }
      assert.equal(backoff.attempt, step.attempt, JSON.stringify(step.do));
    }
  });
}
