// The client's sync state machine, without a socket: messages in, events and messages out.
//
// The JavaScript twin of protocol/sync.py (ClientSync), kept to the same rules by
// the shared vectors in tests/js/vectors.json (docs/protocol.md, "Sync and
// reconnection"):
//
// * HELLO carries resume = [epoch, seq] whenever the client holds a state; WELCOME's
//   `sync` says what follows: a SNAPSHOT (snapshot), DIFFs (replay) or nothing (current).
// * A DIFF whose seq is not above the client's own is a duplicate and is ignored. A DIFF
//   that skips ahead means something was lost: the client sends RESYNC once and ignores
//   further gapped DIFFs until DIFFs or a SNAPSHOT fill the gap.
// * A SNAPSHOT may arrive at any time after WELCOME; it replaces state, epoch and seq.
// * With a view (docs/protocol.md §5.12) the seq moves only when the view changes: a
//   VIEW_DIFF names the seq it follows (since); one whose since is above our seq means one
//   was lost, and is answered by RESYNC as a gap is. A view changed while away is asked
//   for by the next HELLO, without resume.
// * Aids strictly increase per (room, client) across reconnects. An action stays pending
//   until ACK or ERROR; after WELCOME the pending ones above `acked` are re-sent with their
//   aids, and those at or below it were processed while away: they resolve with seq null.
//
//   state       on                              next
//   ---------   -----------------------------   ---------
//   idle        connect()                       joining
//   joining     WELCOME sync=snapshot           syncing
//   joining     WELCOME sync=replay|current     live
//   syncing     SNAPSHOT                        live
//   live        SNAPSHOT                        live
//   live        DIFF with a gap                 resyncing
//   resyncing   DIFF that fills the gap         live
//   resyncing   SNAPSHOT                        live
//   any         connectionLost()                idle
//   any         close()                         closed

import { applyNetChange, applyOps, applyViewOps, isMap, OpError } from "./ops.js";

export const PROTOCOL_VERSION = 1;
export const HELLO = 1;
export const WELCOME = 2;
export const SNAPSHOT = 3;
export const ACTION = 4;
export const DIFF = 5;
export const RESYNC = 6;
export const ACK = 7;
export const ERROR = 8;
export const PATCH = 9;
export const VIEW_DIFF = 10;
export const VIEW = 11;
export const VIEW_SET = 12;

/** Close codes after which a client reconnects and resumes (docs/protocol.md, "Closing"). */
export const RETRYABLE_CLOSE_CODES = new Set([1001, 1006, 1011, 1012, 1013, 4008, 4029]);

const TRANSITIONS = new Map([
  ["idle connect", "joining"],
  ["joining welcome:snapshot", "syncing"],
  ["joining welcome:replay", "live"],
  ["joining welcome:patch", "live"],
  ["joining welcome:current", "live"],
  ["syncing snapshot", "live"],
  ["live snapshot", "live"],
  ["live gap", "resyncing"],
  ["resyncing snapshot", "live"],
  ["resyncing gap_filled", "live"],
]);

const ROLES = new Set(["agent", "spectator"]);
const SYNC_KINDS = new Set(["snapshot", "replay", "current", "patch"]);

/** The server broke the wire contract (a malformed message, or one out of order). */
export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = "ProtocolError";
    this.closeCode = 1007;
  }
}

const isInt = (v) => typeof v === "number" && Number.isInteger(v);
const isSeq = (v) => isInt(v) && v >= 0;

function require(ok, message) {
  if (!ok) throw new ProtocolError(message);
}

const MAX_PREFIXES = 64;
const MAX_PREFIX_DEPTH = 32;

const isView = (v) =>
  v === true ||
  (Array.isArray(v) &&
    v.length >= 1 &&
    v.length <= MAX_PREFIXES &&
    v.every((p) => Array.isArray(p) && p.length <= MAX_PREFIX_DEPTH && p.every((k) => typeof k === "string")));

function comparePrefixes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  }
  return a.length - b.length;
}

/**
 * A view in canonical form (docs/protocol.md §5.12): `true` for null or true (all the
 * connection may see), else the prefixes sorted, duplicates and those under another
 * dropped. Throws TypeError naming the rule for a malformed view.
 */
export function canonicalView(view) {
  if (view == null || view === true) return true;
  if (!isView(view)) {
    throw new TypeError(
      `a view is a list of 1 to ${MAX_PREFIXES} path prefixes, each a list of map keys ` +
        '(e.g. [["board"], ["players", "p7"]]), or null for all the connection may see',
    );
  }
  const byLength = [...view].sort((a, b) => a.length - b.length || comparePrefixes(a, b));
  const kept = [];
  for (const p of byLength) {
    if (!kept.some((q) => q.every((k, i) => p[i] === k))) kept.push([...p]);
  }
  return kept.sort(comparePrefixes);
}

