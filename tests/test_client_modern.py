"""The modern surface of RTMClient, over real sockets against the simulated workspace."""

import asyncio
import collections
import json
import logging
import threading
import time

import orjson
import pytest

from rtm_notebook import RTMClient
from rtm_notebook.errors import (
    MessageTooLargeError,
    ReplyError,
    SlackClientError,
    SlackClientNotConnectedError,
)
from rtm_notebook.web import AsyncWebClient, WebClient
from rtm_notebook.websocket import parsed_frames

from rtm_support import GUARD, assert_clean, client_for, general, human, no_sockets_left, rtm_threads, until

SIM_SEED = 3


@pytest.fixture(autouse=True)
def quiet(sim):
    sim.set_rate(0)
    yield
    sim.set_rate(0)


async def test_start_inside_a_running_loop_returns_at_once_and_connects(sim):
    rtm = client_for(sim)
    before = asyncio.all_tasks()
    task = rtm.start()
    assert isinstance(task, asyncio.Task) and not task.done()
    assert rtm.state == "connecting"
    await asyncio.wait_for(rtm.connect(), GUARD)
    assert rtm.state == "connected"
    assert rtm.team["id"] == sim.team["id"]
    assert rtm.self["id"] == sim.bot_user_id
    assert rtm.connection_number == 1 and rtm.loop is asyncio.get_running_loop()
    await rtm.stop()
    assert_clean(rtm, before)
    await no_sockets_left(sim)
    df = rtm.events
    changes = [json.loads(r) for r in df[df["type"] == "state_change"]["raw"]]
    assert [(c["previous"], c["state"]) for c in changes] == [
        ("disconnected", "connecting"), ("connecting", "connected"), ("connected", "stopped")]


async def test_handlers_sync_async_star_and_state_change(sim):
    rtm = client_for(sim)
    sync_seen, async_seen, star, states = [], [], [], []
    loop_thread = threading.get_ident()
    threads = set()

    @rtm.on("message")
    def on_sync(client, event):
        assert client is rtm
        threads.add(threading.get_ident())
        sync_seen.append(event["sim_seq"])

    @rtm.on("message")
    async def on_async(client, event):
        threads.add(("async", threading.get_ident()))
        async_seen.append(event["sim_seq"])

    @rtm.on("*")
    def everything(client, event):
        star.append(event.get("type"))

    @rtm.on("state_change")
    async def on_state(client, event):
        states.append((event["previous"], event["state"]))

    await rtm.connect()
    for i in range(5):
        sim.post_message(human(sim), "general", f"message {i}")
    await until(lambda: len(sync_seen) == 5 and len(async_seen) == 5, "5 messages in both handlers")
    assert sync_seen == async_seen == sorted(sync_seen)
    assert ("async", loop_thread) in threads and loop_thread not in threads
    assert states[:2] == [("disconnected", "connecting"), ("connecting", "connected")]
    assert {"hello", "message", "open", "state_change"} <= set(star)
    await rtm.stop()


async def test_wait_for_and_send_message_reply(sim):
    rtm = client_for(sim)
    await rtm.connect()
    waiting = asyncio.ensure_future(rtm.wait_for("message", count=2, timeout=GUARD))
    await asyncio.sleep(0)
    sim.post_message(human(sim), "general", "one")
    sim.post_message(human(sim), "general", "two")
    got = await waiting
    assert [e["text"] for e in got] == ["one", "two"]

    reply = await asyncio.wait_for(rtm.send_message(general(sim), "hello from rtm"), GUARD)
    assert reply["ok"] is True and isinstance(reply["ts"], str) and reply["text"] == "hello from rtm"
    assert any(p.get("text") == "hello from rtm" for p in sim.posted)
    # the sent message and its reply are both recorded, once each
    df = rtm.events
    out = df[df["direction"] == "out"]
    assert out["text"].tolist() == ["hello from rtm"]
    sent_id = json.loads(out["raw"].iloc[0])["id"]
    assert (df["reply_to"] == sent_id).sum() == 1
    # every row has a type (a reply's is "reply"), and the bot's own message carries its user
    assert df["type"].notna().all()
    assert df.loc[df["reply_to"] == sent_id, "type"].tolist() == ["reply"]
    assert out["user"].tolist() == [rtm.self["id"]]

    with pytest.raises(TimeoutError):
        await rtm.wait_for("never_happens", timeout=0.05)
    await rtm.stop()


