"""Every fault of the simulated workspace, survived; nothing lost or reordered."""

import asyncio
import json

import pytest

from rtm_notebook import RTMClient
from rtm_notebook import reconnect as client_module
from rtm_notebook.errors import FATAL_CONNECT_ERRORS, RTMConnectError

from rtm_support import GUARD, assert_clean, client_for, general, human, until

SIM_SEED = 11


def recorded(rtm, type_):
    df = rtm.events
    return [json.loads(r) for r in df[df["type"] == type_]["raw"]]


async def reconnected(rtm, n):
    await until(lambda: rtm.connection_number >= n and rtm.state == "connected", f"connection #{n} up")


async def connected_collecting_texts(sim):
    """A connected client, and the list its handler appends each message's text to."""
    rtm = client_for(sim)
    seen = []

    @rtm.on("message")
    def on_message(client, event):
        seen.append(event["text"])

    await rtm.connect()
    return rtm, seen


@pytest.mark.parametrize("fault", ["drop", "goodbye", "close_1000", "close_1011", "close_4000"])
async def test_reconnects_after_the_socket_ends(sim, fault):
    rtm, seen = await connected_collecting_texts(sim)
    if fault == "drop":
        sim.drop_connections()
    elif fault == "goodbye":
        sim.send_goodbye()
    else:
        sim.close_sockets(code=int(fault.split("_")[1]), reason="test")
    await reconnected(rtm, 2)
    sim.post_message(human(sim), "general", "after the fault")
    await until(lambda: seen == ["after the fault"], "message on the new socket")
    closes = recorded(rtm, "close")
    assert closes[0]["connection"] == 1
    if fault == "goodbye":
        assert closes[0]["reason"] == "goodbye"
    elif fault.startswith("close"):
        assert closes[0]["reason"].startswith("closed " + fault.split("_")[1])
    assert [s["state"] for s in recorded(rtm, "state_change")][:4] == [
        "connecting", "connected", "reconnecting", "connected"]
    await rtm.stop()


async def test_stalled_socket_is_detected_by_ping_and_replaced(sim):
    rtm = client_for(sim, ping_interval=0.2)
    await rtm.connect()
    sim.stall(1.0)
    await reconnected(rtm, 2)
    stale = [c for c in recorded(rtm, "close") if c["reason"].startswith("stale")]
    assert stale, recorded(rtm, "close")
    pings = [json.loads(r) for r in rtm.events.query("direction == 'out'")["raw"]]
    assert any(p["type"] == "ping" for p in pings)
    await rtm.stop()


async def test_keepalive_pings_and_pongs_keep_a_quiet_socket(sim):
    rtm = client_for(sim, ping_interval=0.1)
    await rtm.connect()
    await until(lambda: rtm.counts["pong"] >= 3, "three pongs")
    assert rtm.connection_number == 1 and rtm.state == "connected"
    await rtm.stop()


async def test_retry_after_is_honoured_on_rtm_connect(sim):
    sim.rate_limit_connect(calls=2, retry_after=1)
    rtm = client_for(sim)
    await asyncio.wait_for(rtm.connect(), GUARD)
    calls = sim.connect_calls
    assert len(calls) == 3
    # Waiting at least what Slack asked for is the behaviour under test.
    assert all(b - a >= 0.99 for a, b in zip(calls, calls[1:]))
    errors = recorded(rtm, "error")
    assert [e["error"]["code"] for e in errors] == ["connect_failed", "connect_failed"]
    assert "429" in errors[0]["error"]["msg"]
    await rtm.stop()


async def test_retryable_connect_errors_are_retried(sim):
    sim.fail_connect("internal_error", calls=1)
    rtm = client_for(sim)
    await asyncio.wait_for(rtm.connect(), GUARD)
    assert len(sim.connect_calls) == 2
    assert "internal_error" in recorded(rtm, "error")[0]["error"]["msg"]
    await rtm.stop()


@pytest.mark.parametrize("code", sorted(FATAL_CONNECT_ERRORS))
async def test_fatal_connect_errors_stop_after_one_attempt(sim, code):
    sim.fail_connect(code, calls=5)
    rtm = client_for(sim)
    before = asyncio.all_tasks()
    with pytest.raises(RTMConnectError) as info:
        await asyncio.wait_for(rtm.connect(), GUARD)
    assert info.value.error == code and FATAL_CONNECT_ERRORS[code] in str(info.value)
    assert len(sim.connect_calls) == 1
    assert rtm.last_error is info.value
    await until(lambda: rtm._runner.task.done(), "the session released everything and ended")
    assert_clean(rtm, before)
    assert recorded(rtm, "error")[-1]["error"]["code"] == code
    assert sim.token not in str(info.value)