/**
 * Check one decoded server message against its form; throw ProtocolError if it is not
 * one. Returns false for an unknown type, which a client skips (a later extension).
 */
export function checkServerMessage(m) {
  require(Array.isArray(m) && m.length > 0 && isInt(m[0]), "a message is an array [type, ...]");
  switch (m[0]) {
    case WELCOME: {
      const b = m[1];
      require(m.length >= 2 && isMap(b), "WELCOME is [2, map]");
      require(typeof b.epoch === "string", "WELCOME 'epoch' must be a str");
      require(isSeq(b.seq), "WELCOME 'seq' must be an int");
      require(ROLES.has(b.role), "WELCOME 'role' is unknown");
      require(b.client == null || typeof b.client === "string", "WELCOME 'client'");
      require(isSeq(b.acked), "WELCOME 'acked' must be an int");
      require(SYNC_KINDS.has(b.sync), "WELCOME 'sync' is unknown");
      return true;
    }
    case SNAPSHOT:
      require(
        m.length >= 4 && typeof m[1] === "string" && isInt(m[2]) && isMap(m[3]),
        "SNAPSHOT is [3, epoch, seq, state map]",
      );
      return true;
    case DIFF:
      require(m.length >= 3 && isInt(m[1]) && Array.isArray(m[2]), "DIFF is [5, seq, ops]");
      return true;
    case PATCH:
      require(
        m.length >= 5 && typeof m[1] === "string" && isSeq(m[2]) && isInt(m[3]) && m[3] > m[2] &&
          Array.isArray(m[4]),
        "PATCH is [9, epoch, since, seq > since, ops]",
      );
      return true;
    case VIEW_DIFF:
      require(
        m.length >= 4 && isSeq(m[1]) && isInt(m[2]) && m[2] > m[1] && Array.isArray(m[3]),
        "VIEW_DIFF is [10, since, seq > since, ops]",
      );
      return true;
    case VIEW_SET:
      require(m.length >= 4 && isSeq(m[1]) && isView(m[2]) && Array.isArray(m[3]), "VIEW_SET is [12, seq, prefixes, ops]");
      return true;
    case ACK:
      require(m.length >= 3 && isInt(m[1]) && (m[2] === null || isInt(m[2])), "ACK is [7, aid, seq|nil]");
      return true;
    case ERROR:
      require(
        m.length >= 4 &&
          (m[1] === null || isInt(m[1])) &&
          typeof m[2] === "string" &&
          typeof m[3] === "string",
        "ERROR is [8, aid|nil, code, message]",
      );
      return true;
    default:
      return false;
  }
}

/**
 * One client's view of one room across any number of connections.
 *
 * Events (takeEvents()): {type: "welcome", welcome}, {type: "snapshot", epoch, seq, state},
 * {type: "change", seq, ops}, {type: "ack", aid, seq}, {type: "rejected", aid, code, message},
 * {type: "notice", code, message}. Messages to send (takeOutgoing()) are decoded arrays.
 */
export class ClientSync {
  constructor({ role = "agent", client = null, token = null, netChange = true, view = null } = {}) {
    this.netChange = netChange;
    /** The view asked for (§5.12): prefixes, or true for all the connection may see. */
    this.view = canonicalView(view);
    this._heldView = null; // the view the state held is a copy of
    this._viewTag = null; // the server's name for it (WELCOME, VIEW_SET)
    this._askedView = this.view;
    this.role = role;
    this.client = client;
    this.token = token;
    this.stateKind = "idle";
    this.epoch = null;
    this.seq = 0;
    this.state = null;
    this.acked = 0;
    this.welcomed = false;
    /** Counters: DIFFs applied, duplicates ignored, gaps seen (each sends one RESYNC). */
    this.stats = { diffs: 0, duplicates: 0, gaps: 0, patches: 0 };
    this._lastAid = 0;
    this._fresh = false;
    this._pending = new Map();
    this._out = [];
    this._events = [];
  }

  get live() {
    return this.stateKind === "live";
  }

  /** The aids waiting for ACK or ERROR, ascending. */
  get pending() {
    return [...this._pending.keys()].sort((a, b) => a - b);
  }

