"""Drained observers against a real server: every byte read, pings answered, seqs exact."""

from __future__ import annotations

import asyncio

import websockets

from statecast.loadtest.drain import DrainedPoller, Drainer, open_drained
from statecast.loadtest.measure import Counters
from statecast.loadtest.observers import Tally
from statecast.loadtest.scenario import Timeline, now_us
from tests.helpers import TIMEOUT, BareClient, eventually, make_room, running_server


async def _act(client: BareClient, count: int) -> None:
    """HELLO as an agent and apply ``count`` patches, each ACKed."""
    await client.send([1, {"v": 1, "role": "agent", "client": "a0"}])
    await client.recv_type(2)
    for aid in range(1, count + 1):
        await client.send([4, aid, "patch", [[0, ["k"], aid]]])
        await client.recv_type(7)


async def test_drained_spectators_reach_the_head_and_answer_pings() -> None:
    """Three drained spectators read every DIFF of 30 actions, and survive many pings."""
    async with running_server(ping_interval=0.1, ping_timeout=0.3) as server:
        url = server.room_url("d")
        await make_room(server, "d")
        counters = Counters()
        drainer = Drainer()
        for _ in range(3):
            drainer.add(await open_drained(url, counters, TIMEOUT, statecast=True))
        handshake = counters.up
        async with websockets.connect(url) as ws:
            await _act(BareClient(ws), 30)
        await drainer.run(now_us() + 1_000_000)  # ten ping intervals
        await drainer.settle()
        for conn in drainer.all():
            conn.finish()
        assert drainer.errors == [] and len(drainer.sockets) == 3
        assert counters.up > handshake  # pongs went out
        for conn in drainer.all():
            assert conn.seen == [["state", 0], ["run", 30]]
            assert 1 <= conn.frames <= 30  # a frame may carry several diffs
        assert counters.down > 3 * 30 * 10
        for conn in drainer.all():
            conn.close()
        drainer.close()


async def test_a_drained_poller_reads_seqs_from_etags_and_polls_after_the_drain() -> None:
    """Its log holds the seq of each new state; it stops after a poll sent past final_after."""
    async with running_server() as server:
        counters = Counters()
        start = now_us()
        timeline = Timeline(start, start, start + 400_000, start + 600_000, 100_000, (0,))
        poller = DrainedPoller(server.http_url, "p", 20.0, Tally(1), counters, seed=1)
        async with websockets.connect(server.room_url("p")) as ws:
            await _act(BareClient(ws), 2)
            await poller.connect(counters, TIMEOUT)
            running = asyncio.create_task(poller.run(timeline))
            await asyncio.sleep(0.1)
            await BareClient(ws).send([4, 3, "patch", [[0, ["k"], 3]]])
            await BareClient(ws).recv_type(7)
            # Past the end it polls on, until told its last poll: a poll after the end
            # must come (a poller that stopped at the end would never make one).
            await eventually(lambda: now_us() > timeline.end)
            polls = counters.http_304 + counters.http_200
            await eventually(lambda: counters.http_304 + counters.http_200 > polls)
            assert not running.done()
            poller.final_after = now_us()
            await asyncio.wait_for(running, TIMEOUT)
        assert poller.final and poller.error is None
        assert poller.seen[0] == ["state", 2] and poller.seen[-1] == ["state", 3]
        assert counters.http_304 > 0 and counters.http_200 == len(poller.seen)
        await poller.close()
