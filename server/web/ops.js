// statecast ops in JavaScript: the same rules as protocol/ops.py (docs/protocol.md, "Ops").
//
// A state is a JSON-compatible document; an op is [0, path, value] (set),
// [1, path] (del) or [2, path, value] (ins). applyOps applies a list of ops all
// or nothing, in time proportional to the change: every change is recorded in
// an undo log and reverted if a later op is refused. The shared vectors in
// tests/js/vectors.json (generated from protocol/) hold this file to the Python
// rules; tests/js/*.test.js run them under `node --test`.
//
// JavaScript has one number type, so an int and an integral float are the same
// value here (msgpack decodes float64 1.0 as 1); a value is refused only if it is
// not finite. Ints outside ±(2^53 - 1) never come from a statecast server.

export const SET = 0;
export const DEL = 1;
export const INS = 2;
export const DEFAULT_MAX_DEPTH = 64;

/** A refused op: `code` is "invalid" or "too_large", as the server's ERROR codes. */
export class OpError extends Error {
  /** @param {"invalid" | "too_large"} code @param {string} message */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "OpError";
    this.code = code;
  }
}

const invalid = (message) => new OpError("invalid", message);
const tooLarge = (message) => new OpError("too_large", message);
const hasOwn = (node, key) => Object.prototype.hasOwnProperty.call(node, key);

/** True for a plain map ({} or a decoded msgpack map), false for arrays and everything else. */
export function isMap(value) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function isIndex(seg) {
  return typeof seg === "number" && Number.isInteger(seg);
}

/** Set a key as an own property, even "__proto__" (plain assignment would set the prototype). */
function putKey(node, key, value) {
  if (key === "__proto__") {
    Object.defineProperty(node, key, { value, writable: true, enumerable: true, configurable: true });
  } else {
    node[key] = value;
  }
}

/**
 * Check that `value` is state-compatible and return a private deep copy of it,
 * so the state never shares a container with the op (or the caller) it came from.
 * @param {unknown} value @param {number} [depthLeft]
 */
export function cloneValue(value, depthLeft = DEFAULT_MAX_DEPTH) {
  if (value === null || typeof value === "string" || typeof value === "boolean") return value;
  if (typeof value === "number") {
    if (Number.isFinite(value)) return value;
    throw invalid("float is not finite");
  }
  if (Array.isArray(value)) {
    if (depthLeft <= 0) throw tooLarge("value nested too deeply");
    return value.map((v) => cloneValue(v, depthLeft - 1));
  }
  if (isMap(value)) {
    if (depthLeft <= 0) throw tooLarge("value nested too deeply");
    const out = {};
    for (const key of Object.keys(value)) putKey(out, key, cloneValue(value[key], depthLeft - 1));
    return out;
  }
  throw invalid(`${value === undefined ? "undefined" : typeof value} is not a state value`);
}

/** Validate a path: a non-empty list of str or int segments, at most maxDepth long. */
export function checkPath(path, maxDepth = DEFAULT_MAX_DEPTH) {
  if (!Array.isArray(path)) throw invalid("a path must be a list");
  if (path.length === 0) throw invalid("a path must not be empty");
  if (path.length > maxDepth) throw tooLarge("path nested too deeply");
  for (const seg of path) {
    if (typeof seg !== "string" && !isIndex(seg)) throw invalid("path segments must be str or int");
  }
  return path.slice();
}

/** Validate one op in wire form; return it with a private copy of its value. */
export function parseOp(raw, maxDepth = DEFAULT_MAX_DEPTH) {
  if (!Array.isArray(raw)) throw invalid("an op must be a list");
  if (raw.length === 0 || !isIndex(raw[0])) throw invalid("an op must start with its int kind");
  const kind = raw[0];
  if (kind === DEL) {
    if (raw.length !== 2) throw invalid("del takes [1, path]");
    return [DEL, checkPath(raw[1], maxDepth)];
  }
  if (kind === SET || kind === INS) {
    if (raw.length !== 3) throw invalid("set and ins take [kind, path, value]");
    const path = checkPath(raw[1], maxDepth);
    return [kind, path, cloneValue(raw[2], maxDepth - path.length)];
  }
  throw invalid(`unknown op kind ${kind}`);
}

export function parseOps(raw, maxDepth = DEFAULT_MAX_DEPTH) {
  if (!Array.isArray(raw)) throw invalid("ops must be a list");
  return raw.map((op) => parseOp(op, maxDepth));
}

/** The container that path[-1] addresses, creating maps on the way for a set. */
function walk(state, path, create, undo) {
  let node = state;
  for (let i = 0; i < path.length - 1; i++) {
    const seg = path[i];
    if (isMap(node)) {
      if (typeof seg !== "string") throw invalid("an int segment cannot index a map");
      if (!hasOwn(node, seg)) {
        if (!create) throw invalid(`no key ${JSON.stringify(seg)} on the path`);
        const parent = node;
        putKey(parent, seg, {});
        undo.push(() => delete parent[seg]);
      }
      node = node[seg];
    } else if (Array.isArray(node)) {
      if (!isIndex(seg)) throw invalid("a str segment cannot index a list");
      if (seg < 0 || seg >= node.length) throw invalid("list index out of range");
      node = node[seg];
    } else {
      throw invalid("the path goes through a value that is not a container");
    }
  }
  return node;
}