  /** A connection is open: queue its HELLO, resuming when a state is held. */
  connect() {
    this._transition("connect");
    // answers: ACKs may carry a handler's answer (docs/protocol.md §5.8).
    // patch: a resume may be answered by the net change (§5.11).
    const hello = { v: PROTOCOL_VERSION, role: this.role, answers: true };
    if (this.netChange) hello.patch = true;
    if (this.token != null) hello.token = this.token;
    if (this.client != null) hello.client = this.client;
    hello.view = this.view;
    const sameView = JSON.stringify(this._heldView) === JSON.stringify(this.view);
    if (this.epoch !== null && !this._fresh && sameView) {
      hello.resume = [this.epoch, this.seq];
      if (this._viewTag != null) hello.view_tag = this._viewTag;
    }
    this._askedView = this.view;
    this._fresh = false;
    this._out.push([HELLO, hello]);
  }

  connectionLost() {
    if (this.stateKind !== "closed") this.stateKind = "idle";
    for (const p of this._pending.values()) p.sent = false;
    this._out = [];
  }

  close() {
    this.stateKind = "closed";
    this._out = [];
  }

  /** Ask for a SNAPSHOT on the next HELLO (no resume) after a broken stream; the state
   * held stays readable until that SNAPSHOT replaces it. */
  forgetState() {
    this._fresh = true;
  }

  /** See `view` (prefixes; null: all the connection may see) from now on: sent now as
   * VIEW when joined, else asked for by the next HELLO. Throws TypeError if malformed. */
  setView(view) {
    this.view = canonicalView(view);
    if (this.stateKind === "syncing" || this.stateKind === "live" || this.stateKind === "resyncing") {
      this._out.push([VIEW, this.view]);
    }
  }

  /** Queue an action and return its aid: sent now when joined, else after the next WELCOME. */
  act(name, args) {
    if (this.role !== "agent") throw new ProtocolError("spectators cannot act");
    if (!this.welcomed) throw new ProtocolError("act() before the first WELCOME");
    this._lastAid = Math.max(this._lastAid, this.acked) + 1;
    const pending = { aid: this._lastAid, name, args, sent: false };
    this._pending.set(pending.aid, pending);
    if (this.stateKind === "syncing" || this.stateKind === "live" || this.stateKind === "resyncing") {
      this._send(pending);
    }
    return pending.aid;
  }

  /** Process one server message that checkServerMessage accepted. */
  receive(m) {
    switch (m[0]) {
      case DIFF:
        return this._onDiff(m[1], m[2]);
      case PATCH:
        return this._onPatch(m[1], m[2], m[3], m[4]);
      case VIEW_DIFF:
        return this._onViewDiff(m[1], m[2], m[3]);
      case VIEW_SET:
        return this._onViewSet(m[1], m[2], m[3], m[4]);
      case SNAPSHOT:
        return this._onSnapshot(m[1], m[2], m[3]);
      case ACK:
        return this._resolve(m[1], {
          type: "ack", aid: m[1], seq: m[2], answer: m.length > 3 ? m[3] : null, answerKnown: true,
        });
      case ERROR:
        if (m[1] === null) return this._events.push({ type: "notice", code: m[2], message: m[3] });
        return this._resolve(m[1], { type: "rejected", aid: m[1], code: m[2], message: m[3] });
      case WELCOME:
        return this._onWelcome(m[1]);
      default:
        return undefined;
    }
  }

  takeOutgoing() {
    const out = this._out;
    this._out = [];
    return out;
  }

  takeEvents() {
    const events = this._events;
    this._events = [];
    return events;
  }

  _transition(what) {
    const next = TRANSITIONS.get(`${this.stateKind} ${what}`);
    if (next === undefined) throw new ProtocolError(`unexpected ${what} in state ${this.stateKind}`);
    this.stateKind = next;
  }

  _send(pending) {
    pending.sent = true;
    this._out.push([ACTION, pending.aid, pending.name, pending.args]);
  }

  _onWelcome(w) {
    this._transition(`welcome:${w.sync}`);
    if (w.sync !== "snapshot" && (this.epoch !== w.epoch || this.seq > w.seq)) {
      throw new ProtocolError("WELCOME says replay/current for a state we do not hold");
    }
    this.welcomed = true;
    this._heldView = this._askedView;
    this._viewTag = typeof w.view_tag === "string" ? w.view_tag : null;
    // setView() while the HELLO was on its way: ask for it now.
    if (JSON.stringify(this.view) !== JSON.stringify(this._askedView)) this._out.push([VIEW, this.view]);
    if (w.client != null) this.client = w.client;
    this.acked = w.acked;
    this._lastAid = Math.max(this._lastAid, w.acked);
    this._events.push({ type: "welcome", welcome: w });
    // Below acked: processed while away, and a later one too, so its answer is gone. The
    // rest are sent again, acked included: the room answers its client's last aid with
    // ACK [7, aid, nil, answer?] and applies nothing.
    for (const aid of this.pending) {
      if (aid < w.acked) this._resolve(aid, { type: "ack", aid, seq: null, answer: null, answerKnown: false });
    }
    for (const aid of this.pending) this._send(this._pending.get(aid));
  }