async def test_error_reply_raises_reply_error(sim):
    rtm = client_for(sim)
    await rtm.connect()
    with pytest.raises(ReplyError) as info:
        await asyncio.wait_for(rtm.send_message("CNOSUCHCHAN", "hi"), GUARD)
    assert info.value.code == 4 and "channel not found" in str(info.value)
    await rtm.stop()


async def test_message_size_is_checked_before_sending(sim):
    rtm = client_for(sim)
    await rtm.connect()
    with pytest.raises(MessageTooLargeError, match="4000"):
        rtm.send_message(general(sim), "x" * 4001)
    with pytest.raises(MessageTooLargeError, match="16384"):
        rtm.send_over_websocket(payload={"type": "message", "channel": general(sim),
                                         "text": "\U0001f600" * 3999, "pad": "p" * 1000})
    before = len(sim.received)
    # the session is untouched: a normal message still goes through
    await asyncio.wait_for(rtm.send_message(general(sim), "fine"), GUARD)
    assert [f["text"] for f in sim.received[before:] if f.get("type") == "message"] == ["fine"]
    await rtm.stop()


async def test_sends_are_paced_in_order_and_never_trip_the_limit(sim):
    rtm = client_for(sim)
    await rtm.connect()
    start = len(sim.received)
    futures = [rtm.send_message(general(sim), f"paced {i}") for i in range(6)]
    replies = await asyncio.wait_for(asyncio.gather(*futures), GUARD)
    # The simulated workspace disconnects a client that exceeds Slack's rate
    # ("slow down"): every reply is ok and the connection is still the first.
    assert all(r["ok"] for r in replies)
    assert rtm.connection_number == 1 and rtm.state == "connected"
    sent = [f for f in sim.received[start:] if f.get("type") == "message"]
    assert [f["text"] for f in sent] == [f"paced {i}" for i in range(6)]
    ids = [f["id"] for f in sent]
    assert all(isinstance(i, int) and i > 0 for i in ids) and len(set(ids)) == 6
    await rtm.stop()


async def test_typing_ping_presence_and_seed_send(sim):
    rtm = client_for(sim)
    await rtm.connect()
    start = len(sim.received)
    await asyncio.wait_for(rtm.typing(channel=general(sim)), GUARD)
    pong = asyncio.ensure_future(rtm.wait_for("pong", timeout=GUARD))
    await asyncio.wait_for(rtm.ping(), GUARD)
    assert (await pong)["type"] == "pong"
    presence = asyncio.ensure_future(rtm.wait_for("presence_change", timeout=GUARD))
    await asyncio.wait_for(rtm.subscribe_presence([human(sim)]), GUARD)
    assert (await presence)["user"] == human(sim)
    mid = await asyncio.wait_for(rtm.send_over_websocket(payload={"type": "typing", "channel": general(sim)}), GUARD)
    assert isinstance(mid, int)
    # written by us is not yet read by the workspace's thread: wait for it
    await until(lambda: len(sim.received) - start >= 4, "four frames at the workspace")
    kinds = [f.get("type") for f in sim.received[start:]]
    assert kinds == ["typing", "ping", "presence_sub", "typing"]
    with pytest.raises(SlackClientError):
        rtm.subscribe_presence(["U%d" % i for i in range(501)])
    await rtm.stop()


