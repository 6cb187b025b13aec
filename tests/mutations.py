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
        "            if req.aid <= last:",
        "            if False:",
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
    Mutation(
        "a set to the value already there counts as a change",
        "an action that changes nothing makes no DIFF, no seq and no ETag",
        "server/room.py",
        "noop = op[0] == ops.SET and unchanged(self._state, op[1], op[2])",
        "noop = False",
        "tests/server/test_noop_ops.py::test_noop_set_yields_no_diff_and_keeps_the_etag",
    ),
    Mutation(
        "a refused op is not undone",
        "a handler that catches a refused op leaves no trace of it",
        "server/room.py",
        "            ops.rollback(partial)\n",
        "            pass\n",
        "tests/server/test_room_types.py::test_refused_op_that_a_handler_catches_leaves_no_trace",
    ),
    Mutation(
        "handlers see the raw state",
        "a handler that changes the state in place is refused and changes nothing",
        "server/room.py",
        "return self._state if running is None else running.state",
        "return self._state",
        "tests/server/test_room_types.py::"
        "test_a_handler_that_changes_the_state_in_place_is_refused_and_changes_nothing",
    ),
    Mutation(
        "the last aid's answer forgotten",
        "the client's last aid sent again gets its recorded answer",
        "server/writer.py",
        "                if req.aid == last:",
        "                if False:",
        "tests/server/test_answers.py::test_the_last_aid_sent_again_gets_its_answer_again",
    ),
    Mutation(
        "no per-identity action bucket",
        "rotating client ids does not sidestep the rate limit",
        "server/ws.py",
        "            refusal = self.app.quotas.act(self.identity)",
        "            refusal = None",
        "tests/server/test_quotas.py::test_rotating_client_ids_does_not_sidestep_the_rate_limit",
    ),
    Mutation(
        "tokens never expire on an open connection",
        "an open connection is closed with 4001 once its token's exp passes",
        "server/ws.py",
        "self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)",
        "pass",
        "tests/server/test_presence.py::"
        "test_an_open_connection_is_closed_4001_when_its_token_expires",
    ),
    Mutation(
        "an async run that never closed keeps its epochs",
        "--durability async: after a crash every room starts a new epoch",
        "server/store/sqlite.py",
        'if previous == "async":',
        "if False:",
        "tests/server/test_store_contract.py::"
        "test_sqlite_async_run_that_never_closed_starts_new_epochs",
    ),
    Mutation(
        "the append script ignores the fencing token",
        "a stale owner's write is refused inside Redis",
        "server/store/redis_lua/append.lua",
        "if token ~= '' and redis.call('GET', KEYS[4]) ~= token then",
        "if false then",
        "tests/server/test_store_contract.py::"
        "test_redis_refuses_a_stale_owners_write_inside_the_script",
    ),
    Mutation(
        "a second connection with an agent's id does not take over",
        "one live connection per agent client id: the older is closed 4009",
        "server/ws.py",
        "        older = room.presence.arrive(sub)",
        "        room.presence.arrive(sub)\n        older = None",
        "tests/server/test_presence.py::test_a_second_connection_with_one_agent_id_takes_over_with_4009",
    ),
    Mutation(
        "client ids recorded without bound",
        "under --auth none a room records at most --max-room-clients client ids",
        "server/ws.py",
        'if client is not None and config.auth == "none" and not room.may_record(client):',
        "if False:",
        "tests/server/test_presence.py::"
        "test_client_ids_are_bounded_in_length_and_number_under_auth_none",
    ),
    Mutation(
        "any Host accepted",
        "a foreign Host is refused on both listeners (DNS rebinding)",
        "server/gate.py",
        "        if name in hosts:\n            return None",
        "        if True:\n            return None",
        "tests/server/test_gate.py::test_a_foreign_host_is_refused_on_both_listeners",
    ),
    Mutation(
        "the store's room bound ignored",
        "past --max-stored-rooms no room is created",
        "server/manager.py",
        "refusal = self.bounds.creation_refused() if self.bounds is not None else None",
        "refusal = None",
        "tests/server/test_quotas.py::test_the_store_holds_a_bounded_number_of_rooms",
    ),
    Mutation(
        "held diffs never replayed",
        "a resume gets replay when every later diff is held and smaller than the snapshot",
        "server/feed.py",
        "        if spec is ALL and self.history.holds_after(seq):",
        "        if False:",
        "tests/server/test_protocol_sync.py::test_trimmed_diffs_get_snapshot_and_held_ones_replay",
    ),
    Mutation(
        "a lagging agent's ACK before its SNAPSHOT",
        "the acting agent gets its DIFF before its ACK, also when skipped ahead by SNAPSHOT",
        "server/feed.py",
        'sub.send(b"".join((lead, self.snapshot_for(sub), *held)))',
        'sub.send(b"".join((lead, *held, self.snapshot_for(sub))))',
        "tests/server/test_protocol_messages.py::"
        "test_lagging_agent_gets_its_ack_after_the_snapshot_holding_its_diff",
    ),
    Mutation(
        "a stalled subscriber never skipped ahead",
        "a subscriber that stops reading is skipped ahead by SNAPSHOT and slows nobody else",
        "server/feed.py",
        "            if sub.paused:",
        "            if False:",
        "tests/server/test_slow_subscriber.py::"
        "test_stalled_subscriber_is_bounded_then_skipped_ahead_by_snapshot",
    ),
    Mutation(
        "GET /state without its token check",
        "every HTTP request is checked, before the room is looked up",
        "server/http.py",
        '        identity = self.app.auth.authorize(bearer(request), room, "spectator", None)\n'
        "        asked = None",
        '        identity = Identity("spectator", None)\n        asked = None',
        "tests/server/test_auth.py::test_http_auth_is_checked_before_the_room_is_looked_up",
    ),
    Mutation(
        "any Origin may write",
        "a handshake or POST from another origin's page is refused",
        "server/gate.py",
        "        if allowed is None or origin in allowed:",
        "        if True:",
        "tests/server/test_gate.py::"
        "test_a_page_on_another_origin_can_neither_post_nor_open_a_websocket",
    ),
    Mutation(
        "actions posted as text/plain",
        "a POST action must say application/json (415), so no page posts one unasked",
        "server/http.py",
        'if request.content_type != "application/json":',
        "if False:",
        "tests/server/test_http_api.py::test_an_action_posted_as_anything_but_json_is_refused",
    ),
    Mutation(
        "the net change misses the maps a set made",
        "state at a cursor plus the net change is the head (PATCH, §5.11)",
        "protocol/netchange.py",
        "                elif child.made > since and type(here) is dict and not here:",
        "                elif False:",
        "tests/protocol/test_netchange.py",
    ),
    Mutation(
        "seqs skip one",
        "every applied action that changes something is one DIFF, numbered previous + 1",
        "server/writer.py",
        "                self._applied += 1\n                encoded = codec.encode_diff_parts(",
        "                self._applied += 2\n                encoded = codec.encode_diff_parts(",
        "tests/server/test_protocol_messages.py::"
        "test_diff_seqs_have_no_gap_under_concurrent_agents",
    ),
    Mutation(
        "a replay leaves its last diff out",
        "every subscriber gets every DIFF in order, across the switch from replay to live",
        "server/feed.py",
        "            for _, encoded in self.history.after(since):",
        "            for _, encoded in list(self.history.after(since))[:-1]:",
        "tests/server/test_protocol_sync.py::test_replay_then_live_has_no_gap_or_duplicate",
    ),
    Mutation(
        "a client one diff behind is told it is current",
        "clients converge with random actions, drops and reconnect points",
        "server/feed.py",
        '        if seq == self.head:\n            return "current", None\n        spec = sub.spec',
        '        if seq >= self.head - 1:\n            return "current", None\n'
        "        spec = sub.spec",
        "tests/server/test_properties.py::test_random_actions_and_drops_converge_exactly_once",
    ),
    Mutation(
        "the client resolves its last aid without asking",
        "clients re-send actions from WELCOME's acked on",
        "protocol/sync.py",
        "            if aid < w.acked:",
        "            if aid <= w.acked:",
        "tests/protocol/test_sync.py::test_reconnect_resends_exactly_the_actions_from_acked",
    ),
    Mutation(
        "a failed room leaves its members open",
        "a store write that fails closes every subscriber with 1011",
        "server/feed.py",
        '            self.spawn(close_or_abort(sub.conn, 1011, "room failed", '
        "self.config.slow_timeout))",
        "            pass",
        "tests/server/test_room_failure.py",
    ),
    Mutation(
        "a text frame closes as malformed",
        "each kind of bad input gets the close code the protocol names (text frame: 1003)",
        "server/ws.py",
        "    close_code = 1003",
        "    close_code = 1007",
        "tests/server/test_fuzz.py::test_text_frames_close_1003",
    ),
    Mutation(
        "token signatures not verified",
        "a badly signed token closes 4001",
        "server/jwt_auth.py",
        '                options={"require": ["exp", "sub"]},',
        '                options={"require": ["exp", "sub"], "verify_signature": False},',
        "tests/server/test_auth.py::test_hello_without_a_valid_token_closes_4001",
    ),
    Mutation(
        "a raising handler's ops kept",
        "a hook (or handler) that raises changes nothing",
        "server/room.py",
        "            ctx.rollback()",
        "            pass",
        "tests/server/test_presence.py::"
        "test_a_hook_that_raises_changes_nothing_and_the_room_keeps_serving",
    ),
    Mutation(
        "the client stays on a node that is down",
        "given several URLs, a client moves to the next when a node is unreachable",
        "protocol/client.py",
        "            self.url_index = (self.url_index + 1) % len(self.urls)",
        "            self.url_index = self.url_index",
        "tests/server/test_client_api.py::"
        "test_connect_with_several_urls_moves_on_from_a_node_that_is_down",
    ),
    Mutation(
        "a leaving node tells its clients 1001",
        "SIGTERM hands a node's rooms over and closes its clients with 1012",
        "server/app.py",
        "await self.ws.close_all(1012,",
        "await self.ws.close_all(1001,",
        "tests/server/test_cluster.py::test_sigterm_hands_rooms_over",
    ),
    Mutation(
        "pending actions not sent again after a reconnect",
        "clients converge through a network that cuts connections mid-frame, delays and stalls",
        "protocol/sync.py",
        "        for aid in sorted(self._pending):\n"
        "            self._send_action(self._pending[aid])",
        "        for aid in sorted(self._pending):\n            pass",
        "tests/server/test_faults.py::test_clients_converge_exactly_once_through_faults",
    ),
    Mutation(
        "an agent acts as the id its HELLO claims",
        "an agent acts as its token's sub",
        "server/jwt_auth.py",
        "        return Identity(role, grant.sub, grant.exp + LEEWAY, grant.view)",
        "        return Identity(role, client or grant.sub, grant.exp + LEEWAY, grant.view)",
        "tests/server/test_auth.py::test_agent_acts_as_its_token_subject",
    ),
    Mutation(
        "/healthz ok while Redis is down",
        "Redis unreachable: /healthz says degraded, actions unavailable, recovery by itself",
        "server/http.py",
        "        if cluster is not None and not await cluster.store.ping():",
        "        if False:",
        "tests/server/test_cluster.py::test_redis_down_for_a_while",
    ),
    Mutation(
        "an idle room keeps its lease",
        "an idle room unloads, releases its lease, and the next node goes on from there",
        "server/cluster/node.py",
        "            if live.writer is not None and name in self.leases.owned:",
        "            if False:",
        "tests/server/test_cluster.py::test_an_idle_room_unloads_and_gives_its_lease_up",
    ),
    Mutation(
        "agents not announced across nodes",
        "one live connection per agent id across nodes (4009 for the older)",
        "server/ws.py",
        "            cluster.agent_arrived(room, sub, number)  # the same client id on another",
        "            pass  #",
        "tests/server/test_cluster.py::test_one_connection_per_agent_id_across_nodes",
    ),
    Mutation(
        "presence diffs published but not stored",
        "joins and leaves are ordinary DIFFs: stored, so they survive a restart",
        "server/writer.py",
        "                    changes.append(StoredChange(self._applied, hook_diff, None, 0))",
        "                    pass",
        "tests/server/test_presence.py::"
        "test_presence_is_durable_and_agents_not_back_after_a_restart_leave",
    ),
    Mutation(
        "--durability ack acknowledges before the commit",
        "with --durability ack an ACK is sent only after the diff is committed",
        "server/writer.py",
        'if self.config.durability == "ack" or not self.store.durable:',
        "if not self.store.durable:",
        "tests/server/test_durability.py::"
        "test_kill_9_loses_no_acknowledged_action_and_keeps_the_history",
    ),
    Mutation(
        "every epoch named alike",
        "--store memory: a restart gives a new epoch, so a resume from the old one gets a SNAPSHOT",
        "server/epoch.py",
        "    return secrets.token_urlsafe(12)",
        '    return "one-epoch-for-all"',
        "tests/server/test_memory_store.py",
    ),
    Mutation(
        "a dead worker is not restarted",
        "--workers N: a worker that dies is restarted",
        "server/workers.py",
        "            if now >= next_start[i]:",
        "            if now >= next_start[i] and restarts[i] == 0:",
        "tests/server/test_workers.py::test_workers_share_the_ports_and_a_dead_one_is_restarted",
    ),
    Mutation(
        "a new owner drops the forwarded actions that wait",
        "when the owner dies a follower takes over; nothing acknowledged is lost",
        "server/cluster/node.py",
        "        self.forwarder.resubmit(live)",
        "        pass",
        "tests/chaos/test_chaos.py",
        (("CHAOS_SEED", "1,2"),),
    ),
    Mutation(
        "a refused patch's earlier ops kept (document room)",
        "the built-in room applies a patch all or nothing, as the reference model does",
        "server/room.py",
        "            ctx.rollback()",
        "            pass",
        "tests/server/test_properties.py::test_document_room_matches_the_reference_model",
    ),
    Mutation(
        "a batch's aids committed apart from its diffs",
        "a diff and the aid that produced it are stored together: both or neither",
        "server/store/sqlite.py",
        "    async def flush(self, db: Db) -> None:\n",
        "    async def flush(self, db: Db) -> None:\n"
        "        if self.acked:\n"
        "            await db.executemany(_UPSERT_ACKED, self.acked)\n"
        "            self.acked.clear()\n"
        '            await db.execute("COMMIT")\n'
        '            await db.execute("BEGIN IMMEDIATE")\n',
        "tests/server/test_store_contract.py::"
        "test_sqlite_refuses_a_reused_seq_and_keeps_the_batch_atomic",
    ),
    Mutation(
        "a frame handled message by message",
        "a frame is checked whole: a malformed message anywhere means nothing in it took effect",
        "protocol/codec.py",
        "        messages.append(decoder(value))\n    return messages\n\n\n# --- client side",
        "        try:\n            messages.append(decoder(value))\n"
        "        except MalformedMessage:\n            break\n    return messages\n\n\n"
        "# --- client side",
        "tests/server/test_protocol_closing.py::test_frame_is_checked_whole",
    ),
    Mutation(
        "a refusal fails the room",
        "bad action args get ERROR invalid or too_large, never a close",
        "server/writer.py",
        "            except Rejection as exc:\n                rejection: Rejection | None = exc",
        "            except Rejection:\n                raise",
        "tests/server/test_protocol_closing.py::test_bad_action_gets_error_not_close",
    ),
    Mutation(
        "protocol violations crash the session",
        "random bytes and mutated messages never crash the server; each gets its close code",
        "server/ws.py",
        "        except ProtocolViolation as exc:",
        "        except ZeroDivisionError as exc:  # type: ignore[misc]",
        "tests/server/test_fuzz.py::test_frame_after_hello",
    ),
    Mutation(
        "a room whose keys Redis lost is not written back",
        "Redis losing a room's keys starts a new epoch with the owner's state",
        "server/cluster/node.py",
        "        await self.store.create(name, record)",
        "        return",
        "tests/server/test_cluster.py::test_redis_restarted_empty_starts_a_new_epoch",
    ),
    Mutation(
        "a follower publishes each batch twice",
        "clients on any node see one line of seqs: no DIFF delivered twice",
        "server/cluster/follower.py",
        "        feed.publish([(seq, encoded) for seq, encoded, _ in diffs], {})",
        "        feed.publish([(seq, encoded) for seq, encoded, _ in diffs], {})\n"
        "        feed.publish([(seq, encoded) for seq, encoded, _ in diffs], {})",
        "tests/server/test_cluster.py::test_three_nodes_agree_and_apply_each_action_once",
    ),
    Mutation(
        "a stopping server leaves its clients connected",
        "a clean stop closes every client with 1001 and restarts on the same epoch and seq",
        "server/ws.py",
        "self.server.close(close_connections=True)",
        "self.server.close(close_connections=False)",
        "tests/server/test_durability.py::"
        "test_sigterm_closes_with_1001_and_restarts_on_the_same_epoch_and_seq",
    ),
    Mutation(
        "an MCP retry starts a second action",
        "a tool call retried with the same key answers the first call's outcome",
        "src/statecast/mcp_server/ledger.py",
        "print_ = fingerprint(name, args)\n        entry = self._entries.get(key)",
        "print_ = fingerprint(name, args)\n        entry = None",
        "tests/mcp/test_exactly_once.py::"
        "test_a_retry_with_the_same_key_after_the_connection_was_cut",
    ),
    Mutation(
        "a rate-limited MCP call keeps its key",
        "a refusal for a passing reason frees its key: the retry runs the action",
        "src/statecast/mcp_server/seat.py",
        "if exc.code in PASSING_REFUSALS:",
        "if False:",
        "tests/mcp/test_exactly_once.py::test_a_rate_limited_call_can_be_retried_under_its_key",
    ),
    Mutation(
        "--keys ignores the room's acked aid",
        "a retry in a new process of an action the room applied is not applied again",
        "src/statecast/mcp_server/seat.py",
        "if keys is not None and earlier is not None and earlier <= acked0:",
        "if False:",
        "tests/mcp/test_keys.py::test_a_retry_in_a_new_process_after_the_first_ended_mid_call",
    ),
    Mutation(
        "--keys keeps aids a later process reuses",
        "a retry in a new process never answers another call's outcome",
        "src/statecast/mcp_server/seat.py",
        "                    self.keys.unsent_above(self._acked0)",
        "                    pass",
        "tests/mcp/test_keys.py::test_a_saved_aid_a_later_process_reused_is_not_taken_as_applied",
    ),
    Mutation(
        "the document room always records presence",
        "without --document-presence the document room records nothing of who is there",
        "server/app.py",
        "default = PresenceDocumentRoom if config.document_presence else DocumentRoom",
        "default = PresenceDocumentRoom",
        "tests/server/test_presence.py::"
        "test_the_document_room_without_the_flag_records_no_presence",
    ),
    Mutation(
        "a view's removal leaves the maps that held it",
        "a view subscriber holds exactly the view of the state after every change",
        "protocol/views.py",
        "            out.append([DEL, _highest_empty(state, path, spec)])\n    return out",
        "            out.append([DEL, list(path)])\n    return out",
        "tests/protocol/test_views.py::test_a_view_copy_is_the_view_of_the_state_after_every_batch",
    ),
    Mutation(
        "a resume's view catch-up leaves the maps that held a removed prefix",
        "a resume with a view gets the view of the state at the head",
        "protocol/views.py",
        "        out.append([DEL, _highest_empty(state, path, spec)])\n"
        "    return out\n\n\ndef _highest",
        "        out.append([DEL, list(path)])\n    return out\n\n\ndef _highest",
        "tests/protocol/test_views.py::"
        "test_resume_with_a_view_from_any_seq_is_the_view_at_the_head",
    ),
    Mutation(
        "the views' dispatch misses the views under an op",
        "a subscriber with a view holds exactly the view of the state after every change",
        "server/view_groups.py",
        "            else:  # the op is at or above these anchors: every group under it",
        "            if False:",
        "tests/server/test_view_dispatch.py::test_a_group_the_dispatch_skips_has_nothing_to_get",
    ),
    Mutation(
        "a view is not cut above its prefixes",
        "a view subscriber holds exactly the view of the state after every change",
        "protocol/views.py",
        "        if node is None:\n            continue\n        if node is ALL:\n"
        "            below.append(op)",
        "        if node is None or node is ALL:\n            below.append(op)",
        "tests/server/test_views.py::test_a_view_gets_only_its_part_and_equals_the_view_of_the_state",
    ),
    Mutation(
        "a VIEW_DIFF names the seq before it, not the view's last",
        "each VIEW_DIFF names the seq of the one before it on its view",
        "server/feed.py",
        "            payload = codec.encode_view_diff(group.last, self.head, ops_bytes)",
        "            payload = codec.encode_view_diff(self.head - 1, self.head, ops_bytes)",
        "tests/server/test_views.py::test_a_view_gets_only_its_part_and_equals_the_view_of_the_state",
    ),
    Mutation(
        "a lost VIEW_DIFF goes unnoticed",
        "a lost VIEW_DIFF is noticed and answered by RESYNC",
        "protocol/sync.py",
        "        if d.since > self.seq:",
        "        if False:",
        "tests/server/test_views.py::test_a_lost_view_diff_is_noticed_and_resynced",
    ),
    Mutation(
        "a token's view claim not enforced on a WebSocket",
        "a token's view claim bounds what its holder reads on every way out",
        "server/ws.py",
        "            and not covers(from_prefixes(grant.view), from_prefixes(asked))",
        "            and False",
        "tests/server/test_views.py::test_a_token_view_holds_on_every_way_out",
    ),
    Mutation(
        "HTTP /state ignores the reader's view",
        "a token's view claim bounds what its holder reads on every way out",
        "server/http.py",
        "        if spec is not ALL:\n            await feed.settled()\n"
        "            etag, view, _ = feed.view_state(spec)",
        "        if False:\n            await feed.settled()\n"
        "            etag, view, _ = feed.view_state(spec)",
        "tests/server/test_views.py::test_a_token_view_holds_on_every_way_out",
    ),
    Mutation(
        "private parts shown to everyone",
        "a room type's private parts show only to their agent",
        "server/ws.py",
        "        return effective(asked, grant.view, room.feed.private, grant.client)",
        "        return effective(asked, grant.view, (), grant.client)",
        "tests/server/test_views.py::test_private_parts_show_only_to_their_agent",
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
