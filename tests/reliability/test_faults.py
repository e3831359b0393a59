"""Case 2, faults survived: what the client does when the network or Slack misbehaves.

Every fault comes from the simulated workspace over real sockets. Where the
issue asks how long something takes, the test compares times the workspace
and the client recorded (``sim.connect_calls``, ``received_at``) against
generous bounds derived from the client's own settings: causality, never a
speed target.
"""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest

from rtm_notebook import RTMClient
from rtm_notebook.errors import DeliveryError, RTMConnectError

from rel_support import (
    GUARD,
    SeqTap,
    assert_exactly_once_in_order,
    assert_nothing_left,
    client_for,
    closes,
    errors,
    general,
    mark,
    recorded_seqs,
    rows_of,
    until,
)

# Added to every "how long" bound: room for a loaded 2-core machine, still
# far below what a client ignoring the setting would take (30 s pings, a
# minute of backoff, a retry storm).
SLACK = 3.0


async def connected(rtm, number: int) -> None:
    await until(lambda: rtm.state == "connected" and rtm.connection_number >= number,
                f"connection #{number} to say hello")


async def test_tcp_drop_mid_burst_keeps_what_was_received_and_reconnects(sim, fast_backoff):
    rtm = client_for(sim)
    tap = SeqTap(rtm)
    await asyncio.wait_for(rtm.connect(), GUARD)
    first = rtm._link
    sim.burst(20_000)
    await until(lambda: tap.last[1] >= 2_000, "the burst to be under way")
    sim.drop_connections()
    await connected(rtm, 2)
    await mark(sim, tap, "after the drop")
    await rtm.stop()

    assert tap.problems == []
    # Connection 1 was aborted mid-burst: what reached the client is a
    # gapless prefix, and every frame the socket read was recorded.
    assert_exactly_once_in_order(rtm, sim, complete={2})
    seqs = recorded_seqs(rtm)
    assert 2_000 <= len(seqs[1]) <= sim.sent[1]
    assert first.frames == len(seqs[1])
    assert closes(rtm)[0]["connection"] == 1
    assert closes(rtm)[0]["reason"] in ("connection lost",) or closes(rtm)[0]["reason"].startswith("network")


async def test_goodbye_reconnects_after_reading_everything_before_it(sim, fast_backoff):
    rtm = client_for(sim)
    tap = SeqTap(rtm)
    await asyncio.wait_for(rtm.connect(), GUARD)
    sim.burst(500)
    sim.send_goodbye()
    await connected(rtm, 2)
    await mark(sim, tap, "after goodbye")
    await rtm.stop()

    assert tap.problems == []
    assert_exactly_once_in_order(rtm, sim)  # graceful: nothing may be missing
    df = rtm.events
    conn1 = df[(df["connection"] == 1) & df["raw"].str.contains('"sim_seq"', regex=False)]
    assert conn1["type"].tolist()[-1] == "goodbye"
    assert closes(rtm)[0]["reason"] == "goodbye"


@pytest.mark.parametrize("code", [1000, 1001, 1011])
async def test_close_codes_reconnect(sim, fast_backoff, code):
    rtm = client_for(sim)
    tap = SeqTap(rtm)
    await asyncio.wait_for(rtm.connect(), GUARD)
    sim.burst(200)
    await until(lambda: tap.last[1] == sim.sent[1] >= 201, "the burst")
    sim.close_sockets(code, "fault injected")
    await connected(rtm, 2)
    await mark(sim, tap, f"after close {code}")
    await rtm.stop()

    assert tap.problems == []
    assert_exactly_once_in_order(rtm, sim)
    assert closes(rtm)[0]["reason"] == f"closed {code} fault injected"


async def test_stalled_server_is_detected_by_an_unanswered_ping_then_reconnects(sim, fast_backoff):
    interval = 0.5  # the client's pong timeout equals its ping interval
    rtm = client_for(sim, ping_interval=interval)
    await asyncio.wait_for(rtm.connect(), GUARD)
    stalled_at = time.time()
    sim.stall()  # until told otherwise: no frames, no pongs
    await until(lambda: any(c["connection"] == 1 for c in closes(rtm)), "the stall to be detected")
    # Causality: the client gave up on connection 1 while the workspace was
    # still stalled, because its ping went unanswered.
    df = rtm.events
    detected_at = df[df["type"] == "close"]["received_at"].iloc[0].timestamp()
    reason = closes(rtm)[0]["reason"]
    assert reason.startswith("stale"), reason
    pings = df[(df["type"] == "ping") & (df["direction"] == "out") & (df["connection"] == 1)]
    assert len(pings) >= 1
    pongs = df[(df["type"] == "pong") & (df["connection"] == 1)]
    last_ping = orjson.loads(pings["raw"].iloc[-1])["id"]
    assert last_ping not in set(pongs["reply_to"].dropna().astype(int))
    # "within ping_interval + pong timeout", plus room for a loaded machine
    assert detected_at - stalled_at <= interval + interval + SLACK
    sim.stall(0)
    await connected(rtm, 2)
    await rtm.stop()


