"""Case 3, bad input: malformed frames become error rows and the session goes on;
arbitrary frames and arbitrary rtm.connect answers never break the client;
bad magic arguments and bad handlers get clear errors.
"""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
import websockets
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from rtm_notebook import RTMClient
from rtm_notebook.errors import FATAL_CONNECT_ERRORS, SlackClientError
from rtm_notebook.rtm.connection import Connection
from rtm_notebook.sim.server import MALFORMED_KINDS
from rtm_notebook.transport import Wiring

from rel_support import GUARD, SeqTap, assert_exactly_once_in_order, client_for, errors, mark

# What each malformed frame of the workspace must become.
EXPECTED_CODE = {
    "not_json": "not_json",
    "binary": "not_json",  # a binary frame whose bytes are UTF-8 but not JSON
    "no_type": "no_type",
    "array": "not_object",
    "nested": "not_json",  # deeper than the decoder's limit
    "bad_utf8": "bad_utf8",
}


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
async def test_malformed_frame_is_recorded_and_the_session_goes_on(sim, kind):
    rtm = client_for(sim)
    tap = SeqTap(rtm)
    await asyncio.wait_for(rtm.connect(), GUARD)
    sim.send_malformed(kind)
    await mark(sim, tap, f"after {kind}")  # a normal message still arrives, on the same socket
    await rtm.stop()

    assert rtm.connection_number == 1
    assert tap.problems == []
    assert_exactly_once_in_order(rtm, sim)
    bad = [e for e in tap.errors if "raw" in e]
    rows = [e["malformed"] for e in errors(rtm) if "malformed" in e]
    if kind == "huge":  # 2 MiB of text is big, not wrong: kept whole
        assert bad == [] and rows == []
        df = rtm.events
        sizes = df[df["type"] == "message"]["text"].str.len().tolist()
        assert 2 << 20 in sizes
        return
    assert len(bad) == 1, bad
    assert bad[0]["error"]["code"] == EXPECTED_CODE[kind]
    assert bad[0]["error"]["msg"] and bad[0]["raw"]
    assert rows == [bad[0]["raw"]]  # the row in rtm.events keeps the frame as it arrived


# -- hypothesis: any frames over a real socket ---------------------------------------

frames = st.lists(
    st.one_of(
        st.text(max_size=60),
        st.binary(max_size=60),
        st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=6), max_size=4).map(json.dumps),
        st.builds(lambda t, extra: json.dumps({"type": t, **extra}), st.text(max_size=8),
                  st.dictionaries(st.text(max_size=6), st.integers(-5, 5), max_size=3)),
        st.just("[" * 3000 + "]" * 3000),
    ),
    max_size=12,
)


async def _serve_frames(frames_to_send: list) -> list[tuple[dict, str]]:
    got: list[tuple[dict, str]] = []

    async def handler(ws):
        for f in frames_to_send:
            await ws.send(f)
        await ws.send('{"type":"end"}')
        await ws.wait_closed()

    async with websockets.serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        wiring = Wiring(1, intake=lambda e, raw=None: got.append((e, raw)), sent=lambda m, t: None, record=None)
        conn = Connection(f"ws://127.0.0.1:{port}/", wiring, ping_interval=30, pong_timeout=30)
        await conn.open()
        reader = asyncio.ensure_future(conn.run())
        async with asyncio.timeout(GUARD):
            while not got or got[-1][0].get("type") != "end":
                await asyncio.sleep(0.005)
        await conn.close()
        await asyncio.wait_for(reader, GUARD)
    return got


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames)
def test_any_frames_over_a_socket_each_become_exactly_one_event_in_order(frames_to_send):
    got = asyncio.run(_serve_frames(frames_to_send))
    assert len(got) == len(frames_to_send) + 1
    for sent, (event, raw) in zip(frames_to_send, got):
        assert isinstance(event, dict) and ("type" in event or "reply_to" in event)
        try:
            text = sent if isinstance(sent, str) else sent.decode()
            value = orjson.loads(text)
        except (UnicodeDecodeError, orjson.JSONDecodeError):
            value = None
        if isinstance(value, dict) and ("type" in value or "reply_to" in value):
            assert event == value
        else:
            assert event["type"] == "error" and isinstance(event["raw"], str)
            assert raw == event["raw"]


# -- hypothesis: any rtm.connect answer, from a real HTTP server ----------------------

SECRET = "xoxb-1234-5678-reliabilitysecret"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=10,
)
# Socket URLs that fail without leaving loopback (no DNS lookups).
bad_urls = st.sampled_from(["ws://127.0.0.1:1/x", "http://127.0.0.1:1/", "wss://[::1", "ws://127.0.0.1:99999/",
                            "", "ws://", "ws://127.0.0.1:1/" + "x" * 5000]) | st.text(max_size=20).filter(
    lambda t: not t.lower().startswith(("ws", "http")))
connect_bodies = st.one_of(
    st.binary(max_size=80),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda err: json.dumps({"ok": False, "error": err}).encode(),
              st.sampled_from(sorted(FATAL_CONNECT_ERRORS) + ["ratelimited", "fatal_error", "nope"]) | st.text(max_size=10)),
    st.builds(lambda url, extra: json.dumps({"ok": True, "url": url, **extra}).encode(), bad_urls,
              st.dictionaries(st.sampled_from(["team", "self", "users", "channels", "groups", "ims", "mpims"]),
                              json_values, max_size=3)),
    st.binary(max_size=40).map(lambda b: b + SECRET.encode()),
)
statuses = st.sampled_from([200, 200, 200, 400, 404, 429, 500, 503])
retry_after = st.sampled_from([None, "0", "1", "abc", "-3", "1e9"])


