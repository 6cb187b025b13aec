// statecast.js: a statecast client for browsers and Node 20+, in one ES module.
//
//   import { connect } from "/static/statecast.js";
//   const room = connect("ws://127.0.0.1:8765/rooms/lobby", { role: "spectator" });
//   await room.ready;                        // WELCOME arrived
//   room.on("change", (ops, seq) => render(room.state));
//   room.watch("players/*/hp", (hp, before, path) => flash(path));
//   const seq = await room.act("patch", [[0, ["x"], 1]]);   // agents only
//   const task = await room.call("claim", null);            // the handler's answer
//
// The client reconnects with full-jitter exponential backoff (backoff.js: reset only by a
// connection that stayed up a while, a second more after close 4029, at once after close
// 1012 and on the browser's `online` event, replacing a socket the network change may have
// left dead), resumes by (epoch, seq), asks RESYNC on a gap,
// ignores duplicates, applies unsolicited SNAPSHOTs and re-sends un-acked actions with
// their original aids, so every action takes effect exactly once. Its sync rules live in
// sync.js and its op rules in ops.js, both shared with the Node tests; this file only
// moves bytes. Typed by statecast.d.ts beside it.

import { Decoder, encode } from "./vendor/msgpack/index.mjs";
import { Backoff } from "./backoff.js";
import { ClientSync, DIFF, ProtocolError, RETRYABLE_CLOSE_CODES, SNAPSHOT, checkServerMessage } from "./sync.js";
import { changedPath, Watchers } from "./watch.js";

export { applyOps, OpError } from "./ops.js";
export { ClientSync, ProtocolError } from "./sync.js";

/** An action the room refused (`code` is its ERROR code), or a client that stopped. */
export class StatecastError extends Error {
  constructor(code, message, extra = {}) {
    super(`${code}: ${message}`);
    this.name = "StatecastError";
    this.code = code;
    Object.assign(this, extra);
  }
}

/** Undecodable or inapplicable frames in a row after which the client stops. */
const MAX_BAD_FRAMES = 3;

let tabCounter = 0;

const freshClientId = () =>
  globalThis.crypto?.randomUUID?.().replaceAll("-", "") ??
  `${Date.now().toString(36)}${Math.random().toString(36).slice(2)}${++tabCounter}`;

const NO_CLAIM = () => {};

const now = () => globalThis.performance?.now() ?? Date.now();

/** Hold the Web Lock `name` until the returned release is called; null if another holds it. */
function holdLock(locks, name) {
  return new Promise((resolve, reject) => {
    locks
      .request(name, { ifAvailable: true }, (lock) => {
        if (lock === null) {
          resolve(null);
          return undefined;
        }
        return new Promise((release) => resolve(release));
      })
      .catch(reject);
  });
}

function sessionStore() {
  try {
    return globalThis.sessionStorage ?? null; // throws in an opaque origin
  } catch {
    return null;
  }
}

/**
 * A client id for an agent given none: unique to this tab (or process) and kept for its
 * session. The id is stored in sessionStorage per room URL, so a reload resumes as the
 * same agent; but browsers copy sessionStorage into a tab duplicated or opened from this
 * one, so the id is also claimed with a Web Lock held while the Room runs: a tab (or a
 * second Room in this tab) that finds the stored id held by a live one mints a fresh id,
 * and two tabs never take each other's id (close 4009). Where Web Locks are missing (an
 * insecure http: origin other than localhost) every Room gets a fresh id: never shared,
 * though not kept across a reload.
 * @returns {Promise<{id: string, release: () => void}>}
 */