  _onSnapshot(epoch, seq, state) {
    this._transition("snapshot");
    this.epoch = epoch;
    this.seq = seq;
    this.state = state;
    this._events.push({ type: "snapshot", epoch, seq, state });
  }

  _onDiff(seq, ops) {
    if ((this.stateKind !== "live" && this.stateKind !== "resyncing") || this.state === null) {
      throw new ProtocolError(`DIFF in state ${this.stateKind}`);
    }
    if (seq <= this.seq) {
      this.stats.duplicates += 1;
      return;
    }
    if (seq > this.seq + 1) {
      this._gap();
      return;
    }
    try {
      applyOps(this.state, ops);
    } catch (err) {
      if (err instanceof OpError) throw new ProtocolError(`DIFF ${seq} does not apply: ${err.message}`);
      throw err;
    }
    this.seq = seq;
    this.stats.diffs += 1;
    if (this.stateKind === "resyncing") this._transition("gap_filled");
    this._events.push({ type: "change", seq, ops });
  }

  /** The net change from our seq to `seq`, applied all or nothing; one "change" event. */
  _onPatch(epoch, since, seq, ops) {
    if ((this.stateKind !== "live" && this.stateKind !== "resyncing") || this.state === null) {
      throw new ProtocolError(`PATCH in state ${this.stateKind}`);
    }
    if (epoch === this.epoch && seq <= this.seq) return; // a SNAPSHOT overtook its RESYNC
    // A net change from an older seq covers every change since it: it brings any state
    // between its since and its seq to its seq.
    if (epoch !== this.epoch || !(since <= this.seq && this.seq < seq)) {
      throw new ProtocolError(`PATCH from ${since} of another state than ours`);
    }
    try {
      applyNetChange(this.state, ops);
    } catch (err) {
      if (err instanceof OpError) throw new ProtocolError(`PATCH to ${seq} does not apply: ${err.message}`);
      throw err;
    }
    this.seq = seq;
    this.stats.patches += 1;
    if (this.stateKind === "resyncing") this._transition("gap_filled");
    this._events.push({ type: "change", seq, ops });
  }

  /** A view's change (§5.12): applies to a copy at any seq from `since` to `seq - 1`;
   * a `since` above ours means a VIEW_DIFF was lost: RESYNC, as for a gap. */
  _onViewDiff(since, seq, ops) {
    if ((this.stateKind !== "live" && this.stateKind !== "resyncing") || this.state === null) {
      throw new ProtocolError(`VIEW_DIFF in state ${this.stateKind}`);
    }
    if (seq <= this.seq) {
      this.stats.duplicates += 1;
      return;
    }
    if (since > this.seq) {
      this._gap();
      return;
    }
    try {
      applyViewOps(this.state, ops);
    } catch (err) {
      if (err instanceof OpError) throw new ProtocolError(`VIEW_DIFF ${seq} does not apply: ${err.message}`);
      throw err;
    }
    this.seq = seq;
    this.stats.diffs += 1;
    if (this.stateKind === "resyncing") this._transition("gap_filled");
    this._events.push({ type: "change", seq, ops });
  }

  /** The answer to VIEW: the copy becomes the new view at `seq` (a copy waiting for a
   * RESYNC's answer keeps its seq: that answer brings the rest). */
  _onViewSet(seq, view, ops, tag) {
    if (this.state === null) throw new ProtocolError("VIEW_SET before any state");
    try {
      applyNetChange(this.state, ops);
    } catch (err) {
      if (err instanceof OpError) throw new ProtocolError(`VIEW_SET does not apply: ${err.message}`);
      throw err;
    }
    this._heldView = view;
    this._viewTag = typeof tag === "string" ? tag : null;
    if (this.stateKind === "live") this.seq = Math.max(this.seq, seq);
    this._events.push({ type: "change", seq: this.seq, ops });
  }

  /** Something was lost: ask once with RESYNC, ignore what comes until it is filled. */
  _gap() {
    if (this.stateKind !== "live") return;
    this._transition("gap");
    this.stats.gaps += 1;
    this._out.push([RESYNC, this.epoch, this.seq]);
  }

  _resolve(aid, event) {
    this._pending.delete(aid);
    this._events.push(event);
  }
}
