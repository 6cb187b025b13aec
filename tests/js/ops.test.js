// server/web/ops.js against the op vectors generated from protocol/ops.py.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { applyOps, cloneValue, deepEqual, OpError, valueAt } from "../../server/web/ops.js";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));

for (const v of vectors.ops) {
  test(`op vector: ${v.name}`, () => {
    const state = structuredClone(v.state);
    if ("error" in v) {
      assert.throws(() => applyOps(state, v.ops), (err) => err instanceof OpError && err.code === v.error);
      assert.deepEqual(state, v.state, "a refused list of ops changes nothing");
    } else {
      applyOps(state, v.ops);
      assert.deepEqual(state, v.result);
      assert.equal(Object.getPrototypeOf(state), Object.prototype, "no prototype was replaced");
    }
  });
}

test("applied values are private copies", () => {
  const value = { inner: [1] };
  const state = {};
  const ops = [[0, ["a"], value]];
  applyOps(state, ops);
  value.inner.push(2);
  assert.deepEqual(state, { a: { inner: [1] } });
});

test("values that are not state values are refused", () => {
  for (const bad of [undefined, NaN, Infinity, () => 1, new Uint8Array(1), new Date(0), 10n]) {
    assert.throws(() => cloneValue(bad), OpError);
  }
});

test("valueAt and deepEqual", () => {
  const state = { a: [{ b: 1 }], __proto__x: 2 };
  assert.equal(valueAt(state, ["a", 0, "b"]), 1);
  assert.equal(valueAt(state, ["a", 1, "b"]), undefined);
  assert.equal(valueAt(state, ["toString"]), undefined);
  assert.ok(deepEqual({ x: [1, { y: null }] }, { x: [1, { y: null }] }));
  assert.ok(!deepEqual({ x: [1] }, { x: [1], y: undefined }));
  assert.ok(!deepEqual([1, 2], [2, 1]));
});
