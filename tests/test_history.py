"""History backfill over the simulated workspace's Web API: paged, threads included,
resumable, recorded as history rows that messages() counts once."""

from __future__ import annotations

import asyncio

import pytest

from rtm_notebook import history
from rtm_notebook.errors import SlackClientError

from rtm_support import GUARD, client_for, general, human, until
from sim_support import ok

SIM_SEED = 6


def expected(sim, channel: str) -> set[str]:
    """Every ts of the channel's history and of its threads, through the Web API."""
    found, cursor = set(), ""
    while True:
        page = ok(sim, "conversations.history", channel=channel, limit=100, cursor=cursor)
        for message in page["messages"]:
            found.add(message["ts"])
            if message.get("reply_count"):
                found |= {m["ts"] for m in ok(sim, "conversations.replies", channel=channel, ts=message["ts"],
                                               limit=1000)["messages"]}
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            return found


async def test_backfill_records_a_channels_history_and_threads_as_history_rows(sim):
    rtm = client_for(sim)
    await rtm.connect()
    seen = []
    status = await asyncio.wait_for(rtm.backfill("#general", progress=lambda p: seen.append(p.calls)), GUARD)
    df = rtm.events
    rows = df[df["direction"] == "history"]
    assert set(rows["ts"]) == expected(sim, general(sim)) and rows["ts"].is_unique
    assert (rows["channel"] == general(sim)).all() and (rows["type"] == "message").all()
    assert (rows["thread_ts"].notna() & (rows["thread_ts"] != rows["ts"])).any()  # replies came too
    assert status.done and status.messages == len(rows) and seen == sorted(seen) and seen[-1] == status.calls
    # history is recorded, not dispatched: no handler or live-log row saw it
    assert rtm.counts["message"] == 0
    # the live session's rows say it was RTM, its own events included; history rows say nothing
    assert rows["transport"].isna().all()
    live = df[df["direction"] != "history"]
    assert (live["transport"] == "rtm").all() and {"state_change", "hello"} <= set(live["type"])
    await rtm.async_stop()


async def test_a_message_seen_live_and_in_history_is_one_message(sim):
    rtm = client_for(sim)
    await rtm.connect()
    sim.post_message(human(sim), general(sim), "live and in history")
    await until(lambda: (rtm.events["text"] == "live and in history").any(), "the live message")
    await rtm.backfill([general(sim)], threads=False)
    df = rtm.events
    assert (df["text"] == "live and in history").sum() == 2  # both rows are kept ...
    messages = rtm.messages()
    twice = messages[messages["text"] == "live and in history"]
    assert len(twice) == 1 and twice["direction"].tolist() == ["in"]  # ... and counted once
    assert messages["ts"].is_unique
    await rtm.async_stop()


async def test_an_interrupted_backfill_resumes_where_it_stopped(sim, monkeypatch):
    monkeypatch.setattr(history, "PAGE", 7)
    rtm = client_for(sim)
    await rtm.connect()
    task = None

    def interrupt(progress):
        if progress.calls == 3:
            task.cancel()

    task = asyncio.ensure_future(rtm.backfill("#general", progress=interrupt))
    with pytest.raises(asyncio.CancelledError):
        await task
    partial = (rtm.events["direction"] == "history").sum()
    assert 0 < partial
    await rtm.backfill("#general")
    rows = rtm.events[rtm.events["direction"] == "history"]
    assert set(rows["ts"]) == expected(sim, general(sim)) and rows["ts"].is_unique and len(rows) > partial
    await rtm.async_stop()


async def test_every_channel_the_bot_is_in_and_the_time_window(sim):
    rtm = client_for(sim)
    await rtm.connect()
    everything = await rtm.backfill(threads=False)
    assert everything.channels >= 2
    member = {c["id"] for c in ok(sim, "conversations.list", types="public_channel,private_channel")["channels"]
              if c.get("is_member")}
    assert set(rtm.events.query("direction == 'history'")["channel"]) == member
    await rtm.async_stop()
    tss = sorted(expected(sim, general(sim)))
    rtm = client_for(sim)
    await rtm.connect()
    await rtm.backfill("#general", oldest=tss[5], latest=tss[-5], threads=False)
    got = rtm.events.query("direction == 'history'")["ts"]
    assert got.min() >= tss[5] and got.max() <= tss[-5]
    await rtm.async_stop()


async def test_unknown_channels_and_a_client_that_keeps_nothing_say_so(sim):
    rtm = client_for(sim)
    await rtm.connect()
    with pytest.raises(SlackClientError, match="no channel named #nosuch"):
        await rtm.backfill("#nosuch")
    await rtm.async_stop()
    quiet = client_for(sim, record=False)
    with pytest.raises(SlackClientError, match="record=False"):
        await quiet.backfill("#general")


def test_rtm_history_backfills_from_a_cell_with_a_progress_bar(shell, capsys):
    result = shell.run_cell("%rtm_connect --demo --rate 0")
    assert result.error_in_exec is None, result.error_in_exec
    result = shell.run_cell("%rtm_history #general --no-threads")
    assert result.error_in_exec is None, result.error_in_exec
    rtm = shell.user_ns["rtm"]
    rows = rtm.events.query("direction == 'history'")
    assert len(rows) > 10 and rows["thread_ts"].isna().sum() + (rows["thread_ts"] == rows["ts"]).sum() == len(rows)
    err = capsys.readouterr().err
    assert "history [####################] 1/1 channels" in err and "(done)" in err
    for line, problem in (("%rtm_history --since soon", "neither an age"),
                          ("%rtm_history #nosuch", "no channel named #nosuch")):
        assert problem in str(shell.run_cell(line).error_in_exec)


def test_rtm_history_run_again_with_the_same_since_resumes(shell, capsys):
    assert shell.run_cell("%rtm_connect --demo --rate 0").error_in_exec is None
    assert shell.run_cell("%rtm_history #general --since 3650d").error_in_exec is None
    rtm = shell.user_ns["rtm"]
    first = (rtm.events["direction"] == "history").sum()
    assert shell.run_cell("%rtm_history #general --since 3650d").error_in_exec is None
    assert (rtm.events["direction"] == "history").sum() == first > 0  # done already: nothing fetched twice
