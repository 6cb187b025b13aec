"""Shared test vectors for the JS client, generated from protocol/ (``make vectors``).

``python -m tests.js.vectors`` prints them as JSON; tests/js/vectors.json is the
committed copy that ``node --test tests/js`` reads, and test_vectors.py checks that
the copy still equals what protocol/ generates. Two kinds:

* ``ops``: a state, a list of ops, and either the state after applying them
  (protocol/ops.py's apply_wire_ops) or the ERROR code they are refused with.
* ``sync``: a script of steps (connect, a server message, act, connection lost)
  played against protocol/sync.py's ClientSync, with what it sent, the events it
  raised and where it stands after each step.
* ``backoff``: connections welcomed and ended (with a close code, a time and a
  jitter) played against protocol/backoff.py's Backoff, with each wait and the
  attempt count. Times are in seconds here; the JS twin counts milliseconds.

Only values JSON carries exactly are used: no ints beyond ±(2^53 - 1) (JavaScript
has no such numbers) and no integral floats where Python's int/float split would
show (a path segment 1.0 is an int in JavaScript).
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import sys
from typing import Any

import msgpack

from statecast.protocol import ops
from statecast.protocol.backoff import Backoff
from statecast.protocol.errors import ProtocolViolation, Rejection
from statecast.protocol.sync import (
    ActionAcked,
    ActionRejected,
    Changed,
    ClientSync,
    Event,
    ServerNotice,
    StateReplaced,
    Welcomed,
)

SEED = 20261129
DEEP = {"d": 0}
for _ in range(63):
    DEEP = {"d": DEEP}

# (name, state, ops): hand-picked cases for every rule, then random ones.
OP_CASES: list[tuple[str, Any, Any]] = [
    ("set a new key", {}, [[0, ["a"], 1]]),
    ("set replaces", {"a": 1}, [[0, ["a"], {"b": [1, 2]}]]),
    ("set creates intermediate maps", {}, [[0, ["a", "b", "c"], True]]),
    ("set a list item", {"l": [1, 2, 3]}, [[0, ["l", 1], "x"]]),
    ("set a list item out of range", {"l": [1]}, [[0, ["l", 1], "x"]]),
    ("set a negative list index", {"l": [1]}, [[0, ["l", -1], "x"]]),
    ("set through a scalar", {"a": 1}, [[0, ["a", "b"], 2]]),
    ("set an int key in a map", {"m": {}}, [[0, ["m", 0], 2]]),
    ("set a str index in a list", {"l": [1]}, [[0, ["l", "0"], 2]]),
    ("set through a list to a map", {"l": [{"x": 1}]}, [[0, ["l", 0, "y"], 2]]),
    ("set through a missing list item", {"l": []}, [[0, ["l", 0, "y"], 2]]),
    ("del a key", {"a": 1, "b": 2}, [[1, ["a"]]]),
    ("del a missing key", {"a": 1}, [[1, ["b"]]]),
    ("del through a missing key", {}, [[1, ["a", "b"]]]),
    ("del a list item", {"l": [1, 2, 3]}, [[1, ["l", 0]]]),
    ("del a list item out of range", {"l": [1, 2, 3]}, [[1, ["l", 3]]]),
    ("ins at the front", {"l": [1, 2]}, [[2, ["l", 0], 0]]),
    ("ins in the middle", {"l": [1, 2]}, [[2, ["l", 1], 9]]),
    ("ins at len appends", {"l": [1, 2]}, [[2, ["l", 2], 3]]),
    ("ins at -1 appends", {"l": [1, 2]}, [[2, ["l", -1], 3]]),
    ("ins past the end", {"l": [1, 2]}, [[2, ["l", 3], 3]]),
    ("ins at -2", {"l": [1, 2]}, [[2, ["l", -2], 3]]),
    ("ins into a map", {"m": {}}, [[2, ["m", 0], 3]]),
    ("ins with a str index", {"l": []}, [[2, ["l", "0"], 3]]),
    ("ins through a missing key", {}, [[2, ["l", 0], 3]]),
    ("all or nothing", {"a": 1, "l": [1]}, [[0, ["a"], 2], [1, ["l", 0]], [1, ["zz"]]]),
    ("all or nothing with created maps", {}, [[0, ["x", "y"], 1], [1, ["l", 0]]]),
    ("later ops see earlier ones", {}, [[0, ["l"], []], [2, ["l", 0], "a"], [0, ["l", 0], "b"]]),
    ("an empty path", {}, [[0, [], 1]]),
    ("a path that is not a list", {}, [[0, "a", 1]]),
    ("a bool segment", {"l": [1]}, [[0, ["l", True], 1]]),
    ("a float segment", {"l": [1]}, [[0, ["l", 0.5], 1]]),
    ("a null segment", {}, [[0, [None], 1]]),
    ("an unknown op kind", {}, [[3, ["a"], 1]]),
    ("a bool op kind", {}, [[True, ["a"], 1]]),
    ("an op that is not a list", {}, ["a"]),
    ("an empty op", {}, [[]]),
    ("del with a value", {"a": 1}, [[1, ["a"], 1]]),
    ("set without a value", {}, [[0, ["a"]]]),
    ("ops that are not a list", {}, {"a": 1}),
    ("no ops", {"a": 1}, []),
    ("a __proto__ key", {}, [[0, ["__proto__"], {"polluted": True}]]),
    ("a __proto__ map on the way", {}, [[0, ["__proto__", "x"], 1]]),
    ("del a __proto__ key", {"__proto__": 1, "a": 2}, [[1, ["__proto__"]]]),
    ("a constructor key", {}, [[0, ["constructor"], 1], [0, ["toString", "x"], 2]]),
    ("an empty key", {}, [[0, [""], ""]]),
    ("unicode keys and values", {}, [[0, ["ключ", "🔑"], "värde ☃"]]),
    ("the largest safe ints", {}, [[0, ["a"], [2**53 - 1, -(2**53 - 1)]]]),
    ("floats", {}, [[0, ["f"], [1.5, -0.25, 1e300, 5e-324]]]),
    ("value 64 levels deep at the root", {}, [[0, ["a"], DEEP["d"]]]),
    ("value 64 levels deep under a key", {}, [[0, ["a"], DEEP]]),
    ("a path 64 long", {}, [[0, ["k"] * 64, 1]]),
    ("a path 65 long", {}, [[0, ["k"] * 65, 1]]),
    ("a state is not shared with the op", {}, [[0, ["a"], {"b": 1}], [0, ["a", "b"], 2]]),
]

KEYS = ["a", "b", "c", "list", "m"]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 2 or roll < 0.5:
        return rng.choice([None, True, False, 0, -3, 7, 2.5, -0.125, "", "s", "ü", 2**40])
    if roll < 0.75:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(KEYS): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def random_path(rng: random.Random, state: Any) -> list[Any]:
    """A path that mostly follows the state, and sometimes strays off it."""
    path: list[Any] = []
    node = state
    while True:
        if isinstance(node, dict) and node and rng.random() < 0.8:
            key = rng.choice([*node, rng.choice(KEYS)])
        elif isinstance(node, list) and rng.random() < 0.8:
            key = rng.randrange(-1, len(node) + 2)
        else:
            key = rng.choice([*KEYS, 0, 1])
        path.append(key)
        node = (
            node.get(key)
            if isinstance(node, dict) and isinstance(key, str)
            else (
                node[key]
                if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)
                else None
            )
        )
        if node is None or rng.random() < 0.35 or len(path) > 4:
            return path


def valid_op(rng: random.Random, state: dict[str, Any]) -> list[Any]:
    """An op that applies to ``state``: walk to a container, then change it in a valid way."""
    path: list[Any] = []
    node: Any = state
    while True:
        children = list(node) if isinstance(node, dict) else list(range(len(node)))
        inner = [c for c in children if isinstance(node[c], (dict, list))]
        if not inner or rng.random() < 0.5:
            break
        key = rng.choice(inner)
        path.append(key)
        node = node[key]
    if isinstance(node, dict):
        if node and rng.random() < 0.3:
            return [1, [*path, rng.choice(list(node))]]
        return [0, [*path, rng.choice([*node, *KEYS])], random_value(rng)]
    roll = rng.random()
    if node and roll < 0.3:
        return [1, [*path, rng.randrange(len(node))]]
    if node and roll < 0.6:
        return [0, [*path, rng.randrange(len(node))], random_value(rng)]
    return [2, [*path, rng.choice([-1, *range(len(node) + 1)])], random_value(rng)]


def random_cases(rng: random.Random, count: int) -> list[tuple[str, Any, Any]]:
    """Lists of ops, most built to apply and some strayed off the state (refused whole)."""
    cases = []
    for i in range(count):
        state = {k: random_value(rng) for k in rng.sample(KEYS, rng.randrange(1, 4))}
        running = copy.deepcopy(state)
        op_list: list[Any] = []
        for _ in range(rng.randrange(1, 5)):
            if rng.random() < 0.85:
                op = valid_op(rng, running)
            else:
                kind = rng.choice([0, 1, 2])
                path = random_path(rng, running)
                op = [kind, path] if kind == 1 else [kind, path, random_value(rng)]
            op_list.append(op)
            with contextlib.suppress(Rejection):  # a refused op leaves the state as it was
                ops.apply_wire_ops(running, [op])
        cases.append((f"random {i}", state, op_list))
    return cases


def op_vectors() -> list[dict[str, Any]]:
    out = []
    for name, state, raw in OP_CASES + random_cases(random.Random(SEED), 300):
        after = copy.deepcopy(state)
        vector: dict[str, Any] = {"name": name, "state": state, "ops": raw}
        try:
            ops.apply_wire_ops(after, raw)
        except Rejection as exc:
            vector["error"] = exc.code
        else:
            vector["result"] = after
        out.append(vector)
    return out


# --- sync ---------------------------------------------------------------------------------

E = "epoch-aaaa"
F = "epoch-bbbb"


def welcome(sync: str, seq: int = 0, acked: int = 0, epoch: str = E, **kw: Any) -> list[Any]:
    body = {"epoch": epoch, "seq": seq, "role": "agent", "client": "c1", "acked": acked}
    return [2, {**body, "sync": sync, **kw}]


SYNC_SCRIPTS: list[tuple[str, dict[str, Any], list[Any]]] = [
    (
        "join, snapshot, diffs, duplicates ignored",
        {"role": "spectator"},
        [
            "connect",
            [
                2,
                {
                    "epoch": E,
                    "seq": 2,
                    "role": "spectator",
                    "client": None,
                    "acked": 0,
                    "sync": "snapshot",
                },
            ],
            [3, E, 2, {"n": 2}],
            [5, 3, [[0, ["n"], 3]]],
            [5, 3, [[0, ["n"], 99]]],
            [5, 2, [[0, ["n"], 98]]],
            [5, 4, [[0, ["n"], 4], [0, ["m"], [1]]]],
        ],
    ),
    (
        "a gap sends one RESYNC and waits for the fill",
        {"role": "spectator"},
        [
            "connect",
            welcome("snapshot", 1),
            [3, E, 1, {"n": 1}],
            [5, 3, [[0, ["n"], 3]]],
            [5, 4, [[0, ["n"], 4]]],
            [5, 2, [[0, ["n"], 2]]],
            [5, 3, [[0, ["n"], 3]]],
            [5, 4, [[0, ["n"], 4]]],
            [5, 6, [[0, ["n"], 6]]],
            [3, E, 6, {"n": 6, "s": True}],
            [5, 7, [[0, ["n"], 7]]],
        ],
    ),
    (
        "resume by replay and current after a lost connection",
        {"client": "c1"},
        [
            "connect",
            welcome("snapshot", 0),
            [3, E, 0, {}],
            [5, 1, [[0, ["a"], 1]]],
            "lost",
            "connect",
            welcome("replay", 3, acked=0),
            [5, 2, [[0, ["a"], 2]]],
            [5, 3, [[0, ["a"], 3]]],
            "lost",
            "connect",
            welcome("current", 3),
            [5, 4, [[1, ["a"]]]],
        ],
    ),
    (
        "a stale epoch gets a snapshot",
        {"client": "c1"},
        [
            "connect",
            welcome("snapshot", 5),
            [3, E, 5, {"x": 1}],
            "lost",
            "connect",
            welcome("snapshot", 2, epoch=F),
            [3, F, 2, {"y": 2}],
            [5, 3, [[0, ["y"], 3]]],
        ],
    ),
    (
        "an unsolicited snapshot replaces the state",
        {"client": "c1"},
        [
            "connect",
            welcome("snapshot", 1),
            [3, E, 1, {"a": 1}],
            [3, E, 9, {"b": 9}],
            [5, 10, [[0, ["b"], 10]]],
        ],
    ),
    (
        "acts: ack, rejection, notice, and re-sent after a reconnect with their aids",
        {"client": "c1"},
        [
            "connect",
            welcome("snapshot", 0, acked=4),
            [3, E, 0, {}],
            ["act", "patch", [[0, ["a"], 1]]],
            [5, 1, [[0, ["a"], 1]]],
            [7, 5, 1],
            ["act", "patch", [[1, ["zz"]]]],
            [8, 6, "invalid", "del: no key 'zz'"],
            [8, None, "rate_limited", "slow down"],
            ["act", "patch", [[0, ["b"], 1]]],
            ["act", "patch", [[0, ["c"], 1]]],
            ["act", "noop", None],
            "lost",
            ["act", "patch", [[0, ["d"], 1]]],
            "connect",
            welcome("replay", 2, acked=8),
            [5, 2, [[0, ["b"], 1]]],
            [5, 3, [[0, ["c"], 1]]],
            [7, 9, 3],
            [7, 10, None],
            [7, 11, 4],
        ],
    ),
    (
        "answers: an ACK's fourth element; after a reconnect the last aid is sent again and "
        "the earlier ones' answers are lost",
        {"client": "c1"},
        [
            "connect",
            welcome("snapshot", 0),
            [3, E, 0, {}],
            ["act", "claim", None],
            [5, 1, [[0, ["t1"], "c1"]]],
            [7, 1, 1, "t1"],
            ["act", "claim", None],
            ["act", "claim", None],
            ["act", "claim", None],
            "lost",
            "connect",
            welcome("current", 1, acked=3),
            [7, 3, None, {"task": "t3"}],
            [7, 4, None, None, "ignored"],
        ],
    ),
    (
        "patch: a resume answered by the net change, applied as one change; a del of what is "
        "not there changes nothing; a PATCH not past our seq is ignored, one from an older "
        "seq applies, one from a later seq is a protocol error",
        {"client": "c1"},
        [
            "connect",
            welcome("snapshot", 0),
            [3, E, 0, {"items": {"a": {"n": 0}, "b": {"n": 0}}, "log": [1]}],
            "lost",
            "connect",
            welcome("patch", 40),
            [
                9,
                E,
                0,
                40,
                [
                    [0, ["items", "a", "n"], 7],
                    [1, ["items", "b"]],
                    [1, ["gone", "x"]],
                    [0, ["log"], [1, 2]],
                    [0, ["new", "deep"], {}],
                ],
            ],
            [5, 41, [[0, ["items", "a", "n"], 8]]],
            [9, E, 30, 41, [[0, ["items", "a", "n"], 8]]],
            [9, E, 39, 45, [[0, ["items", "a", "n"], 9], [1, ["items", "b"]]]],
            [9, E, 46, 50, []],
        ],
    ),
    (
        "an ACK for an aid never sent is ignored",
        {"client": "c1"},
        ["connect", welcome("snapshot", 0), [3, E, 0, {}], [7, 42, 0]],
    ),
    (
        "a DIFF before the SNAPSHOT is a protocol error",
        {"client": "c1"},
        ["connect", welcome("snapshot", 0), [5, 1, [[0, ["a"], 1]]]],
    ),
    (
        "a DIFF that does not apply is a protocol error",
        {"client": "c1"},
        ["connect", welcome("snapshot", 0), [3, E, 0, {}], [5, 1, [[1, ["nope"]]]]],
    ),
    (
        "replay for a state not held is a protocol error",
        {"client": "c1"},
        ["connect", welcome("replay", 3)],
    ),
    (
        "WELCOME twice is a protocol error",
        {"client": "c1"},
        ["connect", welcome("current", 0, epoch=E), welcome("current", 0)],
    ),
    (
        "a malformed WELCOME is a protocol error",
        {"client": "c1"},
        [
            "connect",
            [
                2,
                {
                    "epoch": E,
                    "seq": -1,
                    "role": "agent",
                    "client": None,
                    "acked": 0,
                    "sync": "snapshot",
                },
            ],
        ],
    ),
    (
        "a malformed SNAPSHOT is a protocol error",
        {"client": "c1"},
        ["connect", welcome("snapshot", 0), [3, E, 0, [1, 2]]],
    ),
    (
        "an unknown message type is skipped",
        {"client": "c1"},
        ["connect", welcome("snapshot", 0), [99, "later"], [3, E, 0, {"ok": True}]],
    ),
    (
        "a view: VIEW_DIFFs name the seq they follow, duplicates ignored",
        {"role": "spectator", "view": [["players", "p7"], ["board"], ["board", "x"]]},
        [
            "connect",
            welcome("snapshot", 4, view=[["board"], ["players", "p7"]]),
            [3, E, 4, {"board": {"a": 1}}],
            [10, 2, 6, [[0, ["board", "b"], 2]]],
            [10, 6, 9, [[1, ["board", "zz"]], [0, ["players", "p7"], {"hp": 3}]]],
            [10, 6, 9, [[0, ["board", "b"], 99]]],
        ],
    ),
    (
        "a view: a VIEW_DIFF after a lost one asks with RESYNC, a PATCH fills the gap",
        {"role": "spectator", "view": [["board"]]},
        [
            "connect",
            welcome("snapshot", 4, view=[["board"]]),
            [3, E, 4, {"board": {}}],
            [10, 7, 9, [[0, ["board", "b"], 2]]],
            [10, 9, 12, [[0, ["board", "c"], 3]]],
            [9, E, 4, 12, [[0, ["board"], {"b": 2, "c": 3}]]],
            [10, 12, 13, [[1, ["board", "c"]]]],
        ],
    ),
    (
        "a view: VIEW and VIEW_SET; a view changed while away is not resumed",
        {"role": "spectator", "view": [["board"]]},
        [
            "connect",
            welcome("snapshot", 4, view=[["board"]]),
            [3, E, 4, {"board": {"a": 1}}],
            ["set_view", [["players"]]],
            [12, 8, [["players"]], [[1, ["board"]], [0, ["players"], {"p1": 1}]]],
            "lost",
            ["set_view", None],
            "connect",
            welcome("snapshot", 9, view=True),
            [3, E, 9, {"players": {"p1": 1}, "board": {}}],
            "lost",
            "connect",
        ],
    ),
    (
        "a view set while the HELLO is on its way is asked for after WELCOME",
        {"role": "spectator", "view": [["board"]]},
        [
            "connect",
            ["set_view", [["players"]]],
            welcome("snapshot", 4, view=[["board"]], view_tag="t-board"),
            [3, E, 4, {"board": {"a": 1}}],
            [12, 4, [["players"]], [[1, ["board"]]], "t-players"],
            "lost",
            "connect",
        ],
    ),
    (
        "a malformed VIEW_DIFF is a protocol error",
        {"role": "spectator", "view": [["board"]]},
        ["connect", welcome("snapshot", 0), [3, E, 0, {}], [10, 5, 5, []]],
    ),
]


def _event(e: Event) -> dict[str, Any]:
    if isinstance(e, Welcomed):
        return {"type": "welcome", "sync": e.welcome.sync, "acked": e.welcome.acked}
    if isinstance(e, StateReplaced):
        return {"type": "snapshot", "epoch": e.epoch, "seq": e.seq}
    if isinstance(e, Changed):
        return {"type": "change", "seq": e.seq, "ops": e.ops}
    if isinstance(e, ActionAcked):
        return {
            "type": "ack",
            "aid": e.aid,
            "seq": e.seq,
            "answer": e.answer,
            "answerKnown": e.answer_known,
        }
    if isinstance(e, ActionRejected):
        return {"type": "rejected", "aid": e.aid, "code": e.code}
    if isinstance(e, ServerNotice):
        return {"type": "notice", "code": e.code}
    raise TypeError(e)


def _unpack(frames: list[bytes]) -> list[Any]:
    out = []
    for frame in frames:
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(frame)
        out.extend(unpacker)
    return out


def sync_vectors() -> list[dict[str, Any]]:
    out = []
    for name, options, script in SYNC_SCRIPTS:
        sync = ClientSync(
            role=options.get("role", "agent"),
            client=options.get("client"),
            view=options.get("view"),
        )
        steps = []
        for step in script:
            result: dict[str, Any] = {}
            try:
                if step == "connect":
                    sync.connect()
                elif step == "lost":
                    sync.connection_lost()
                elif step[0] == "act":
                    result["aid"] = sync.act(step[1], step[2])
                elif step[0] == "set_view":
                    sync.set_view(step[1])
                else:
                    sync.receive_frame(msgpack.packb(step, use_bin_type=True))
            except ProtocolViolation:
                result["error"] = "protocol"
            result["out"] = _unpack(sync.data_to_send())
            result["events"] = [_event(e) for e in sync.events_received()]
            result["after"] = {
                "kind": sync.state_kind.value,
                "epoch": sync.epoch,
                "seq": sync.seq,
                "state": copy.deepcopy(sync.state),
                "pending": sync.pending,
            }
            steps.append({"do": step, **result})
            if "error" in result:
                break
        out.append({"name": name, "options": options, "steps": steps})
    return out


# (name, options, steps): ["welcomed", t] or ["ended", t, code, jitter].
BACKOFF_CASES: list[tuple[str, dict[str, float], list[list[Any]]]] = [
    (
        "failed attempts grow the ceiling up to the cap",
        {},
        [["ended", 0.0, 1006, 0.5], *[["ended", 0.1 * i, 1006, 0.999] for i in range(1, 10)]],
    ),
    (
        "a WELCOME alone does not reset the backoff",
        {},
        [
            x
            for i in range(6)
            for x in (["welcomed", i * 1.0], ["ended", i * 1.0 + 0.2, 1011, 0.75])
        ],
    ),
    (
        "a connection up for stable_after resets it",
        {},
        [
            ["ended", 0.0, 1006, 0.5],
            ["ended", 0.1, 1006, 0.5],
            ["ended", 0.3, 1006, 0.5],
            ["welcomed", 0.5],
            ["ended", 10.4, 1006, 0.5],
            ["welcomed", 10.5],
            ["ended", 20.5, 1011, 0.5],
        ],
    ),
    (
        "4029 adds the rate-limited delay, and repeated 4029s wait longer",
        {},
        [x for i in range(8) for x in (["welcomed", i * 3.0], ["ended", i * 3.0 + 0.1, 4029, 0.5])],
    ),
    (
        "4029 waits at least the rate-limited delay even with no jitter",
        {},
        [
            ["welcomed", 0.0],
            ["ended", 0.2, 4029, 0.0],
            ["welcomed", 1.3],
            ["ended", 1.4, 4029, 0.0],
        ],
    ),
    (
        "1012 is at once but still counts",
        {},
        [["ended", 0.0, 1012, 0.9], ["ended", 0.0, 1006, 0.5], ["welcomed", 0.1]],
    ),
    (
        "other settings",
        {"base_delay": 0.2, "max_delay": 1.0, "rate_limited_delay": 2.5, "stable_after": 3.0},
        [
            ["ended", 0.0, 1006, 0.25],
            ["ended", 0.5, 1001, 0.75],
            ["welcomed", 1.0],
            ["ended", 2.0, 4029, 0.5],
            ["welcomed", 5.0],
            ["ended", 8.0, 4029, 0.5],
            ["ended", 8.5, 4008, 0.125],
        ],
    ),
]


def backoff_vectors() -> list[dict[str, Any]]:
    out = []
    for name, options, script in BACKOFF_CASES:
        backoff = Backoff(**options)
        steps: list[dict[str, Any]] = []
        for step in script:
            if step[0] == "welcomed":
                backoff.welcomed(step[1])
                steps.append({"do": step, "attempt": backoff.attempt})
            else:
                wait = backoff.delay(step[2], step[1], step[3])
                steps.append({"do": step, "wait": wait, "attempt": backoff.attempt})
        out.append({"name": name, "options": options, "steps": steps})
    return out


def vectors() -> dict[str, Any]:
    return {
        "generated_by": "python -m tests.js.vectors (make vectors); do not edit by hand",
        "ops": op_vectors(),
        "sync": sync_vectors(),
        "backoff": backoff_vectors(),
    }


def render() -> str:
    return json.dumps(vectors(), ensure_ascii=False, indent=1) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