async function claimTabClientId(url) {
  const store = sessionStore();
  const locks = globalThis.navigator?.locks;
  if (!store || typeof locks?.request !== "function") return { id: freshClientId(), release: NO_CLAIM };
  const key = `statecast:client:${url}`;
  let id = null;
  try {
    id = store.getItem(key);
  } catch {
    // storage refused: a fresh id below
  }
  for (let tries = 0; tries < 4; tries++) {
    id ??= freshClientId();
    let release = null;
    try {
      release = await holdLock(locks, `${key}#${id}`);
    } catch {
      return { id: freshClientId(), release: NO_CLAIM };
    }
    if (release !== null) {
      try {
        store.setItem(key, id);
      } catch {
        // kept for this page only
      }
      return { id, release };
    }
    id = null;
  }
  return { id: freshClientId(), release: NO_CLAIM };
}

function snapshotOf(room) {
  return Object.freeze({ state: room.state, epoch: room.epoch, seq: room.seq, status: room.status });
}

export class Room {
  /** @param {string | string[]} url @param {import("./statecast").ConnectOptions} options */
  constructor(url, options = {}) {
    const role = options.role ?? "agent";
    /** Every URL of the room (one per node of a cluster); a connection that ends moves on to the next. */
    this.urls = Array.isArray(url) ? [...url] : [url];
    if (this.urls.length === 0) throw new TypeError("connect() needs at least one URL");
    this._urlIndex = 0;
    this.role = role;
    this.status = "connecting";
    this.lastSync = null;
    this.maxMessage = null;
    /** WELCOMEs after the first: how often the client came back. */
    this.reconnects = 0;
    this.closeCode = null;
    this._welcomes = 0;
    /** Frames in a row that could not be applied (see _fail). */
    this._badFrames = 0;
    /** Bytes and frames received, for rates; diffs, duplicates and gaps come from the sync. */
    this.traffic = { frames: 0, bytes: 0 };
    const client = options.client ?? null;
    this._sync = new ClientSync({
      role, client, token: options.token ?? null, netChange: options.netChange ?? true,
      view: options.view ?? null,
    });
    /** An agent given no client id claims one for this tab before its first connection. */
    this._claim = role === "agent" && client === null ? claimTabClientId(this.urls[0]) : null;
    this._releaseClient = NO_CLAIM;
    /** Why the client stopped: what act() rejects with from then on. */
    this._stopError = null;
    this._getToken = options.getToken ?? null;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    const reconnect = options.reconnect ?? true;
    this._reconnect = reconnect !== false;
    this._backoff = new Backoff(typeof reconnect === "object" ? reconnect : {});
    this._listeners = new Map();
    this._acts = new Map();
    this._watchers = new Watchers((err) => this._emit("error", err));
    this._ws = null;
    this._timer = null;
    this._needToken = this._getToken !== null && options.token == null;
    this._stopped = false;
    this._snapshot = null;
    this._decoder = new Decoder();
    this.ready = new Promise((resolve, reject) => {
      this._readyResolve = resolve;
      this._readyReject = reject;
    });
    this.ready.catch(() => {}); // a stop before WELCOME must not be an unhandled rejection
    this._online = () => this._networkBack();
    if (typeof this._WebSocket !== "function") {
      // Node 20 has no global WebSocket: say so at once rather than retry forever.
      const err = new StatecastError(
        "no_websocket",
        "this runtime has no WebSocket: use Node.js 22 or newer, run Node 20 with " +
          "--experimental-websocket, or pass one to connect(url, {WebSocket}) (e.g. the ws package's)",
      );
      queueMicrotask(() => this._stop(1006, "no WebSocket", err));
      return;
    }
    globalThis.addEventListener?.("online", this._online);
    this._open();
  }

  get state() {
    return this._sync.state;
  }

  get epoch() {
    return this._sync.epoch;
  }

  get seq() {
    return this._sync.seq;
  }

  get client() {
    return this._sync.client;
  }

  /** DIFFs applied, duplicates ignored, gaps seen (each answered by RESYNC). */
  get stats() {
    return { ...this._sync.stats, ...this.traffic, reconnects: this.reconnects };
  }

  /** The aids of actions sent and not yet answered. */
  get pending() {
    return this._sync.pending;
  }

