"""Case 1, no loss under load: every frame the workspace numbers is recorded exactly once, in order.

The workspace stamps each frame it writes on a socket with ``sim_seq``
(1, 2, 3, ... per socket) and counts them in ``sim.sent``; the client
records every frame in ``rtm.events``. These tests compare the two.
"""

from __future__ import annotations

import asyncio

import orjson

from rel_support import GUARD, SeqTap, assert_exactly_once_in_order, client_for, mark, until

BURST = 100_000


async def test_burst_written_right_after_hello_is_all_recorded_in_order(sim):
    sim.burst_after_hello(BURST)
    rtm = client_for(sim)
    tap = SeqTap(rtm)
    handled = []

    @rtm.on("message")
    async def count(client, event):
        handled.append(event["sim_seq"])

    await asyncio.wait_for(rtm.connect(), GUARD)
    await mark(sim, tap, "after burst")
    messages = int((rtm.events["type"] == "message").sum())
    await until(lambda: len(handled) == messages, "the async handler to see every message")
    await rtm.stop()

    assert tap.problems == []
    total = assert_exactly_once_in_order(rtm, sim)
    assert total == sim.sent[1] >= BURST + 2  # hello + burst + marker
    # the handler saw exactly the recorded messages, in the same order
    df = rtm.events
    recorded = [orjson.loads(r)["sim_seq"] for r in df[df["type"] == "message"]["raw"].tolist()]
    assert handled == recorded


async def test_burst_mid_session_is_all_recorded_in_order(sim):
    rtm = client_for(sim)
    tap = SeqTap(rtm)
    await asyncio.wait_for(rtm.connect(), GUARD)
    await mark(sim, tap, "before")
    sim.burst(BURST)
    await mark(sim, tap, "after")
    await rtm.stop()

    assert tap.problems == []
    total = assert_exactly_once_in_order(rtm, sim)
    assert total == sim.sent[1] >= BURST + 3
    assert rtm.connection_number == 1


async def test_sustained_firehose_is_all_recorded_in_order(sim):
    rtm = client_for(sim)
    tap = SeqTap(rtm)
    sync_seen = []

    @rtm.on("*")
    def every(client, event):  # a sync handler on its own thread, for the whole firehose
        if "sim_seq" in event:
            sync_seen.append(event["sim_seq"])

    await asyncio.wait_for(rtm.connect(), GUARD)
    sim.set_rate(float("inf"))
    # Let the firehose run until a good number of events went through (a
    # count, not a clock, so a slow machine runs longer instead of failing).
    await until(lambda: tap.last[1] >= 30_000, "30,000 firehose events")
    sim.set_rate(0)
    await mark(sim, tap, "end of firehose")
    await until(lambda: len(sync_seen) == tap.last[1], "the sync handler to catch up")
    await rtm.stop()

    assert tap.problems == []
    total = assert_exactly_once_in_order(rtm, sim)
    assert total == sim.sent[1] == tap.last[1]
    assert sync_seen == list(range(1, total + 1))
