// Path watchers: room.watch("players/*/hp", cb) calls cb(value, previous, path) only when
// a value under a matching path changes. Pure functions over states and ops, so Node
// tests them without a socket.
//
// A pattern is a "/"-separated list of segments (or an array of them); "*" matches any
// one segment, anything else matches a map key or a list index by its text. An op
// touches a pattern when their paths agree on their common length: a change above the
// pattern's depth (replacing "players") is expanded over the state to every concrete
// path the pattern names there. An ins or del in a list touches the whole list (the
// items after it move). Values are compared structurally, so a set to an equal value
// calls nothing.

import { DEL, INS, deepEqual, isMap, valueAt } from "./ops.js";

/** @param {string | (string | number)[]} pattern */
export function compilePattern(pattern) {
  const segs = Array.isArray(pattern) ? pattern.map(String) : String(pattern).split("/");
  if (segs.length === 0 || segs.some((s) => s === "")) {
    throw new TypeError(`bad watch pattern ${JSON.stringify(pattern)}`);
  }
  return segs;
}

function children(node) {
  if (Array.isArray(node)) return node.map((_, i) => i);
  if (isMap(node)) return Object.keys(node);
  return [];
}

/** Every concrete path under `prefix` that the rest of the pattern names in `state`. */
function expand(rest, state, prefix, out) {
  if (rest.length === 0) {
    out.push(prefix);
    return;
  }
  const [seg, ...more] = rest;
  const node = valueAt(state, prefix);
  if (seg === "*") {
    for (const key of children(node)) expand(more, state, [...prefix, key], out);
  } else if (Array.isArray(node) && /^(0|[1-9][0-9]*)$/.test(seg)) {
    expand(more, state, [...prefix, Number(seg)], out);
  } else {
    expand(more, state, [...prefix, seg], out);
  }
}

/** The path an op changes, widened to the list for an ins or a del of a list item. */
export function changedPath(op) {
  const path = op[1];
  const last = path[path.length - 1];
  if (op[0] === INS || (op[0] === DEL && typeof last === "number")) return path.slice(0, -1);
  return path;
}

/** Concrete paths of `segs` that a change at `path` may have changed, expanded over `state`. */
export function touchedPaths(segs, path, state) {
  const n = Math.min(segs.length, path.length);
  for (let i = 0; i < n; i++) {
    if (segs[i] !== "*" && segs[i] !== String(path[i])) return [];
  }
  if (path.length >= segs.length) return [path.slice(0, segs.length)];
  const out = [];
  expand(segs.slice(path.length), state, path.slice(), out);
  return out;
}

const clone = (v) => (v === undefined ? undefined : structuredClone(v));

/** The watchers of one room: call before(state, paths) ahead of a change, then after(state). */
export class Watchers {
  constructor(onError = () => {}) {
    this._list = new Set();
    this._seen = null;
    this._onError = onError;
  }

  get size() {
    return this._list.size;
  }

  /** @returns {() => void} unsubscribe */
  add(pattern, callback) {
    const entry = { segs: compilePattern(pattern), callback };
    this._list.add(entry);
    return () => this._list.delete(entry);
  }

  /** Remember the values the change may touch. `paths` null: the whole state is replaced. */
  before(state, paths) {
    if (this._list.size === 0) return;
    this._paths = paths;
    this._seen = new Map();
    for (const entry of this._list) {
      const found = new Map();
      for (const p of this._candidates(entry.segs, state, paths)) {
        found.set(JSON.stringify(p), { path: p, previous: clone(valueAt(state, p)) });
      }
      this._seen.set(entry, found);
    }
  }

  /** Call every watcher whose values changed since before(). */
  after(state) {
    const seen = this._seen;
    if (seen === null) return;
    this._seen = null;
    for (const [entry, found] of seen) {
      if (!this._list.has(entry)) continue;
      for (const p of this._candidates(entry.segs, state, this._paths)) {
        const key = JSON.stringify(p);
        if (!found.has(key)) found.set(key, { path: p, previous: undefined });
      }
      for (const { path, previous } of found.values()) {
        const value = valueAt(state, path);
        if (deepEqual(value, previous)) continue;
        try {
          entry.callback(value, previous, path);
        } catch (err) {
          this._onError(err);
        }
      }
    }
  }

  _candidates(segs, state, paths) {
    if (state == null) return [];
    if (paths === null) return touchedPaths(segs, [], state);
    return paths.flatMap((p) => touchedPaths(segs, p, state));
  }
}