  /** @returns {() => void} unsubscribe */
  on(event, callback) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(callback);
    return () => set.delete(callback);
  }

  /** Call back with (value, previous, path) when a value under `pattern` changes. */
  watch(pattern, callback) {
    return this._watchers.add(pattern, callback);
  }

  /** For React's useSyncExternalStore: called after every change of state or status. */
  subscribe(callback) {
    return this.on("update", callback);
  }

  /** An immutable {state, epoch, seq, status}, a new object after every change. */
  getSnapshot() {
    if (this._snapshot === null) this._snapshot = snapshotOf(this);
    return this._snapshot;
  }

  /**
   * Run an action; resolves with its diff's seq (null when it had already been processed
   * while the client was away), rejects with a StatecastError carrying the ERROR code.
   */
  async act(name, args) {
    return (await this._perform(name, args)).seq;
  }

  /**
   * Run an action; resolves with what its handler returned (null if nothing), the answer
   * its ACK carries (docs/protocol.md §5.8). The room records a client's last answer, so an
   * action sent again after a reconnect gets the same one; rejects with code "answer_lost"
   * when the action took effect while the client was away and a later one of its actions
   * did too (only the last answer is kept).
   */
  async call(name, args) {
    const acked = await this._perform(name, args);
    if (!acked.answerKnown) {
      throw new StatecastError("answer_lost", `action ${acked.aid} took effect while the client was away; its answer is gone, since a room keeps only a client's last answer: read the outcome from the state`, { aid: acked.aid });
    }
    return acked.answer;
  }

  async _perform(name, args) {
    if (this.role !== "agent") throw new StatecastError("forbidden", "spectators may not act");
    await this.ready;
    if (this._stopped) throw this._stopError;
    // Larger than the server accepts (its WELCOME says): sent, it would close the
    // connection with 1009, so it is refused here and the session goes on.
    const limit = this.maxMessage;
    if (limit !== null) {
      const size = encode([4, 2 ** 53, name, args], { ignoreUndefined: true }).length;
      if (size > limit) {
        throw new StatecastError("too_large", `the action is ${size} bytes encoded; the server accepts messages of at most ${limit} bytes`);
      }
    }
    const aid = this._sync.act(name, args);
    const result = new Promise((resolve, reject) => this._acts.set(aid, { resolve, reject }));
    this._flush();
    return result;
  }

  /**
   * See `view` (path prefixes such as [["board"], ["players", "p7"]]; null: all this
   * connection may see) from now on (docs/protocol.md §5.12). The state becomes the new
   * view's at once, in one "change" event; a view the token does not grant is answered
   * by an "error" event (code "forbidden") and changes nothing.
   */
  setView(view) {
    this._sync.setView(view);
    this._flush();
  }

  /** The view asked for: path prefixes, or true for all this connection may see. */
  get view() {
    return this._sync.view;
  }

  /** Drop the connection as a network fault would; the client reconnects and resumes. */
  drop() {
    if (this._ws) this._lost(this._ws, 1006, "dropped by the client");
  }

  /** Stop for good: close the socket, reject what is pending. */
  close() {
    this._stop(1000, "closed by the client", new StatecastError("closed", "the client was closed"));
  }

  // --- internals ---------------------------------------------------------------------

  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const callback of [...set]) {
      try {
        callback(...args);
      } catch (err) {
        // A user callback's exception never breaks the client's state.
        if (event !== "error") this._emit("error", err);
        else globalThis.queueMicrotask?.(() => { throw err; });
      }
    }
  }

  _setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this._changed();
    this._emit("status", status);
  }

  _changed() {
    this._snapshot = null;
    this._emit("update");
  }

  async _open() {
    if (this._stopped) return;
    if (this._claim !== null) {
      const claim = await this._claim;
      this._claim = null;
      if (this._stopped) {
        claim.release();
        return;
      }
      this._sync.client = claim.id;
      this._releaseClient = claim.release;
    }
    if (this._needToken) {
      try {
        this._sync.token = await this._getToken();
        this._needToken = false;
      } catch (err) {
        this._emit("error", err);
        this._schedule(1006);
        return;
      }
      if (this._stopped) return;
    }
    this._setStatus(this._welcomes === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (err) {
      this._emit("error", err);
      this._schedule(1006);
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      this._sync.connect();
      this._flush();
    };
    ws.onmessage = (ev) => {
      if (this._ws === ws) this._frame(ws, ev.data);
    };
    // Browsers fire error then close; Node 20's WebSocket may fire only error when the
    // server is down. Whichever comes first ends this attempt; the other is ignored.
    ws.onclose = (ev) => this._lost(ws, ev.code || 1006, ev.reason || "");
    ws.onerror = () => this._lost(ws, 1006, "connection failed");
  }

  _frame(ws, data) {
    if (typeof data === "string") {
      this._fail(ws, new ProtocolError("text frame from the server"));
      return;
    }
    const bytes = ArrayBuffer.isView(data)
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array(data);
    this.traffic.frames += 1;
    this.traffic.bytes += bytes.byteLength;
    // The frame is decoded and checked whole before any of it takes effect.
    const messages = [];
    const sizes = [];
    try {
      let at = 0;
      for (const m of this._decoder.decodeMulti(bytes)) {
        const pos = this._decoder.pos ?? bytes.byteLength;
        if (checkServerMessage(m)) {
          messages.push(m);
          sizes.push(pos - at);
        }
        at = pos;
      }
    } catch (err) {
      this._fail(ws, err instanceof ProtocolError ? err : new ProtocolError(`bad frame: ${err.message}`));
      return;
    }
    try {
      messages.forEach((m, i) => this._message(m, sizes[i]));
      this._flush();
    } catch (err) {
      this._fail(ws, err);
      return;
    }
    this._badFrames = 0;
  }

  _message(m, size) {
    const sync = this._sync;
    const watched = this._watchers.size > 0;
    if (watched && m[0] === DIFF && m[1] === sync.seq + 1 && sync.state !== null && Array.isArray(m[2])) {
      this._watchers.before(sync.state, m[2].map((op) => (Array.isArray(op) && Array.isArray(op[1]) ? changedPath(op) : [])));
    } else if (watched && m[0] === SNAPSHOT) {
      this._watchers.before(sync.state, null);
    }
    sync.receive(m);
    for (const event of sync.takeEvents()) this._event(event, size);
    if (sync.stateKind === "resyncing" || sync.stateKind === "live") this._setStatus(sync.stateKind);
  }

  _event(event, size) {
    switch (event.type) {
      case "welcome": {
        const w = event.welcome;
        this.lastSync = w.sync;
        /** The largest message the server accepts (WELCOME's max_message), or null. */
        this.maxMessage = Number.isInteger(w.max_message) && w.max_message > 0 ? w.max_message : null;
        this._backoff.welcomed(now());
        if (this._welcomes++ > 0) this.reconnects += 1;
        this._readyResolve(w);
        this._setStatus(w.sync === "snapshot" ? "syncing" : "live");
        this._changed();
        this._emit("welcome", w);
        break;
      }
      case "snapshot":
        this._watchers.after(this.state);
        this._changed();
        this._emit("snapshot", event.state, event.epoch, event.seq);
        break;
      case "change":
        this._watchers.after(this.state);
        this._changed();
        this._emit("change", event.ops, event.seq, size);
        break;
      case "ack":
      case "rejected": {
        const waiter = this._acts.get(event.aid);
        this._acts.delete(event.aid);
        if (!waiter) break;
        if (event.type === "ack") waiter.resolve(event);
        else waiter.reject(new StatecastError(event.code, event.message, { aid: event.aid }));
        break;
      }
      case "notice":
        this._emit("error", new StatecastError(event.code, event.message));
        break;
      default:
        break;
    }
  }

  _flush() {
    const ws = this._ws;
    const out = this._sync.takeOutgoing();
    if (!ws || ws.readyState !== 1 || out.length === 0) return;
    const parts = out.map((m) => encode(m, { ignoreUndefined: true }));
    if (parts.length === 1) {
      ws.send(parts[0]);
      return;
    }
    const frame = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    let at = 0;
    for (const p of parts) {
      frame.set(p, at);
      at += p.byteLength;
    }
    ws.send(frame);
  }

  /**
   * The server broke the contract: drop this connection and start again from a SNAPSHOT.
   * After MAX_BAD_FRAMES such frames in a row (a state this client cannot hold comes back
   * with every SNAPSHOT) it stops with an error instead of reconnecting in a loop.
   */
  _fail(ws, err) {
    this._badFrames += 1;
    if (this._badFrames >= MAX_BAD_FRAMES) {
      const stop = new StatecastError(
        "malformed",
        `${this._badFrames} frames in a row could not be applied (last: ${err.message}): stopped rather than reconnect in a loop`,
      );
      this._stop(1006, err.message, stop);
      return;
    }
    this._emit("error", err);
    this._sync.forgetState();
    this._lost(ws, 1006, err.message);
  }

  _lost(ws, code, reason) {
    if (this._ws !== ws) return;
    this._ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close();
    } catch {
      // already closing
    }
    this._sync.connectionLost();
    this.closeCode = code;
    if (this._stopped) return;
    if (code === 4001 && this._getToken !== null && this._reconnect) {
      this._needToken = true;
      this._schedule(code);
      return;
    }
    if (!this._reconnect || !RETRYABLE_CLOSE_CODES.has(code)) {
      const err = new StatecastError(code === 4009 ? "taken_over" : "closed", `closed by the server: ${code} ${reason}`.trim(), { closeCode: code });
      this._stop(code, reason, err);
      return;
    }
    this._schedule(code);
  }

  /** The URL of the current (or next) connection. */
  get url() {
    return this.urls[this._urlIndex];
  }

  _schedule(code) {
    if (this._stopped) return;
    // Another node of the cluster may be up where this one is not.
    this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    this._setStatus(this._welcomes === 0 ? "connecting" : "reconnecting");
    const delay = this._backoff.delay(code, now(), Math.random());
    this._timer = setTimeout(() => this._retryNow(), delay);
  }

  /**
   * The network came back. A socket opened before it went may be dead without knowing it:
   * a browser keeps it open, receiving nothing, until TCP gives up minutes later. Start
   * again at once and resume; if the old socket was fine after all, a replay costs little.
   * A wait after close 4029 is not cut short: the server asked for it, whatever the network.
   */
  _networkBack() {
    if (!this._reconnect) return;
    if (this._ws === null && this.closeCode === 4029) return;
    if (this._ws !== null && this._ws.readyState === 1) this._lost(this._ws, 1006, "the network changed");
    this._retryNow();
  }

  _retryNow() {
    if (this._stopped || this._ws !== null || this._timer === null) return;
    clearTimeout(this._timer);
    this._timer = null;
    this._open();
  }

  _stop(code, reason, err) {
    if (this._stopped) return;
    this._stopped = true;
    this._stopError = err;
    this.closeCode = code;
    clearTimeout(this._timer);
    this._timer = null;
    globalThis.removeEventListener?.("online", this._online);
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000);
      } catch {
        // already closed
      }
    }
    this._sync.close();
    this._releaseClient();
    this._readyReject(err);
    for (const waiter of this._acts.values()) waiter.reject(err);
    this._acts.clear();
    this._setStatus("closed");
    if (code !== 1000) this._emit("error", err);
  }
}

/**
 * Connect to a room; returns its handle at once (`await room.ready` for the WELCOME). `url` may
 * be a list: the same room on each node of a cluster, tried in turn whenever a connection ends.
 */
export function connect(url, options = {}) {
  return new Room(url, options);
}