async def _first_connect_outcome(status: int, retry: str | None, body: bytes) -> RTMClient:
    async def answer(request):
        headers = {"Content-Type": "application/json"}
        if retry is not None:
            headers["Retry-After"] = retry
        return web.Response(status=status, body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/api/{method}", answer)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rtm = RTMClient(token=SECRET, base_url=f"http://127.0.0.1:{port}/api/", timeout=5)
    task = rtm.start()
    try:
        async with asyncio.timeout(GUARD):
            while not (rtm.state == "stopped" or any(
                    isinstance(e.get("error"), dict) and e["error"].get("code") in ("connect_failed", "socket_failed")
                    for e in errors(rtm))):
                await asyncio.sleep(0.005)
                assert not task.done() or rtm.state == "stopped", "the session task ended without stopping"
    finally:
        await rtm.async_stop()
        await runner.cleanup()
    assert task.done() and not task.cancelled() and task.exception() is None
    return rtm


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=statuses, retry=retry_after, body=connect_bodies)
def test_any_rtm_connect_answer_is_retried_or_stops_with_a_clear_error(status, retry, body):
    rtm = asyncio.run(_first_connect_outcome(status, retry, body))
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    fatal = (status == 200 and isinstance(data, dict) and data.get("ok") is False
             and data.get("error") in FATAL_CONNECT_ERRORS)
    if fatal:
        assert rtm.last_error is not None and rtm.last_error.error == data["error"]
    for e in errors(rtm):
        assert SECRET not in json.dumps(e)
    assert SECRET not in repr(rtm) and SECRET not in str(rtm.last_error)


# -- bad magic arguments and bad handlers ---------------------------------------------


def usage_error(shell, cell: str) -> str:
    result = shell.run_cell(cell, silent=True)
    assert isinstance(result.error_in_exec, UsageError), (cell, result.error_in_exec)
    return str(result.error_in_exec)


BEFORE_CONNECT = [
    ("%rtm_connect --rate -1", "--rate 20"),
    ("%rtm_connect --name 1bad", "--name rtm"),
    ("%rtm_connect --token-env RTM_NO_SUCH_VARIABLE", "RTM_NO_SUCH_VARIABLE"),
    ("%rtm_connect --bogus", "--bogus"),
    ("%rtm_on", "event"),
    ("%rtm_log -n x", "-n"),
    ("%rtm_stop", "nothing to stop"),
    ("%rtm_off", "%rtm_connect"),
    ("%rtm_handlers extra", "no arguments"),
]
AFTER_CONNECT = [
    ("%rtm_on message", "%%rtm_on message"),
    ("%rtm_on mesage rel_good", "Did you mean 'message'"),
    ("%rtm_on message rel_missing", "def rel_missing(client, event)"),
    ("%rtm_on message rel_not_a_function", "def rel_not_a_function(client, event)"),
    ("%rtm_on message rel_good --match '('", "regular expression"),
    ("%rtm_on message rel_good --channel nosuch", "Unknown channel 'nosuch'"),
    ("%%rtm_on message rel_good\npass", "cell form"),
    ("%%rtm_on message\n   ", "empty"),
    ("%rtm_off rel_nosuch", "rel_nosuch"),
    ("%rtm_stop rel_nosuch", "rel_nosuch"),
]


def test_bad_magic_arguments_say_what_to_type(token_env, shell, sim):
    for cell, hint in BEFORE_CONNECT:
        assert hint in usage_error(shell, cell), cell
    result = shell.run_cell(f"%rtm_connect --token-env {token_env} --base-url {sim.base_url}", silent=True)
    assert result.error_in_exec is None, result.error_in_exec
    shell.run_cell("async def rel_good(client, event): pass\nrel_not_a_function = 3", silent=True)
    for cell, hint in AFTER_CONNECT:
        assert hint in usage_error(shell, cell), cell
    # none of the refused registrations left a handler behind
    assert len(shell.user_ns["rtm"].handlers) == 0


async def test_bad_handler_signatures_are_refused_at_registration(sim):
    rtm = client_for(sim)

    async def one_arg(event):
        pass

    def three_required(client, event, extra):
        pass

    def seed_without_kwargs(data):
        pass

    with pytest.raises(SlackClientError, match=r"two arguments \(client, event\)"):
        rtm.on("message")(one_arg)
    with pytest.raises(SlackClientError, match=r"two arguments \(client, event\)"):
        rtm.on("message")(three_required)
    with pytest.raises(SlackClientError, match=r"\*\*kwargs"):
        rtm.on(event="message", callback=seed_without_kwargs)
    with pytest.raises(SlackClientError, match=r"\*\*kwargs"):
        RTMClient.on(event="message", callback=seed_without_kwargs)
    with pytest.raises(SlackClientError, match="not callable"):
        RTMClient.on(event="message", callback=42)
    def seed_ok(**payload):
        pass

    with pytest.raises(SlackClientError, match="event type"):
        rtm.on(event=[], callback=seed_ok)
    with pytest.raises(SlackClientError, match="event type"):
        rtm.on(["message", 3])
    assert len(rtm.handlers) == 0
    assert seed_without_kwargs not in RTMClient._callbacks.get("message", [])
