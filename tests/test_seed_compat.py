"""The seed surface behaves as slackclient 2.x does where its users rely on it.

Each scenario is written as a slackclient user would write it (public API
only) and runs over real sockets: against the simulated workspace, and
against a minimal mock Slack written here (a server that answers
``rtm.connect`` with errors, holds back ``hello``, or closes sockets).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from aiohttp import web

from rtm_notebook import RTMClient
from rtm_notebook.errors import (
    RTMConnectError,
    SlackApiError,
    SlackClientError,
    SlackClientNotConnectedError,
)

from rtm_support import GUARD, client_for, general, human, rtm_threads, until

SIM_SEED = 5


class MockSlack:
    """A tiny Slack in a thread: ``rtm.connect`` answers ``errors`` first
    (Slack error codes), then a socket URL; the socket waits
    ``hello_delay`` seconds before ``hello`` and, with ``close_after_hello``,
    closes right after it. ``calls`` counts rtm.connect calls; ``received``
    holds the frames clients sent."""

    def __init__(self, *, errors: list[str] = (), hello_delay: float = 0.0, close_after_hello: bool = False) -> None:
        self.errors = list(errors)
        self.hello_delay = hello_delay
        self.close_after_hello = close_after_hello
        self.calls = 0
        self.received: list[dict] = []
        self._sockets: set[web.WebSocketResponse] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="mock-slack", daemon=True)

    def __enter__(self) -> MockSlack:
        self._thread.start()
        assert self._ready.wait(GUARD)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(GUARD)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/api/rtm.connect", self._connect)
        app.router.add_get("/ws", self._socket)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        # Close what is still open while this loop runs: a transport left to the
        # garbage collector after the loop is gone fails in asyncio on 3.13.
        for ws in list(self._sockets):
            await ws.close()
        await runner.cleanup()
        await asyncio.sleep(0.05)

    async def _connect(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.errors:
            return web.json_response({"ok": False, "error": self.errors.pop(0)})
        return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.port}/ws",
                                  "team": {"id": "T1", "name": "Mock"}, "self": {"id": "U1", "name": "bot"}})

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        await asyncio.sleep(self.hello_delay)
        await ws.send_json({"type": "hello"})
        if self.close_after_hello:
            await ws.close()
            return ws
        async for msg in ws:
            frame = msg.json()
            self.received.append(frame)
            if frame.get("type") == "message":
                await ws.send_json({"ok": True, "reply_to": frame["id"], "ts": "1355517523.000005",
                                    "text": frame.get("text")})
        return ws


# -- start() and the caller's loop -----------------------------------------------------------


def test_start_runs_on_the_event_loop_the_caller_set(sim):
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    ran = []
    try:
        loop.call_soon(ran.append, "scheduled by the caller")

        @RTMClient.run_on(event="hello")
        def stop_on_hello(**payload):
            ran.append("hello")
            payload["rtm_client"].stop()

        rtm = RTMClient(token=sim.token, base_url=sim.base_url)
        rtm.start()  # blocks until stop(), like slackclient's
        assert ran == ["scheduled by the caller", "hello"]
        assert rtm.loop is loop and rtm.state == "stopped"
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_start_with_no_loop_set_makes_its_own_without_a_warning(sim, recwarn):
    asyncio.set_event_loop(None)

    @RTMClient.run_on(event="hello")
    def stop_on_hello(**payload):
        payload["rtm_client"].stop()

    rtm = RTMClient(token=sim.token, base_url=sim.base_url)
    rtm.start()
    assert rtm.state == "stopped"
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)], [str(w.message) for w in recwarn]


# -- auto_reconnect=False --------------------------------------------------------------------


def test_auto_reconnect_off_a_failed_connect_raises_out_of_start():
    with MockSlack(errors=["service_unavailable"] * 5) as slack:
        rtm = RTMClient(token="xoxb-mock", base_url=slack.base_url, auto_reconnect=False)
        with pytest.raises(SlackApiError) as caught:
            rtm.start()
        assert caught.value.response["error"] == "service_unavailable"
        assert slack.calls == 1
        assert rtm.state == "stopped"


async def test_auto_reconnect_off_on_a_running_loop_stops_and_records_the_error(sim):
    sim.fail_connect("service_unavailable", calls=5)
    rtm = client_for(sim, auto_reconnect=False)
    task = rtm.start()
    await asyncio.wait_for(asyncio.shield(task), GUARD)
    assert rtm.state == "stopped" and len(sim.connect_calls) == 1
    assert isinstance(rtm.last_error, SlackApiError)
    errors = rtm.events.query("type == 'error'")
    assert errors["text"].str.contains("service_unavailable").any()


def test_auto_reconnect_off_a_closed_socket_ends_start():
    with MockSlack(close_after_hello=True) as slack:
        rtm = RTMClient(token="xoxb-mock", base_url=slack.base_url, auto_reconnect=False)
        rtm.start()  # returns once the socket closed; no second rtm.connect
        assert slack.calls == 1 and rtm.state in ("disconnected", "stopped")


# -- close callbacks on stop -----------------------------------------------------------------


async def test_every_close_callback_runs_on_every_stop(sim):
    ran = {"sync": 0, "async": 0}

    @RTMClient.run_on(event="close")
    def sync_close(**payload):
        ran["sync"] += 1

    @RTMClient.run_on(event="close")
    async def async_close(**payload):
        ran["async"] += 1

    for n in range(1, 31):
        rtm = client_for(sim)
        await asyncio.wait_for(rtm.connect(), GUARD)
        await asyncio.wait_for(rtm.async_stop(), GUARD)
        assert ran == {"sync": n, "async": n}, f"stop {n}"


async def test_events_queued_at_stop_are_run_or_counted_as_dropped_and_close_always_runs(sim):
    seen, closed = [], []
    rtm = client_for(sim)

    @rtm.on("message", match="^queued ")
    def slow(client, event):
        time.sleep(0.02)
        seen.append(event["text"])

    rtm.on("close")(lambda client, event: closed.append(event["reason"]))
    await rtm.connect()
    sent = [f"queued {i}" for i in range(50)]
    for text in sent:
        sim.post_message(human(sim), general(sim), text)
    sim.post_message(human(sim), general(sim), "not for slow")
    await until(lambda: rtm.counts["message"] >= 51, "the messages to arrive")
    queued = rtm.handlers["slow"].queued
    await rtm.async_stop()  # while most of them still wait in the handler's queue
    dropped = rtm.handlers["slow"].dropped
    assert queued > 0 and dropped > 0
    assert seen == sent[:len(seen)] and len(seen) + dropped == 50  # none lost unaccounted; the filtered one not counted
    assert closed == ["closed by client"]


# -- error callbacks -------------------------------------------------------------------------


async def test_seed_error_callbacks_get_the_exception_and_modern_ones_the_event(sim):
    sim.fail_connect("service_unavailable", calls=1)
    seed_data, modern_events = [], []

    @RTMClient.run_on(event="error")
    def on_error(**payload):
        seed_data.append(payload["data"])

    rtm = client_for(sim)
    rtm.on("error")(lambda client, event: modern_events.append(event))
    await asyncio.wait_for(rtm.connect(), GUARD)
    await until(lambda: seed_data and modern_events, "both error callbacks")
    await rtm.async_stop()
    assert isinstance(seed_data[0], SlackApiError) and seed_data[0].response["error"] == "service_unavailable"
    assert isinstance(modern_events[0], dict) and modern_events[0]["error"]["code"] == "connect_failed"


# -- exceptions ------------------------------------------------------------------------------


def test_a_refused_token_is_a_slack_api_error_out_of_start(sim):
    rtm = RTMClient(token="xoxb-not-a-real-token", base_url=sim.base_url)
    with pytest.raises(SlackApiError) as caught:
        rtm.start()
    assert isinstance(caught.value, RTMConnectError)
    assert caught.value.response["error"] == "invalid_auth"
    assert "xoxb-not-a-real-token" not in str(caught.value)


def test_exception_bases_are_slackclients():
    assert issubclass(SlackApiError, SlackClientError)
    assert issubclass(SlackClientNotConnectedError, SlackClientError)
    assert issubclass(RTMConnectError, SlackApiError)


def test_sending_while_not_connected_says_so_before_looking_at_the_payload():
    rtm = RTMClient(token="xoxb-x")
    with pytest.raises(SlackClientNotConnectedError, match="start"):
        rtm.send_over_websocket(payload={})


# -- token -----------------------------------------------------------------------------------


async def test_token_is_settable_before_start(sim):
    rtm = RTMClient(token="xoxb-placeholder", base_url=sim.base_url)
    rtm.token = sim.token
    await asyncio.wait_for(rtm.connect(), GUARD)
    with pytest.raises(SlackClientError, match="stop"):
        rtm.token = "xoxb-other"
    await rtm.async_stop()
    assert sim.token not in repr(rtm)


# -- deliberate difference: sends wait for hello ---------------------------------------------


async def test_a_message_sent_before_hello_goes_out_after_it():
    with MockSlack(hello_delay=0.3) as slack:
        rtm = RTMClient(token="xoxb-mock", base_url=slack.base_url)
        rtm.start()
        await until(lambda: rtm.state == "connecting" and rtm.connection_number == 1, "the socket to open")
        reply = rtm.send_message("C1", "before hello")
        assert not slack.received  # held back until hello
        assert (await asyncio.wait_for(reply, GUARD))["text"] == "before hello"
        assert slack.received[0]["text"] == "before hello"
        await rtm.async_stop()


# -- stopping from inside, and what a stop cannot deliver --------------------------------------


async def test_an_async_handler_may_await_stop_and_the_client_restarts_clean(sim):
    rtm = client_for(sim)
    calls = []

    @rtm.on("message", match="^stop now$")
    async def stopper(client, event):
        calls.append(event["text"])
        await client.stop()

    await rtm.connect()
    sim.post_message(human(sim), general(sim), "stop now")
    await until(lambda: rtm.state == "stopped", "the stop a handler asked for")
    await asyncio.wait_for(rtm.async_stop(), GUARD)
    assert rtm.handlers._loop is None  # every worker ended, the registry released
    assert rtm.events["type"].tolist()[-1] == "state_change"
    await asyncio.wait_for(rtm.connect(), GUARD)  # and it starts again, its handler with it
    sim.post_message(human(sim), general(sim), "stop now")
    await until(lambda: len(calls) == 2, "the handler after the restart")
    await asyncio.wait_for(rtm.async_stop(), GUARD)


async def test_a_handler_stuck_past_the_stop_timeout_counts_what_it_never_ran(sim, monkeypatch):
    import rtm_notebook.handlers as handlers_module

    monkeypatch.setattr(handlers_module, "STOP_TIMEOUT", 0.3)
    release = threading.Event()
    rtm = client_for(sim)

    @rtm.on("message", match="^slow ")
    def stuck(client, event):
        release.wait(GUARD)

    await rtm.connect()
    for i in range(6):
        sim.post_message(human(sim), general(sim), f"slow {i}")
    sim.post_message(human(sim), general(sim), "filtered out")
    await until(lambda: rtm.counts["message"] >= 7, "the messages")
    await rtm.async_stop()
    release.set()
    (stats,) = rtm.handlers.stats()
    assert stats["dropped"] == 5  # the first was running; the filtered one never counts
    await until(lambda: not rtm_threads(), "the stuck thread to end once its call returned")


async def test_replacing_a_handler_counts_its_queue_as_dropped():
    from rtm_notebook.handlers import HandlerRegistry

    reg = HandlerRegistry(None)
    gate = asyncio.Event()

    async def slow(client, event):
        await gate.wait()

    reg.add("message", slow, name="h", filters={"match": "^x"})
    reg.start(asyncio.get_running_loop())
    for text in ("x1", "x2", "x3", "no"):
        reg.dispatch("message", {"type": "message", "text": text})
    await asyncio.sleep(0.05)
    old = reg["h"]
    reg.add("message", slow, name="h")  # a cell run again
    gate.set()
    await asyncio.sleep(0.05)
    assert old.dropped == 2  # x2 and x3; x1 was running, "no" would not have run
    await reg.stop()
