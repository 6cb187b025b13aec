// statecast.js's connection handling, over a scripted WebSocket: retries, tokens, close codes,
// callbacks that throw, re-sent actions, watchers and the React store pair. (The same client
// runs against a real server in Chromium: tests/browser/.)
import assert from "node:assert/strict";
import { test } from "node:test";

import { connect } from "../../server/web/statecast.js";
import { decodeMulti, encode } from "../../server/web/vendor/msgpack/index.mjs";

const E = "epoch-test";

/** A WebSocket whose server side the test plays: it records what the client sends. */
class Scripted {
  static sockets = [];
  static plan = []; // per connection attempt: "open" | "error-only" | "refuse"
  static onHello = null; // (socket) => void: the server's answer to each HELLO, if scripted

  constructor(url) {
    this.url = url;
    this.at = performance.now();
    this.readyState = 0;
    this.sent = [];
    this.closed = null;
    Scripted.sockets.push(this);
    const how = Scripted.plan.shift() ?? "open";
    setTimeout(() => {
      if (how === "open") {
        this.readyState = 1;
        this.onopen?.();
      } else if (how === "error-only") {
        this.readyState = 3;
        this.onerror?.({});
      } else {
        this.readyState = 3;
        this.onerror?.({});
        this.onclose?.({ code: 1006, reason: "" });
      }
    }, 1);
  }

  send(bytes) {
    const first = this.sent.length === 0;
    this.sent.push(...decodeMulti(bytes));
    if (first && Scripted.onHello) setTimeout(() => Scripted.onHello?.(this), 0);
  }

  close(code) {
    this.closed = code ?? 1005;
    this.readyState = 3;
  }

