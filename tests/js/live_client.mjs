// statecast.js in Node against a real server (run by tests/js/test_node_live.py).
// Node 20's WebSocket needs --experimental-websocket; it fires only "error" when the
// server is down, which is what the first scenario starts with.
import { connect } from "../../server/web/statecast.js";

const [url] = process.argv.slice(2);
const out = {};

// The server is not up yet: attempts fail with only "error" until it is.
let attempts = 0;
class Counted extends WebSocket {
  constructor(target) {
    super(target);
    attempts += 1;
    console.error(`attempt ${attempts}`);
  }
}
const agent = connect(url, {
  role: "agent",
  client: "node-1",
  reconnect: { baseDelay: 20, maxDelay: 100 },
  WebSocket: Counted,
});
await agent.ready;
out.attemptsBeforeUp = attempts - 1;
out.seq = await agent.act("patch", [[0, ["list"], []], [0, ["big"], 2 ** 53 - 1]]);
try {
  await agent.act("patch", [[1, ["missing"]]]);
} catch (err) {
  out.rejected = err.code;
}
const pending = [];
for (let i = 0; i < 10; i++) pending.push(agent.act("patch", [[2, ["list", -1], i]]));
agent.drop();
out.outcomes = await Promise.all(pending);
out.reconnects = agent.reconnects;
out.state = agent.state;
agent.close();

// Away while 60 diffs change one entry: back, the spectator gets one PATCH (§5.11).
const room = url.replace("/rooms/from-node", "/rooms/patch-node");
let away = false;
class Gated extends WebSocket {
  constructor(target) {
    super(away ? "ws://127.0.0.1:9/nothing-listens-here" : target);
  }
}
const writer = connect(room, { role: "agent", client: "node-2" });
await writer.ready;
const items = {};
for (let i = 0; i < 50; i++) items[`i${i}`] = { n: 0, title: "an item with a title" };
await writer.act("patch", [[0, ["items"], items]]);
const watcher = connect(room, {
  role: "spectator",
  reconnect: { baseDelay: 20, maxDelay: 50 },
  WebSocket: Gated,
});
await watcher.ready;
const changes = [];
watcher.on("change", (ops, seq) => changes.push({ seq, ops: ops.length }));
away = true;
watcher.drop();
let head = 0;
for (let i = 1; i <= 60; i++) head = await writer.act("patch", [[0, ["items", "i3", "n"], i]]);
away = false;
while (watcher.seq < head) await new Promise((resolve) => setTimeout(resolve, 20));
out.patch = {
  lastSync: watcher.lastSync,
  patches: watcher.stats.patches,
  changes,
  same: JSON.stringify(watcher.state) === JSON.stringify(writer.state),
};
watcher.close();
writer.close();
console.log(JSON.stringify(out));