async def test_expired_url_is_reported_and_the_next_url_works(sim, fast_backoff):
    rtm = client_for(sim)
    tap = SeqTap(rtm)
    await asyncio.wait_for(rtm.connect(), GUARD)
    sim.expire_next_url()
    sim.drop_connections()
    await connected(rtm, 3)
    await mark(sim, tap, "after the expired url")
    await rtm.stop()

    assert tap.problems == []
    assert_exactly_once_in_order(rtm, sim, complete={2, 3})
    expired = [e for e in errors(rtm) if isinstance(e.get("error"), dict) and e["error"].get("code") == 1]
    assert len(expired) == 1 and "expired" in expired[0]["error"]["msg"]
    df = rtm.events
    assert df[(df["connection"] == 2) & (df["type"] == "hello")].empty


async def test_rtm_connect_429_waits_retry_after_before_retrying(sim):
    rtm = client_for(sim)
    await asyncio.wait_for(rtm.connect(), GUARD)
    sim.rate_limit_connect(calls=2, retry_after=1)
    sim.drop_connections()
    await connected(rtm, 2)
    await rtm.stop()

    calls = sim.connect_calls
    assert len(calls) == 4  # first connect, two 429s, the retry that worked
    for earlier, later in zip(calls[1:], calls[2:]):
        # never earlier than Retry-After; reconnects once it elapsed
        assert later - earlier >= 1.0
        assert later - earlier <= 1.0 + SLACK
    failed = [e for e in errors(rtm) if isinstance(e.get("error"), dict) and e["error"].get("code") == "connect_failed"]
    assert len(failed) == 2 and all("rate limited" in e["error"]["msg"] for e in failed)


def _most_calls(window: float, base: float, cap: float) -> int:
    """The most rtm.connect calls the backoff allows in ``window`` seconds.

    The n-th consecutive failure waits at least half of min(cap, base * 2**(n-1))
    (jitter is 0.5..1 of the step); count calls as if every wait were that short.
    """
    n, spent = 1, 0.0
    while True:
        shortest = 0.5 * min(cap, base * 2 ** (n - 1))
        if spent + shortest > window:
            return n
        spent += shortest
        n += 1


@pytest.mark.parametrize("error", ["service_unavailable", "internal_error"])
async def test_refusing_every_connect_for_a_while_backs_off_boundedly(sim, fast_backoff, error):
    base, cap = fast_backoff.RECONNECT_BASE, fast_backoff.RECONNECT_MAX
    rtm = client_for(sim)
    await asyncio.wait_for(rtm.connect(), GUARD)
    sim.fail_connect(error, calls=10**6)
    sim.drop_connections()
    outage = 2.5  # stands for Slack's minute, with the backoff scaled down to match
    refused_from = time.monotonic()
    await asyncio.sleep(outage)
    sim.fail_connect(error, calls=0)
    lifted_at = time.monotonic()
    await connected(rtm, 2)
    await rtm.stop()

    calls = sim.connect_calls[1:]
    during = [t for t in calls if refused_from <= t < lifted_at]
    assert len(during) >= 3, "the client stopped retrying"
    # no storm: never more calls than the backoff allows
    assert len(during) <= _most_calls(lifted_at - refused_from, base, cap)
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    # every wait is at least the jittered step, and never more than the cap (plus slack)
    assert all(g >= 0.5 * base for g in gaps), gaps
    assert all(g <= cap + SLACK for g in gaps), gaps
    assert sum(g >= 0.5 * cap for g in gaps) >= 2, f"the backoff never grew to its cap: {gaps}"
    failed = [e for e in errors(rtm) if isinstance(e.get("error"), dict) and e["error"].get("code") == "connect_failed"]
    assert len(failed) == len(calls) - 1 and all(error in e["error"]["msg"] for e in failed)


@pytest.mark.parametrize("error, hint", [
    ("invalid_auth", "token"),
    ("not_allowed_token_type", "Socket Mode"),
])
async def test_fatal_token_errors_stop_after_exactly_one_attempt(sim, error, hint):
    tasks_before = asyncio.all_tasks()
    threads_before = set(threading.enumerate())
    if error == "invalid_auth":  # a token this workspace never issued
        rtm = RTMClient(token="xoxb-0000-never-issued-by-this-workspace", base_url=sim.base_url)
    else:  # Slack's answer to a modern app's token
        rtm = client_for(sim)
        sim.fail_connect(error, calls=1)

    @rtm.on("message")
    def handler(client, event):
        pass

    with pytest.raises(RTMConnectError) as info:
        await asyncio.wait_for(rtm.connect(), GUARD)
    await asyncio.wait_for(rtm.async_stop(), GUARD)
    exc = info.value
    assert exc.error == error and hint in exc.hint and exc.hint in str(exc)
    assert rtm.state == "stopped" and rtm.last_error is exc
    assert len(sim.connect_calls) == 1
    assert_nothing_left(rtm, sim, tasks_before, threads_before)
    assert any(e["error"].get("code") == error for e in errors(rtm) if isinstance(e.get("error"), dict))