  /** The server sends these messages in one frame. */
  deliver(...messages) {
    const parts = messages.map((m) => encode(m));
    const frame = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      frame.set(p, at);
      at += p.length;
    }
    this.onmessage?.({ data: frame.buffer });
  }

  /** The server closes the connection. */
  end(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

async function until(check, what) {
  for (let i = 0; i < 400; i++) {
    if (check()) return;
    await tick(5);
  }
  assert.fail(`timed out waiting for ${what}`);
}

function fresh(plan = []) {
  Scripted.sockets = [];
  Scripted.plan = plan;
  Scripted.onHello = null;
}

const last = () => Scripted.sockets[Scripted.sockets.length - 1];
const welcome = (sync, seq, extra = {}) => [
  2,
  { epoch: E, seq, role: "agent", client: "c1", acked: 0, sync, ...extra },
];

async function joined(options = {}, state = {}) {
  const room = connect("ws://test/rooms/r", { WebSocket: Scripted, client: "c1", ...options });
  await until(() => last()?.sent.length === 1, "HELLO");
  last().deliver(welcome("snapshot", 0, { role: options.role ?? "agent" }), [3, E, 0, state]);
  await room.ready;
  return room;
}

test("a failed attempt is retried whether the runtime fires close or only error", async () => {
  fresh(["error-only", "refuse", "open"]);
  const room = connect("ws://test/rooms/r", {
    WebSocket: Scripted,
    role: "spectator",
    reconnect: { baseDelay: 1, maxDelay: 5 },
  });
  await until(() => Scripted.sockets.length === 3 && last().sent.length === 1, "third attempt");
  last().deliver(welcome("snapshot", 4, { role: "spectator", client: null }), [3, E, 4, { x: 1 }]);
  await room.ready;
  assert.equal(room.status, "live");
  assert.deepEqual(room.state, { x: 1 });
  room.close();
});

test("resume sends (epoch, seq) and re-sends pending actions with their original aids", async () => {
  fresh();
  const room = await joined({ reconnect: { baseDelay: 1, maxDelay: 2 } });
  const first = room.act("patch", [[0, ["a"], 1]]);
  const second = room.act("patch", [[0, ["b"], 2]]);
  await until(() => last().sent.length === 3, "two ACTIONs");
  assert.deepEqual(last().sent.slice(1).map((m) => m[1]), [1, 2]);
  last().deliver([5, 1, [[0, ["a"], 1]]]);
  last().end(1006);
  await until(() => Scripted.sockets.length === 2 && last().sent.length >= 1, "reconnect");
  assert.deepEqual(last().sent[0], [1, { v: 1, role: "agent", client: "c1", resume: [E, 1], answers: true, patch: true, view: true }]);
  last().deliver(welcome("current", 1, { acked: 1 }));
  // The last aid the room processed goes again too: the room answers it, applying nothing.
  await until(() => last().sent.length === 3, "re-sent ACTIONs");
  assert.deepEqual(last().sent.slice(1), [[4, 1, "patch", [[0, ["a"], 1]]], [4, 2, "patch", [[0, ["b"], 2]]]]);
  last().deliver([7, 1, null], [5, 2, [[0, ["b"], 2]]], [7, 2, 2]);
  assert.equal(await first, null); // processed while away: its outcome is not repeated
  assert.equal(await second, 2);
  assert.equal(room.reconnects, 1);
  assert.equal(room.lastSync, "current");
  assert.deepEqual(room.state, { a: 1, b: 2 });
  room.close();
});

test("call() resolves with the handler's answer, again after a reconnect; an earlier one's is lost", async () => {
  fresh();
  const room = await joined({ reconnect: { baseDelay: 1, maxDelay: 2 } });
  const claimed = room.call("claim", null);
  await until(() => last().sent.length === 2, "ACTION");
  last().deliver([5, 1, [[0, ["t1"], "c1"]]], [7, 1, 1, { task: "t1" }]);
  assert.deepEqual(await claimed, { task: "t1" });
  const lost = room.call("claim", null);
  const again = room.call("claim", null);
  const plain = room.act("claim", null);
  await until(() => last().sent.length === 5, "three ACTIONs");
  last().end(1006);
  await until(() => Scripted.sockets.length === 2 && last().sent.length >= 1, "reconnect");
  last().deliver(welcome("current", 1, { acked: 3 }));
  await until(() => last().sent.length === 3, "re-sent ACTIONs");
  assert.deepEqual(last().sent.slice(1).map((m) => m[1]), [3, 4]);
  last().deliver([7, 3, null, "t3"], [7, 4, 2, null]);
  await assert.rejects(lost, (err) => err.code === "answer_lost" && err.aid === 2);
  assert.equal(await again, "t3");
  assert.equal(await plain, 2);
  room.close();
});

test("a rejected action rejects with its ERROR code; a spectator cannot act", async () => {
  fresh();
  const room = await joined();
  const refused = room.act("patch", [[1, ["nope"]]]);
  await until(() => last().sent.length === 2, "ACTION");
  last().deliver([8, 1, "invalid", "del: no key 'nope'"]);
  await assert.rejects(refused, (err) => err.code === "invalid" && err.aid === 1);
  room.close();
  fresh();
  const spectator = await joined({ role: "spectator", client: null });
  await assert.rejects(spectator.act("patch", []), (err) => err.code === "forbidden");
  spectator.close();
});

test("getToken is called again after 4001, and the fresh token is sent", async () => {
  fresh();
  let n = 0;
  const room = connect("ws://test/rooms/r", {
    WebSocket: Scripted,
    role: "spectator",
    getToken: async () => `token-${++n}`,
    reconnect: { baseDelay: 1, maxDelay: 2 },
  });
  await until(() => last()?.sent.length === 1, "HELLO");
  assert.equal(last().sent[0][1].token, "token-1");
  last().end(4001, "token expired");
  await until(() => Scripted.sockets.length === 2 && last().sent.length === 1, "second HELLO");
  assert.equal(last().sent[0][1].token, "token-2");
  room.close();
});

test("4009 stops for good: no retry, pending actions and ready reject", async () => {
  fresh();
  const room = await joined();
  const pending = room.act("patch", []);
  await until(() => last().sent.length === 2, "ACTION");
  const errors = [];
  room.on("error", (err) => errors.push(err));
  last().end(4009, "taken over");
  await assert.rejects(pending, (err) => err.code === "taken_over" && err.closeCode === 4009);
  // An action asked for afterwards says why too, not just that the client stopped.
  await assert.rejects(room.act("patch", []), (err) => err.code === "taken_over" && err.closeCode === 4009);
  await tick(30);
  assert.equal(Scripted.sockets.length, 1);
  assert.equal(room.status, "closed");
  assert.equal(errors.length, 1);
  fresh();
  const refused = connect("ws://test/rooms/r", { WebSocket: Scripted, role: "spectator" });
  await until(() => last()?.sent.length === 1, "HELLO");
  last().end(4003, "not this room");
  await assert.rejects(refused.ready, (err) => err.closeCode === 4003);
});

test("close 1012 reconnects at once", async () => {
  fresh();
  const room = await joined({ reconnect: { baseDelay: 60_000, maxDelay: 60_000 } });
  last().end(1012, "leaving");
  await until(() => Scripted.sockets.length === 2, "an immediate reconnect");
  room.close();
});

test("closed with 4029 again and again, the client waits rateLimitedDelay before each retry", async () => {
  fresh();
  const floor = 100;
  const room = await joined({ reconnect: { baseDelay: 1, maxDelay: 5, rateLimitedDelay: floor } });
  // Every later connection is welcomed and at once closed 4029: a WELCOME must not
  // reset the backoff, or the client would be back within a few ms each time.
  Scripted.onHello = (ws) => {
    ws.deliver(welcome("current", 0));
    ws.end(4029, "rate limit exceeded repeatedly");
  };
  const start = performance.now();
  last().end(4029, "rate limit exceeded repeatedly");
  await until(() => Scripted.sockets.length >= 4, "three retries");
  const span = 500;
  await tick(span);
  const retries = Scripted.sockets.filter((ws) => ws.at > start && ws.at <= start + span).length;
  assert.ok(retries <= span / floor + 1, `${retries} retries within ${span} ms`);
  assert.ok(Scripted.sockets.every((ws) => ws.at <= start || ws.sent.length === 1), "each retry sent its HELLO");
  assert.equal(room.closeCode, 4029);
  room.close();
});

test("an exception in a callback never breaks the client's state", async () => {
  fresh();
  const room = await joined({}, { n: 0 });
  const errors = [];
  room.on("error", (err) => errors.push(err.message));
  room.on("change", () => {
    throw new Error("user bug");
  });
  room.watch("n", () => {
    throw new Error("watch bug");
  });
  last().deliver([5, 1, [[0, ["n"], 1]]], [5, 2, [[0, ["n"], 2]]]);
  assert.equal(room.seq, 2);
  assert.deepEqual(room.state, { n: 2 });
  assert.deepEqual(errors, ["watch bug", "user bug", "watch bug", "user bug"]);
  room.close();
});

test("duplicates are ignored and a gap asks RESYNC once", async () => {
  fresh();
  const room = await joined({}, { n: 0 });
  last().deliver([5, 1, [[0, ["n"], 1]]], [5, 1, [[0, ["n"], 9]]], [5, 3, [[0, ["n"], 3]]]);
  assert.deepEqual(last().sent.at(-1), [6, E, 1]);
  assert.equal(room.status, "resyncing");
  last().deliver([5, 2, [[0, ["n"], 2]]], [5, 3, [[0, ["n"], 3]]]);
  assert.equal(room.status, "live");
  assert.deepEqual(room.stats.duplicates, 1);
  assert.deepEqual(room.state, { n: 3 });
  room.close();
});

test("a malformed frame changes nothing and the client starts again from a SNAPSHOT", async () => {
  fresh();
  const room = await joined({ reconnect: { baseDelay: 1, maxDelay: 2 } }, { n: 0 });
  const errors = [];
  room.on("error", (err) => errors.push(err.name));
  last().deliver([5, 1, [[0, ["n"], 1]]], [3, E, 1, "not a map"]);
  assert.deepEqual(room.state, { n: 0 });
  await until(() => Scripted.sockets.length === 2 && last().sent.length === 1, "reconnect");
  assert.equal(last().sent[0][1].resume, undefined);
  assert.deepEqual(errors, ["ProtocolError"]);
  room.close();
});

test("watch calls back with (value, previous, path) only for matching changes", async () => {
  fresh();
  const room = await joined({}, { players: { ann: { hp: 3, x: 0 } }, other: 1 });
  const calls = [];
  const stop = room.watch("players/*/hp", (value, previous, path) => calls.push([value, previous, path]));
  last().deliver(
    [5, 1, [[0, ["players", "ann", "hp"], 2]]],
    [5, 2, [[0, ["players", "ann", "x"], 5]]],
    [5, 3, [[0, ["other"], 2]]],
    [5, 4, [[0, ["players", "bob"], { hp: 9 }]]],
    [5, 5, [[0, ["players", "ann", "hp"], 2]]],
    [5, 6, [[1, ["players", "ann"]]]],
  );
  assert.deepEqual(calls, [
    [2, 3, ["players", "ann", "hp"]],
    [9, undefined, ["players", "bob", "hp"]],
    [undefined, 2, ["players", "ann", "hp"]],
  ]);
  calls.length = 0;
  const list = [];
  room.watch("log/*", (value, previous, path) => list.push([value, previous, path]));
  last().deliver([5, 7, [[0, ["log"], ["a", "b"]]]], [5, 8, [[2, ["log", 0], "z"]]]);
  assert.deepEqual(list, [
    ["a", undefined, ["log", 0]],
    ["b", undefined, ["log", 1]],
    ["z", "a", ["log", 0]],
    ["a", "b", ["log", 1]],
    ["b", undefined, ["log", 2]],
  ]);
  stop();
  last().deliver([3, E, 20, { players: { ann: { hp: 1 } } }]);
  assert.deepEqual(calls, []);
  room.close();
});

test("subscribe/getSnapshot give React a new snapshot only after a change", async () => {
  fresh();
  const room = await joined({}, { n: 0 });
  let notified = 0;
  const unsubscribe = room.subscribe(() => notified++);
  const a = room.getSnapshot();
  assert.equal(room.getSnapshot(), a);
  last().deliver([5, 1, [[0, ["n"], 1]]]);
  const b = room.getSnapshot();
  assert.notEqual(b, a);
  assert.equal(b.seq, 1);
  assert.ok(notified >= 1);
  unsubscribe();
  room.close();
});

test("an agent without a client id gets one of its own, kept across reconnects", async () => {
  fresh();
  const one = connect("ws://test/rooms/r", { WebSocket: Scripted, reconnect: { baseDelay: 1, maxDelay: 2 } });
  const two = connect("ws://test/rooms/r", { WebSocket: Scripted });
  await until(() => Scripted.sockets.length === 2 && Scripted.sockets.every((s) => s.sent.length === 1), "HELLOs");
  const [a, b] = Scripted.sockets.map((s) => s.sent[0][1].client);
  assert.ok(a && b && a !== b);
  Scripted.sockets[0].end(1006);
  await until(() => Scripted.sockets.length === 3 && last().sent.length === 1, "reconnect");
  assert.equal(last().sent[0][1].client, a);
  one.close();
  two.close();
});

test("a frame handed over as a view into a larger buffer (a Node Buffer) decodes", async () => {
  fresh();
  const room = await joined({}, { n: 0 });
  const frame = encode([5, 1, [[0, ["n"], 1]]]);
  const pool = new Uint8Array(frame.length + 16).fill(0xc1); // 0xc1 is never valid msgpack
  pool.set(frame, 8);
  last().onmessage({ data: pool.subarray(8, 8 + frame.length) });
  assert.deepEqual(room.state, { n: 1 });
  room.close();
});

test("given several URLs, the client moves to the next one when a node refuses or leaves", async () => {
  fresh(["refuse", "open", "open"]);
  const urls = ["ws://a/rooms/r", "ws://b/rooms/r", "ws://c/rooms/r"];
  const room = connect(urls, { WebSocket: Scripted, client: "c1", reconnect: { baseDelay: 1, maxDelay: 2 } });
  await until(() => Scripted.sockets.length === 2 && last().sent.length === 1, "the second node");
  assert.deepEqual(Scripted.sockets.map((s) => s.url), urls.slice(0, 2));
  last().deliver(welcome("snapshot", 3), [3, E, 3, { x: 1 }]);
  await room.ready;
  assert.equal(room.url, urls[1]);
  const acting = room.act("patch", [[0, ["y"], 2]]);
  last().end(1012, "node stopping");
  await until(() => Scripted.sockets.length === 3 && last().sent.length >= 1, "the third node");
  assert.equal(last().url, urls[2]);
  const [hello, action] = last().sent;
  assert.deepEqual(hello[1].resume, [E, 3]); // resumes where it was, on another node
  assert.equal(action, undefined); // the action goes again after WELCOME
  last().deliver(welcome("current", 3));
  await until(() => last().sent.length === 2, "the action re-sent");
  assert.equal(last().sent[1][0], 4);
  last().deliver([5, 4, [[0, ["y"], 2]]], [7, last().sent[1][1], 4]);
  assert.equal(await acting, 4);
  room.close();
});

test("without a WebSocket implementation, connect() fails at once and says how to get one", async () => {
  const errors = [];
  const saved = Object.getOwnPropertyDescriptor(globalThis, "WebSocket");
  globalThis.WebSocket = undefined; // as on Node 20 without --experimental-websocket
  let room;
  try {
    room = connect("ws://test/rooms/r", { client: "c1" });
  } finally {
    if (saved) Object.defineProperty(globalThis, "WebSocket", saved);
    else delete globalThis.WebSocket;
  }
  room.on("error", (e) => errors.push(e));
  await assert.rejects(room.ready, (err) => err.code === "no_websocket" && /Node\.js 22/.test(err.message) && /--experimental-websocket/.test(err.message));
  assert.equal(room.status, "closed");
  assert.equal(errors.length, 1);
  await assert.rejects(room.act("patch", []), (err) => err.code === "no_websocket");
});

test("an action larger than WELCOME's max_message is refused locally and the session goes on", async () => {
  fresh();
  const room = connect("ws://test/rooms/r", { WebSocket: Scripted, client: "c1" });
  await until(() => last()?.sent.length === 1, "HELLO");
  last().deliver(welcome("snapshot", 0, { max_message: 65536 }), [3, E, 0, {}]);
  await room.ready;
  assert.equal(room.maxMessage, 65536);
  await assert.rejects(room.act("patch", [[0, ["big"], "x".repeat(70_000)]]), (err) => err.code === "too_large" && /65536/.test(err.message));
  assert.equal(last().sent.length, 1); // nothing was sent
  const small = room.act("patch", [[0, ["x"], 1]]);
  await until(() => last().sent.length === 2, "the small action");
  last().deliver([5, 1, [[0, ["x"], 1]]], [7, last().sent[1][1], 1]);
  assert.equal(await small, 1);
  room.close();
});

test("keys like __proto__ and constructor are held as own keys, never the prototype", async () => {
  fresh();
  const room = connect("ws://test/rooms/r", { WebSocket: Scripted, client: "c1" });
  await until(() => last()?.sent.length === 1, "HELLO");
  const state = JSON.parse('{"__proto__": {"polluted": 1}, "constructor": 2, "hasOwnProperty": 3}');
  last().deliver(welcome("snapshot", 4), [3, E, 4, state]);
  await room.ready;
  last().deliver([5, 5, [[0, ["__proto__", "x"], 2], [0, ["n"], JSON.parse('{"__proto__": 7}')]]]);
  await until(() => room.seq === 5, "the DIFF");
  assert.equal(room.status, "live");
  assert.equal(Scripted.sockets.length, 1); // no reconnect loop
  assert.deepEqual(Object.getOwnPropertyDescriptor(room.state, "__proto__").value, { polluted: 1, x: 2 });
  assert.equal(room.state.constructor, 2);
  assert.equal(Object.getOwnPropertyDescriptor(room.state.n, "__proto__").value, 7);
  assert.equal(({}).polluted, undefined);
  assert.equal(Object.getPrototypeOf(room.state), Object.prototype);
  room.close();
});

test("a frame that cannot be applied again and again stops the client instead of a reconnect loop", async () => {
  fresh();
  const errors = [];
  const room = connect("ws://test/rooms/r", { WebSocket: Scripted, client: "c1", reconnect: { baseDelay: 1, maxDelay: 2 } });
  room.on("error", (e) => errors.push(e));
  Scripted.onHello = (socket) => socket.onmessage?.({ data: new Uint8Array([0xc1]).buffer }); // never valid msgpack
  await assert.rejects(room.ready, (err) => err.code === "malformed" && /3 frames in a row/.test(err.message));
  assert.equal(room.status, "closed");
  assert.equal(Scripted.sockets.length, 3);
  assert.equal(errors.at(-1).code, "malformed");
});