/** Apply one parsed op in place, pushing how to revert it onto `undo`. */
export function applyOp(state, op, undo) {
  const [kind, path] = op;
  const last = path[path.length - 1];
  const node = walk(state, path, kind === SET, undo);
  if (kind === SET) {
    if (isMap(node)) {
      if (typeof last !== "string") throw invalid("an int segment cannot index a map");
      if (hasOwn(node, last)) {
        const old = node[last];
        undo.push(() => putKey(node, last, old));
      } else {
        undo.push(() => delete node[last]);
      }
      putKey(node, last, op[2]);
    } else if (Array.isArray(node)) {
      if (!isIndex(last) || last < 0 || last >= node.length) {
        throw invalid("set: list index out of range");
      }
      const old = node[last];
      node[last] = op[2];
      undo.push(() => {
        node[last] = old;
      });
    } else {
      throw invalid("set: the parent is not a container");
    }
  } else if (kind === DEL) {
    if (isMap(node)) {
      if (typeof last !== "string") throw invalid("an int segment cannot index a map");
      if (!hasOwn(node, last)) throw invalid(`del: no key ${JSON.stringify(last)}`);
      const old = node[last];
      delete node[last];
      undo.push(() => putKey(node, last, old));
    } else if (Array.isArray(node)) {
      if (!isIndex(last) || last < 0 || last >= node.length) {
        throw invalid("del: list index out of range");
      }
      const [old] = node.splice(last, 1);
      undo.push(() => node.splice(last, 0, old));
    } else {
      throw invalid("del: the parent is not a container");
    }
  } else if (kind === INS) {
    if (!Array.isArray(node)) throw invalid("ins: the parent is not a list");
    if (!isIndex(last)) throw invalid("ins: the index must be an int");
    const index = last === -1 ? node.length : last;
    if (index < 0 || index > node.length) throw invalid("ins: list index out of range");
    node.splice(index, 0, op[2]);
    undo.push(() => node.splice(index, 1));
  } else {
    throw invalid(`unknown op kind ${kind}`);
  }
}

/** Apply ops as received (a DIFF's), all or nothing: on OpError the state is as before. */
export function applyOps(state, rawOps, maxDepth = DEFAULT_MAX_DEPTH) {
  const parsed = parseOps(rawOps, maxDepth);
  const undo = [];
  try {
    for (const op of parsed) applyOp(state, op, undo);
  } catch (err) {
    while (undo.length) undo.pop()();
    throw err;
  }
}

/**
 * Apply a PATCH's net change (docs/protocol.md §5.11), all or nothing: `set` as ever, and a
 * `del` of a path that is not there changes nothing (the entry may have come and gone).
 */
export function applyNetChange(state, rawOps, maxDepth = DEFAULT_MAX_DEPTH) {
  const parsed = parseOps(rawOps, maxDepth);
  const undo = [];
  try {
    for (const op of parsed) {
      if (op[0] !== 0 && op[0] !== 1) throw invalid("a net change holds only set and del");
      if (op[0] === 1 && valueAt(state, op[1]) === undefined) continue;
      applyOp(state, op, undo);
    }
  } catch (err) {
    while (undo.length) undo.pop()();
    throw err;
  }
}

/**
 * Apply a VIEW_DIFF's ops (docs/protocol.md §5.12), all or nothing: as a DIFF's, but a
 * `del` of a path that is not there changes nothing.
 */
export function applyViewOps(state, rawOps, maxDepth = DEFAULT_MAX_DEPTH) {
  const parsed = parseOps(rawOps, maxDepth);
  const undo = [];
  try {
    for (const op of parsed) {
      if (op[0] === 1 && valueAt(state, op[1]) === undefined) continue;
      applyOp(state, op, undo);
    }
  } catch (err) {
    while (undo.length) undo.pop()();
    throw err;
  }
}

/** The value at `path` in `state`, or undefined when there is none. */
export function valueAt(state, path) {
  let node = state;
  for (const seg of path) {
    if (isMap(node) && typeof seg === "string" && hasOwn(node, seg)) node = node[seg];
    else if (Array.isArray(node) && isIndex(seg) && seg >= 0 && seg < node.length) node = node[seg];
    else return undefined;
  }
  return node;
}

/** Structural equality of two state values (key order ignored, as in a map). */
export function deepEqual(a, b) {
  if (a === b) return true;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    return a.every((v, i) => deepEqual(v, b[i]));
  }
  if (isMap(a) && isMap(b)) {
    const keys = Object.keys(a);
    if (keys.length !== Object.keys(b).length) return false;
    return keys.every((k) => hasOwn(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}