async def test_not_allowed_token_type_says_what_to_do(sim):
    sim.fail_connect("not_allowed_token_type")
    rtm = client_for(sim)
    with pytest.raises(RTMConnectError, match="classic.*Socket Mode"):
        await rtm.connect()


async def test_burst_after_hello_arrives_complete_and_in_order(sim):
    n = 5000
    sim.burst_after_hello(n)
    rtm = client_for(sim)
    handled = []

    @rtm.on("*")
    def everything(client, event):
        if "sim_seq" in event:
            handled.append(event["sim_seq"])

    await rtm.connect()
    await until(lambda: len(handled) >= n, "the whole burst handled", guard=60)
    df = rtm.events
    seqs = [json.loads(r)["sim_seq"] for r in df[(df["direction"] == "in") & df["raw"].str.contains('"sim_seq"')]["raw"]]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= n
    assert handled == seqs[: len(handled)]
    assert sim.sent[1] == len(seqs)
    await rtm.stop()


async def test_firehose_burst_on_an_open_socket_is_not_lost(sim):
    rtm = client_for(sim)
    count = [0]

    @rtm.on("*")
    async def counter(client, event):
        count[0] += 1

    await rtm.connect()
    before = len(rtm.event_frame)
    sim.burst(3000)
    await until(lambda: len(rtm.event_frame) - before >= 3000, "burst recorded", guard=60)
    df = rtm.events
    seqs = [json.loads(r)["sim_seq"] for r in df[df["raw"].str.contains('"sim_seq"')]["raw"]]
    assert seqs == list(range(1, len(seqs) + 1))
    await rtm.stop()


@pytest.mark.parametrize("kind", ["not_json", "binary", "no_type", "array", "huge", "nested", "bad_utf8"])
async def test_malformed_frames_become_error_rows_and_the_session_goes_on(sim, kind):
    rtm, seen = await connected_collecting_texts(sim)
    sim.send_malformed(kind)
    sim.post_message(human(sim), "general", "still here")
    await until(lambda: "still here" in seen, "the next message")
    assert rtm.connection_number == 1
    if kind == "huge":
        # a 2 MB message is an ordinary (big) event, not an error
        assert len(seen) == 2 and len(seen[0]) == 2 << 20
    else:
        df = rtm.events
        rows = df[df["type"] == "error"]
        assert len(rows) == 1
        raw = rows["raw"].iloc[0]
        if kind in ("not_json", "no_type", "array"):
            assert raw == {"not_json": "this is not JSON {",
                           "no_type": '{"channel":"C0","text":"an event without a type"}',
                           "array": '[{"type":"message","text":"inside an array"}]'}[kind]
        else:
            assert raw  # the frame's text, undecodable bytes shown as U+FFFD
        assert rtm.counts["error"] == 1
        assert seen == ["still here"]
    await rtm.stop()


async def test_expired_url_is_reported_and_replaced(sim):
    sim.expire_next_url()
    rtm = client_for(sim)
    errors = []

    @rtm.on("error")
    def on_error(client, event):
        errors.append(event)

    await asyncio.wait_for(rtm.connect(), GUARD)
    assert rtm.connection_number >= 2
    assert len(sim.connect_calls) >= 2
    await until(lambda: errors, "expired error dispatched")
    assert any(isinstance(e.get("error"), dict) and e["error"].get("code") == 1 for e in errors)
    await rtm.stop()


async def test_messages_queued_while_reconnecting_are_sent_after(sim):
    rtm = client_for(sim)
    await rtm.connect()
    sim.drop_connections()
    await until(lambda: rtm.state == "reconnecting", "reconnecting")
    reply = await asyncio.wait_for(rtm.send_message(general(sim), "sent while down"), GUARD)
    assert reply["ok"] and rtm.connection_number == 2
    out = rtm.events.query("direction == 'out'")
    assert out["connection"].tolist() == [2] and out["text"].tolist() == ["sent while down"]
    await rtm.stop()


async def test_no_reconnect_when_auto_reconnect_is_off(sim):
    rtm = client_for(sim, auto_reconnect=False)
    task = rtm.start()
    await rtm.connect()
    sim.close_sockets(code=1001)
    await asyncio.wait_for(asyncio.shield(task), GUARD)
    assert rtm.state == "disconnected" and len(sim.connect_calls) == 1
    await rtm.stop()


def _delay(attempt: int) -> float:
    backoff = client_module.Backoff()
    backoff.attempt = attempt
    return backoff.delay()


