// server/web/sync.js against the sync vectors generated from protocol/sync.py.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { checkServerMessage, ClientSync, ProtocolError } from "../../server/web/sync.js";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));

/** The events in the vectors' form (protocol/sync.py's events, reduced to what both share). */
function normal(e) {
  switch (e.type) {
    case "welcome":
      return { type: "welcome", sync: e.welcome.sync, acked: e.welcome.acked };
    case "snapshot":
      return { type: "snapshot", epoch: e.epoch, seq: e.seq };
    case "change":
      return { type: "change", seq: e.seq, ops: e.ops };
    case "ack":
      return { type: "ack", aid: e.aid, seq: e.seq, answer: e.answer, answerKnown: e.answerKnown };
    case "rejected":
      return { type: "rejected", aid: e.aid, code: e.code };
    default:
      return { type: "notice", code: e.code };
  }
}

for (const script of vectors.sync) {
  test(`sync vector: ${script.name}`, () => {
    const sync = new ClientSync({
      role: script.options.role ?? "agent",
      client: script.options.client ?? null,
      view: script.options.view ?? null,
    });
    script.steps.forEach((step, i) => {
      const where = `step ${i}: ${JSON.stringify(step.do)}`;
      let aid;
      let error;
      try {
        if (step.do === "connect") sync.connect();
        else if (step.do === "lost") sync.connectionLost();
        else if (step.do[0] === "act") aid = sync.act(step.do[1], step.do[2]);
        else if (step.do[0] === "set_view") sync.setView(step.do[1]);
        else if (checkServerMessage(step.do)) sync.receive(structuredClone(step.do));
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        error = "protocol";
      }
      assert.equal(error, step.error, where);
      if (error) return;
      if ("aid" in step) assert.equal(aid, step.aid, where);
      assert.deepEqual(sync.takeOutgoing(), step.out, where);
      assert.deepEqual(sync.takeEvents().map(normal), step.events, where);
      const { kind, epoch, seq, state, pending } = step.after;
      assert.deepEqual(
        { kind: sync.stateKind, epoch: sync.epoch, seq: sync.seq, state: sync.state, pending: sync.pending },
        { kind, epoch, seq, state, pending },
        where,
      );
    });
  });
}

test("stats count applied diffs, duplicates and gaps", () => {
  const sync = new ClientSync({ role: "spectator" });
  sync.connect();
  for (const m of [
    [2, { epoch: "e-000000", seq: 0, role: "spectator", client: null, acked: 0, sync: "snapshot" }],
    [3, "e-000000", 0, {}],
    [5, 1, [[0, ["a"], 1]]],
    [5, 1, [[0, ["a"], 1]]],
    [5, 3, [[0, ["a"], 3]]],
  ]) {
    sync.receive(m);
  }
  assert.deepEqual(sync.stats, { diffs: 1, duplicates: 1, gaps: 1, patches: 0 });
});

test("a spectator cannot act and nobody acts before WELCOME", () => {
  assert.throws(() => new ClientSync({ role: "spectator" }).act("x", null), ProtocolError);
  assert.throws(() => new ClientSync({ role: "agent" }).act("x", null), ProtocolError);
});
