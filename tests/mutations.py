"""Each promise's test fails when the mechanism behind it is removed: the demonstrations.

Run with ``make mutations`` (or ``python -m tests.mutations [NAME ...]``). For each entry
below it changes one place in the product (the mechanism a promise in
docs/guarantees.md rests on), runs the test that backs the promise, expects it to FAIL,
and puts the file back, whatever happens. A mutation whose test still passes is reported
as a test that cannot fail for its promise, and the run exits 1.

Add an entry when a mechanism gets a test; run the entries after changing a mechanism.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    promise: str
    path: str
    before: str
    after: str
    test: str
    env: tuple[tuple[str, str], ...] = ()
    #: Further (before, after) places in the same file, for a mechanism held in two.
    more: tuple[tuple[str, str], ...] = ()


MUTATIONS = [
    Mutation(
        "exactly-once record ignored",
        "an ACTION with aid <= acked is not applied again (ACK nil)",
        "server/writer.py",
        "if req.aid <= acked.get(req.client, 0):",
        "if False:",
        "tests/server/test_protocol_messages.py::test_exactly_once_duplicates_get_ack_nil",
    ),
    Mutation(
        "forwarded units run out of order",
        "a client's actions reach the writer in aid order on every path (cluster)",
        "server/cluster/node.py",
        "for req in requests:\n                    live.writer.submit(req)",
        "for req in reversed(requests):\n                    live.writer.submit(req)",
        "tests/chaos/test_chaos.py",
        (("CHAOS_SEED", "1"),),
    ),
    Mutation(
        "--wait-replicas ignored",
        "with --wait-replicas N an ACK comes only once N replicas hold the batch",
        "server/store/redis.py",
        "if self.wait_replicas <= 0:",
        "if True:",
        "tests/server/test_cluster.py::test_wait_replicas_acks_once_a_replica_holds_the_diff",
    ),
    Mutation(
        "a reconnect within the grace still leaves",
        "a reconnect within --leave-grace is neither a leave nor a join",
        "server/presence.py",
        "        if self._here(client) or client not in self.joined:\n",
        "        if client not in self.joined:\n",
        "tests/server/test_presence.py::test_reconnect_within_the_grace_is_neither_leave_nor_join",
        # The pending leave is cancelled on return, and checked again when it fires.
        more=(("timer.cancel()  # back within the grace", "pass"),),
    ),
    Mutation(
        "spectators create rooms",
        "a spectator never creates a room (4004 naming it)",
        "server/ws.py",
        'create = self.app.config.create_rooms and identity.role == "agent"',
        "create = self.app.config.create_rooms",
        "tests/server/test_room_names.py::test_a_spectator_never_creates_a_room",
    ),
    Mutation(
        "a room served as the type its name maps to now",
        "a room keeps its type (its rules) across restarts",
        "server/registry.py",
        "        if type_name(room_class) == stored:",
        "        if True:",
        "tests/server/test_room_type_import.py::"
        "test_a_room_keeps_its_type_when_the_server_restarts_without_it",
    ),
]


def run(mutation: Mutation) -> bool:
    """True if the test failed with the mutation in place (as it must)."""
    path = ROOT / mutation.path
    original = path.read_text()
    mutated = original
    for before, after in ((mutation.before, mutation.after), *mutation.more):
        assert mutated.count(before) == 1, f"{mutation.name}: {before!r} is not one place"
        mutated = mutated.replace(before, after)
    env = {**os.environ, **dict(mutation.env)}
    try:
        path.write_text(mutated)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", mutation.test],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        path.write_text(original)
    lines = [line for line in result.stdout.splitlines() if line.startswith("E  ")]
    verdict = "FAILS as it must" if result.returncode != 0 else "STILL PASSES"
    print(f"{mutation.name}: {verdict}  ({mutation.test})")
    for line in lines[:3]:
        print(f"    {line.strip()[:160]}")
    return result.returncode != 0


def main(names: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not names or m.name in names]
    passed_wrongly = [m.name for m in chosen if not run(m)]
    if passed_wrongly:
        print(f"tests that cannot fail for their promise: {passed_wrongly}")
        return 1
    print(f"{len(chosen)} mutations, each caught by its test")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