async def test_same_name_replaces_and_filters(sim):
    rtm = client_for(sim)
    first, second, hello_only, chan = [], [], [], []

    def make(target):
        def greet(client, event):
            target.append(event["text"])
        return greet

    rtm.on("message")(make(first))
    rtm.on("message")(make(second))  # the same cell run again: replaces
    assert len([h for h in rtm.handlers if h.event == "message"]) == 1

    @rtm.on("message", match=r"(?i)^hello")
    async def hellos(client, event):
        hello_only.append(event["text"])

    @rtm.on("message", channel=general(sim), name="in-general")
    def in_general(client, event):
        chan.append(event["channel"])

    await rtm.connect()
    sim.post_message(human(sim), "general", "Hello there")
    sim.post_message(human(sim), "random", "nothing")
    sim.post_message(human(sim), "general", "bye")
    await until(lambda: len(second) == 3 and len(chan) == 2 and len(hello_only) == 1, "filtered handlers")
    assert first == [] and hello_only == ["Hello there"] and set(chan) == {general(sim)}
    await rtm.stop()


async def test_a_slow_sync_handler_delays_only_itself(sim):
    rtm = client_for(sim)
    release = threading.Event()
    slow, fast = [], []

    @rtm.on("message")
    def slow_handler(client, event):
        release.wait(GUARD)
        slow.append(event["text"])

    @rtm.on("message")
    def fast_handler(client, event):
        fast.append(event["text"])

    await rtm.connect()
    for i in range(20):
        sim.post_message(human(sim), "general", f"m{i}")
    await until(lambda: len(fast) == 20, "fast handler saw all 20")
    assert slow == []  # still stuck on the first event, and intake did not care
    assert rtm.counts["message"] == 20
    release.set()
    await until(lambda: len(slow) == 20, "slow handler caught up")
    assert slow == fast == [f"m{i}" for i in range(20)]
    await rtm.stop()


async def test_handler_exception_becomes_a_recorded_error_event(sim):
    rtm = client_for(sim)
    errors = []

    @rtm.on("message")
    def broken(client, event):
        raise ValueError("handler bug: " + event["text"])

    @rtm.on("error")
    async def on_error(client, event):
        errors.append(event)

    @rtm.on("error", name="error-bug")
    def error_bug(client, event):
        raise RuntimeError("an error handler that fails must not loop")

    await rtm.connect()
    sim.post_message(human(sim), "general", "one")
    sim.post_message(human(sim), "general", "two")
    await until(lambda: rtm.handlers["broken"].errors == 2 and len(errors) == 2, "two errors")
    await until(lambda: rtm.handlers["error-bug"].errors == 2, "error handler errors counted")
    assert [e["handler"] for e in errors] == ["broken", "broken"]
    assert "ValueError('handler bug: one')" == errors[0]["error"] and "Traceback" in errors[0]["traceback"]
    stats = {s["name"]: s for s in rtm.handlers.stats()}
    assert stats["broken"]["calls"] == 2 and stats["broken"]["last_error"] == "ValueError('handler bug: two')"
    df = rtm.events
    recorded = df[(df["type"] == "error")]
    # two from `broken`, two from `error-bug` (recorded, not dispatched again)
    assert len(recorded) == 4
    # the client kept going
    sim.post_message(human(sim), "general", "three")
    await until(lambda: rtm.handlers["broken"].calls == 3, "third message")
    await rtm.stop()


async def test_bad_handlers_are_rejected_clearly(sim):
    rtm = client_for(sim)
    with pytest.raises(SlackClientError, match=r"\(client, event\)"):
        @rtm.on("message")
        def wrong(event):
            pass
    with pytest.raises(SlackClientError, match="not callable"):
        rtm.on(event="message", callback="nope")
    with pytest.raises(SlackClientError, match="with the event type"):
        @rtm.on
        def bare(client, event):
            pass
    with pytest.raises(SlackClientNotConnectedError, match="start"):
        rtm.send_message(general(sim), "too early")


