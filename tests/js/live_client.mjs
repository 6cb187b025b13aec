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
console.log(JSON.stringify(out));