async def test_stop_during_reconnect_backoff_leaves_nothing(sim):
    tasks_before = asyncio.all_tasks()
    threads_before = set(threading.enumerate())
    rtm = client_for(sim)

    @rtm.on("message")
    def handler(client, event):
        pass

    await asyncio.wait_for(rtm.connect(), GUARD)
    sim.fail_connect("service_unavailable", calls=10**6)
    sim.drop_connections()
    await until(lambda: len(sim.connect_calls) >= 2 and rtm.state == "reconnecting", "a refused reconnect")
    await asyncio.wait_for(rtm.stop(), GUARD)
    assert_nothing_left(rtm, sim, tasks_before, threads_before)
    await until(lambda: sim.open_sockets == 0, "the workspace to see no socket")
    calls = len(sim.connect_calls)
    await asyncio.sleep(1.5)  # longer than the next backoff step: a live session would call again
    assert len(sim.connect_calls) == calls


async def test_stop_while_the_socket_is_stalled_leaves_nothing(sim):
    tasks_before = asyncio.all_tasks()
    threads_before = set(threading.enumerate())
    rtm = client_for(sim, ping_interval=0.3)

    @rtm.on("*")
    async def handler(client, event):
        pass

    await asyncio.wait_for(rtm.connect(), GUARD)
    sim.stall()
    await until(lambda: rtm.state == "reconnecting" or rtm.connection_number >= 2, "the stall to be noticed")
    await asyncio.wait_for(rtm.stop(), GUARD)
    sim.stall(0)
    assert_nothing_left(rtm, sim, tasks_before, threads_before)
    await until(lambda: sim.open_sockets == 0, "the workspace to see no socket")


async def test_message_sent_while_disconnected_is_delivered_after_reconnect(sim, fast_backoff):
    rtm = client_for(sim)
    await asyncio.wait_for(rtm.connect(), GUARD)
    sim.fail_connect("service_unavailable", calls=3)
    sim.drop_connections()
    await until(lambda: rtm.state == "reconnecting", "the drop to be noticed")
    reply_fut = rtm.send_message(general(sim), "written while disconnected")
    reply = await asyncio.wait_for(reply_fut, GUARD)
    assert reply["ok"] is True and reply["ts"]
    assert [p["text"] for p in sim.posted if p.get("text") == "written while disconnected"] == ["written while disconnected"]
    out = rows_of(rtm, "message")
    out = out[out["direction"] == "out"]
    assert out["connection"].tolist() == [2]
    await rtm.stop()


async def test_message_queued_while_disconnected_fails_explicitly_on_stop(sim):
    rtm = client_for(sim)
    await asyncio.wait_for(rtm.connect(), GUARD)
    sim.fail_connect("service_unavailable", calls=10**6)
    sim.drop_connections()
    await until(lambda: rtm.state == "reconnecting", "the drop to be noticed")
    reply_fut = rtm.send_message(general(sim), "never sent")
    await rtm.stop()
    with pytest.raises(DeliveryError, match="not sent"):
        await reply_fut
    assert any(e["error"].get("code") == "not_delivered" for e in errors(rtm) if isinstance(e.get("error"), dict))
    assert all(p.get("text") != "never sent" for p in sim.posted)


async def test_message_whose_reply_is_lost_with_the_socket_fails_explicitly(sim, fast_backoff):
    rtm = client_for(sim, ping_interval=0.5)
    await asyncio.wait_for(rtm.connect(), GUARD)
    sim.stall()  # the workspace takes the message but its reply never comes
    reply_fut = rtm.send_message(general(sim), "reply lost")
    with pytest.raises(DeliveryError, match="may or may not"):
        await asyncio.wait_for(reply_fut, GUARD)
    sim.stall(0)
    await connected(rtm, 2)
    await rtm.stop()


class _SilentApi:
    """A Web API on its own thread and loop that accepts rtm.connect and never answers."""

    def __init__(self) -> None:
        self.calls = 0
        self.base_url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="silent-api", daemon=True)

    async def _serve(self) -> None:
        from aiohttp import web

        async def never(request):
            self.calls += 1
            await asyncio.sleep(3600)

        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/api/{method}", never)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/"
        self._ready.set()
        await self._done.wait()
        await runner.cleanup()

    def __enter__(self) -> _SilentApi:
        self._thread.start()
        assert self._ready.wait(GUARD)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join(GUARD)


async def test_stop_while_rtm_connect_is_in_flight_leaves_nothing():
    with _SilentApi() as api:
        tasks_before = asyncio.all_tasks()
        threads_before = set(threading.enumerate())
        rtm = RTMClient(token="xoxb-0000-silent", base_url=api.base_url)
        rtm.start()
        await until(lambda: api.calls == 1, "rtm.connect to be in flight")
        assert rtm.state == "connecting"
        await asyncio.wait_for(rtm.stop(), GUARD)
        assert_nothing_left(rtm, None, tasks_before, threads_before)