async def test_web_client_is_async_on_the_loop_and_sync_in_handlers(sim):
    rtm = client_for(sim)
    kinds = []

    @rtm.on("message", match="^probe$")
    def probe(client, event):
        wc = client.web_client
        kinds.append(type(wc))
        wc.chat_postMessage(channel=event["channel"], text="from a sync handler")

    await rtm.connect()
    assert isinstance(rtm.web_client, AsyncWebClient)
    resp = await rtm.web_client.auth_test()
    assert resp["user_id"] == sim.bot_user_id
    sim.post_message(human(sim), "general", "probe")
    await until(lambda: any(p.get("text") == "from a sync handler" for p in sim.posted), "sync web call")
    assert kinds == [WebClient]
    await rtm.stop()


async def test_token_never_shown(sim, caplog):
    caplog.set_level(logging.DEBUG)
    rtm = client_for(sim)

    @rtm.on("message")
    def boom(client, event):
        raise RuntimeError("boom")

    await rtm.connect()
    sim.post_message(human(sim), "general", "x")
    await until(lambda: rtm.handlers["boom"].errors == 1, "error")
    await rtm.stop()
    assert sim.token not in repr(rtm)
    assert "xoxb-" in repr(rtm)
    assert sim.token not in caplog.text
    assert not rtm.events["raw"].astype(str).str.contains(sim.token).any()
    assert rtm.token == sim.token


async def test_stop_leaves_nothing_and_pending_sends_fail_explicitly(sim):
    rtm = client_for(sim)

    @rtm.on("message")
    def sync_handler(client, event):
        pass

    @rtm.on("message")
    async def async_handler(client, event):
        pass

    before = asyncio.all_tasks()
    await rtm.connect()
    assert len(rtm_threads()) == 1
    # Queue more than the pacer lets out at once; stop before they all go.
    futures = [rtm.send_message(general(sim), f"queued {i}") for i in range(8)]
    await asyncio.wait_for(futures[0], GUARD)
    await rtm.stop()
    assert_clean(rtm, before)
    await no_sockets_left(sim)
    outcomes = [f.exception() if f.done() and not f.cancelled() else None for f in futures]
    assert all(f.done() for f in futures)
    from rtm_notebook.errors import DeliveryError

    assert any(isinstance(o, DeliveryError) for o in outcomes)
    with pytest.raises(SlackClientNotConnectedError):
        rtm.send_message(general(sim), "after stop")
    # stop() twice is fine, and a stopped client starts again
    await rtm.stop()
    await rtm.connect()
    assert rtm.state == "connected" and rtm.connection_number == 2
    await rtm.stop()
    assert_clean(rtm, before)
    await no_sockets_left(sim)


async def test_stop_from_a_sync_handler_thread(sim):
    rtm = client_for(sim)

    @rtm.on("message", match="^stop$")
    def stopper(client, event):
        client.stop()

    before = asyncio.all_tasks()
    task = rtm.start()
    await rtm.connect()
    sim.post_message(human(sim), "general", "stop")
    await asyncio.wait_for(asyncio.shield(task), GUARD)
    await until(lambda: rtm.state == "stopped", "stopped")
    await rtm.async_stop()
    assert_clean(rtm, before)
    await no_sockets_left(sim)


@pytest.mark.parametrize("method", ["rtm.start", "rtm.connect"])
async def test_messages_view_has_names(sim, method):
    rtm = client_for(sim, connect_method=method)
    await rtm.connect()
    sim.post_message(human(sim), "general", "named")
    await rtm.wait_for("message", timeout=GUARD)
    await until(lambda: len(rtm.channel_names) >= 5, "names known")
    df = rtm.messages()
    row = df[df["text"] == "named"].iloc[0]
    assert row["channel_name"] == "general"
    assert row["user_name"] == next(u["name"] for u in sim.users if u["id"] == human(sim))
    await rtm.stop()