def test_backoff_grows_with_jitter_and_is_capped():
    assert _delay(0) == 0
    for attempt in range(1, 12):
        full = min(client_module.RECONNECT_MAX, client_module.RECONNECT_BASE * 2 ** (attempt - 1))
        delays = [_delay(attempt) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1


def test_backoff_resets_after_a_healthy_session_and_waits_retry_after_exactly():
    backoff = client_module.Backoff()
    assert backoff.failed(retry_after=7.0) == 7.0 and backoff.attempt == 1
    backoff.failed()
    assert backoff.ended(lasted=None) > 0 and backoff.attempt == 3
    assert backoff.ended(lasted=client_module.HEALTHY_AFTER) == 0 and backoff.attempt == 0


async def test_presence_subscription_is_renewed_after_reconnect(sim):
    rtm = client_for(sim)
    await rtm.connect()
    who = human(sim)
    await asyncio.wait_for(rtm.subscribe_presence([who]), GUARD)
    sim.drop_connections()
    await reconnected(rtm, 2)

    def renewed():
        out = rtm.events.query("direction == 'out' and type == 'presence_sub'")
        return set(out["connection"]) >= {1, 2}

    await until(renewed, "presence_sub sent again on the new socket")
    # The workspace answers a subscription with the current presence: proof
    # it holds on the new socket. (The first one may have died unread with
    # the dropped socket: written is not read.)
    await until(lambda: not rtm.events.query("type == 'presence_change' and connection == 2").empty,
                "presence on the new socket")
    assert all(f["ids"] == [who] for f in sim.received if f.get("type") == "presence_sub")
    await rtm.stop()


def logged_delays(caplog):
    import re

    return [float(m.group(1)) for r in caplog.records
            if (m := re.search(r"reconnecting in ([0-9.]+) s", r.getMessage()))]


async def test_backoff_grows_for_short_sessions_and_resets_after_a_healthy_one(sim, caplog, monkeypatch):
    caplog.set_level("INFO", logger="rtm_notebook.reconnect")
    monkeypatch.setattr(client_module, "HEALTHY_AFTER", 3600.0)  # no session counts as healthy
    rtm = client_for(sim)
    await rtm.connect()
    for n in (2, 3):
        sim.drop_connections()
        await reconnected(rtm, n)
    first, second = logged_delays(caplog)
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0
    monkeypatch.setattr(client_module, "HEALTHY_AFTER", 0.0)  # now every session with a hello is healthy
    sim.drop_connections()
    await reconnected(rtm, 4)
    assert logged_delays(caplog)[-1] == 0.0
    await rtm.stop()


async def _odd_connect_server(sim, extra):
    """An rtm.connect endpoint that hands out the workspace's real socket URLs
    inside an answer whose other fields have shapes Slack never documents."""
    from aiohttp import web

    from rtm_notebook.web import AsyncWebClient

    async def answer(request):
        async with AsyncWebClient(sim.token, base_url=sim.base_url) as real:
            url = (await real.rtm_connect())["url"]
        return web.json_response({"ok": True, "url": url, **extra})

    app = web.Application()
    app.router.add_route("*", "/api/{method}", answer)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/api/"


@pytest.mark.parametrize("value", [1, True, "C1", {"id": "U1"}, [1, "x", None, {"id": 5}]])
async def test_connect_answer_with_oddly_shaped_name_lists_still_connects(sim, value):
    extra = {key: value for key in ("users", "channels", "groups", "ims", "mpims")}
    runner, base_url = await _odd_connect_server(sim, extra)
    rtm = RTMClient(token=sim.token, base_url=base_url, ping_interval=5)
    try:
        await asyncio.wait_for(rtm.connect(), GUARD)
        assert rtm.state == "connected" and rtm.last_error is None
    finally:
        await rtm.stop()
        await runner.cleanup()


async def test_unexpected_error_reading_the_connect_answer_is_recorded_and_retried(sim, monkeypatch):
    learn = RTMClient._connected
    failures = []

    def fails_once(self, data):
        # Fault injection: stands in for any bug while reading an answer.
        if not failures:
            failures.append(RuntimeError("boom"))
            raise failures[0]
        learn(self, data)

    monkeypatch.setattr(RTMClient, "_connected", fails_once)
    rtm = client_for(sim)
    await asyncio.wait_for(rtm.connect(), GUARD)
    assert len(sim.connect_calls) == 2
    assert rtm.last_error is failures[0]
    (error,) = recorded(rtm, "error")
    assert error["error"]["code"] == "connect_failed" and "RuntimeError: boom" in error["error"]["msg"]
    await rtm.stop()


async def test_an_absurd_retry_after_on_rtm_connect_is_capped_like_every_web_call(sim):
    from rtm_notebook.web import MAX_RETRY_AFTER

    sim.rate_limit_connect(calls=1, retry_after=86400)
    rtm = client_for(sim)
    rtm.start()
    try:
        await until(lambda: any(e["error"]["code"] == "connect_failed" for e in recorded(rtm, "error")), "the 429")
        (error,) = recorded(rtm, "error")
        assert f"(retrying in {MAX_RETRY_AFTER:.1f} s)" in error["error"]["msg"]
    finally:
        await rtm.async_stop()