def test_constructor_rejects_bad_options():
    with pytest.raises(SlackClientError, match="connect_method"):
        RTMClient(token="xoxb-x", connect_method="rtm.nope")
    with pytest.raises(SlackClientError, match="ping_interval"):
        RTMClient(token="xoxb-x", ping_interval=0)
    with pytest.raises(SlackClientError, match="base_url"):
        RTMClient(token="xoxb-x", base_url="slack.com/api")


async def test_a_broken_tap_is_removed_and_intake_goes_on(sim, caplog):
    rtm = client_for(sim)
    good = []

    def broken(event):
        raise RuntimeError("tap bug")

    rtm.add_tap(broken)
    rtm.add_tap(good.append)
    await rtm.connect()
    sim.post_message(human(sim), "general", "after the broken tap")
    await rtm.wait_for("message", timeout=GUARD)
    assert rtm._taps == (good.append,)
    assert any(e.get("text") == "after the broken tap" for e in good)
    assert "tap bug" in caplog.text and rtm.connection_number == 1
    rtm.remove_tap(good.append)
    assert rtm._taps == ()
    await rtm.stop()


def test_names_are_learned_from_events_that_carry_them():
    # The simulated workspace does not emit these events; they are fed to
    # intake as the connection would.
    rtm = RTMClient(token="xoxb-x")
    for event in ({"type": "channel_created", "channel": {"id": "C1", "name": "new-chan"}},
                  {"type": "channel_rename", "channel": {"id": "C1", "name": "renamed"}},
                  {"type": "team_join", "user": {"id": "U1", "name": "neo"}},
                  {"type": "user_change", "user": "not an object"}):
        rtm._intake(event, orjson.dumps(event))
    assert rtm.channel_names == {"C1": "renamed"} and rtm.user_names == {"U1": "neo"}
    assert rtm.counts["channel_rename"] == 1 and len(rtm.event_frame) == 4


async def test_record_false_keeps_nothing_but_still_dispatches(sim):
    rtm = client_for(sim, record=False)
    seen = []
    rtm.on("message")(lambda client, event: seen.append(event))
    await rtm.connect()
    sim.post_message(human(sim), general(sim), "nobody writes this down")
    await until(lambda: any(e.get("text") == "nobody writes this down" for e in seen), "the message to reach the handler")
    await rtm.async_stop()
    assert len(rtm.event_frame) == 0 and rtm.events.empty
    assert rtm.counts["message"] >= 1


def test_record_false_and_record_to_contradict(tmp_path):
    with pytest.raises(SlackClientError, match="record=False"):
        RTMClient(token="xoxb-x", record=False, record_to=tmp_path / "events.jsonl")


async def test_received_at_lies_between_the_send_and_the_handler(sim):
    # The read loop stamps frames once per wake-up (see connection.py), so a
    # stamp must still never precede the frame's sending nor follow its handler.
    rtm = client_for(sim)
    handled = {}
    rtm.on("message")(lambda client, event: handled.setdefault(event["event_ts"], time.time()))
    await rtm.connect()
    assert isinstance(parsed_frames(rtm._link.ws), collections.deque), \
        "aiohttp no longer exposes its queue of parsed frames: every frame now reads the clock"
    sim.set_rate(3000)
    await until(lambda: len(handled) >= 600, "600 messages to reach the handler")
    sim.set_rate(0)
    await rtm.async_stop()
    df = rtm.events
    received = df.loc[df["type"] == "message"].set_index("event_ts")["received_at"]
    checked = 0
    for event_ts, handler_at in handled.items():
        at = received[event_ts].timestamp()
        # event_ts is the sim's clock when it made the event, in whole microseconds
        assert float(event_ts) - 1e-6 <= at <= handler_at + 1e-6, (event_ts, at, handler_at)
        checked += 1
    assert checked >= 600
    assert df["received_at"].is_monotonic_increasing
