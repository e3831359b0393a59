"""The seed-compatible surface (slackclient 2.x ``slack.RTMClient``), over real sockets.

The seed's own example runs unchanged but for the import, the token and the
base_url: as a script in a subprocess, and on a running event loop.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from rtm_notebook import RTMClient
from rtm_notebook.errors import SlackClientError
from rtm_notebook.web import AsyncWebClient, WebClient

from rtm_support import GUARD, assert_clean, general, human, no_sockets_left, until

SEED_EXAMPLE = '''
import os
from rtm_notebook import RTMClient

@RTMClient.run_on(event="message")
def say_hello(**payload):
    data = payload['data']; web_client = payload['web_client']
    if 'text' in data and 'Hello' in data['text']:
        web_client.chat_postMessage(channel=data['channel'], text=f"Hi <@{data['user']}>!", thread_ts=data['ts'])
'''

# Only for the test: end the script once the bot's answer comes back.
STOP_AFTER_REPLY = '''
@RTMClient.run_on(event="message")
def stop_after_reply(**payload):
    data = payload['data']
    if data.get('text', '').startswith('Hi <@') and data.get('thread_ts'):
        print("REPLY SEEN", data['text'], flush=True)
        payload['rtm_client'].stop()
'''

START = '''
rtm_client = RTMClient(token=os.environ["SLACK_API_TOKEN"], connect_method='rtm.start', base_url=os.environ["SIM_BASE_URL"])
rtm_client.start()
import threading
print("START RETURNED", rtm_client.state, sorted(t.name for t in threading.enumerate()), flush=True)
'''


SIM_SEED = 5


def run_script(sim, tmp_path, body: str) -> subprocess.Popen:
    script = tmp_path / "bot.py"
    script.write_text(body)
    env = {**os.environ, "SLACK_API_TOKEN": sim.token, "SIM_BASE_URL": sim.base_url}
    return subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_socket(sim, proc, sockets=1):
    deadline = time.monotonic() + GUARD
    while sim.open_sockets < sockets:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the script never opened its socket"
        time.sleep(0.02)


def test_seed_example_as_a_script(sim, tmp_path):
    proc = run_script(sim, tmp_path, SEED_EXAMPLE + STOP_AFTER_REPLY + START)
    try:
        wait_for_socket(sim, proc)
        original = sim.post_message(human(sim), "general", "Hello bot")
        out, err = proc.communicate(timeout=GUARD)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"REPLY SEEN Hi <@{human(sim)}>!" in out
    # start() returned after stop(): stopped, and no handler thread left behind
    line = next(line for line in out.splitlines() if line.startswith("START RETURNED"))
    assert "stopped" in line and "rtm-handler" not in line
    answer = [p for p in sim.posted if p.get("text") == f"Hi <@{human(sim)}>!"]
    assert answer and answer[-1]["thread_ts"] == original["ts"]
    assert sim.token not in out + err


def test_ctrl_c_stops_a_script_cleanly(sim, tmp_path):
    proc = run_script(sim, tmp_path, SEED_EXAMPLE + START)
    try:
        wait_for_socket(sim, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=GUARD)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "START RETURNED stopped" in out and "rtm-handler" not in out
    assert "Traceback" not in err


def test_fatal_token_error_raises_from_start_in_a_script(sim, tmp_path):
    script = START.replace('os.environ["SLACK_API_TOKEN"]', '"xoxb-not-a-real-token"')
    proc = run_script(sim, tmp_path, SEED_EXAMPLE + script)
    out, err = proc.communicate(timeout=GUARD)
    assert proc.returncode == 1
    assert "RTMConnectError" in err and "invalid_auth" in err and "xoxb-not-a-real-token" not in err + out


async def test_seed_example_on_a_running_loop(sim):
    # The example verbatim, inside a coroutine: start() must not block or raise.
    @RTMClient.run_on(event="message")
    def say_hello(**payload):
        data = payload['data']
        web_client = payload['web_client']
        if 'text' in data and 'Hello' in data['text']:
            web_client.chat_postMessage(channel=data['channel'], text=f"Hi <@{data['user']}>!", thread_ts=data['ts'])
    rtm_client = RTMClient(token=sim.token, connect_method='rtm.start', base_url=sim.base_url)
    before = asyncio.all_tasks()
    task = rtm_client.start()
    assert isinstance(task, asyncio.Task) and not task.done()
    await until(lambda: rtm_client.state == "connected", "connected")
    original = sim.post_message(human(sim), "general", "Hello from a notebook")
    await until(lambda: any(p.get("thread_ts") == original["ts"] for p in sim.posted), "the bot's answer")
    await rtm_client.stop()
    assert task.done() and task.exception() is None
    assert_clean(rtm_client, before)
    await no_sockets_left(sim)


async def test_payload_open_event_and_web_client_kinds(sim):
    seen = {}

    @RTMClient.run_on(event="open")
    def on_open(**payload):
        seen["open"] = payload

    @RTMClient.run_on(event="hello")
    async def on_hello(**payload):
        seen["hello"] = payload

    rtm = RTMClient(token=sim.token, base_url=sim.base_url, connect_method="rtm.start")
    await rtm.connect()
    await until(lambda: len(seen) == 2, "open and hello callbacks")
    assert set(seen["open"]) == {"rtm_client", "web_client", "data"}
    assert seen["open"]["rtm_client"] is rtm
    data = seen["open"]["data"]
    assert data["ok"] is True and data["self"]["id"] == sim.bot_user_id and data["team"]["id"] == sim.team["id"]
    assert data["url"].startswith("ws") and isinstance(data["users"], list)  # rtm.start's snapshot
    assert isinstance(seen["open"]["web_client"], WebClient)  # sync callback, sync client
    assert isinstance(seen["hello"]["web_client"], AsyncWebClient)  # async callback, awaitable client
    assert seen["hello"]["data"]["type"] == "hello"
    await rtm.stop()


async def test_async_seed_callback_uses_the_awaitable_web_client(sim):
    @RTMClient.run_on(event="message")
    async def answer(**payload):
        data = payload["data"]
        if data.get("text") == "ping me":
            await payload["web_client"].chat_postMessage(channel=data["channel"], text="pong from async seed")

    rtm = RTMClient(token=sim.token, base_url=sim.base_url, run_async=True)
    task = rtm.start()
    assert isinstance(task, asyncio.Task)
    await rtm.connect()
    sim.post_message(human(sim), "general", "ping me")
    await until(lambda: any(p.get("text") == "pong from async seed" for p in sim.posted), "async answer")
    await rtm.async_stop()


async def test_on_with_lists_and_registration_after_start(sim):
    got = []

    def a(**payload):
        got.append(("a", payload["data"]["type"]))

    async def b(**payload):
        got.append(("b", payload["data"]["type"]))

    RTMClient.on(event=["hello", "message"], callback=[a, b])
    rtm = RTMClient(token=sim.token, base_url=sim.base_url)
    await rtm.connect()
    await until(lambda: sorted(got) == [("a", "hello"), ("b", "hello")], "hello to both")

    def late(**payload):
        got.append(("late", payload["data"]["type"]))

    RTMClient.on(event="message", callback=late)  # registered while the client runs
    sim.post_message(human(sim), "general", "after")
    await until(lambda: ("late", "message") in got and got.count(("a", "message")) == 1, "late callback")
    await rtm.stop()


def test_callback_validation_matches_slackclient():
    with pytest.raises(SlackClientError, match=r"The specified callback 'nope' is not callable\."):
        RTMClient.on(event="message", callback="nope")

    def no_kwargs(data):
        pass

    with pytest.raises(SlackClientError, match=r"The callback 'no_kwargs' must accept keyword arguments \(\*\*kwargs\)\."):
        RTMClient.run_on(event="message")(no_kwargs)
    with pytest.raises(SlackClientError):
        RTMClient.on(event="message", callback=[lambda **kw: None, no_kwargs])
    assert RTMClient._callbacks.get("message", []) == []


async def test_seed_send_ping_typing_over_websocket(sim):
    rtm = RTMClient(token=sim.token, base_url=sim.base_url)
    await rtm.connect()
    start = len(sim.received)
    pong = asyncio.ensure_future(rtm.wait_for("pong", timeout=GUARD))
    await rtm.ping()
    await pong
    await rtm.typing(channel=general(sim))
    payload = {"type": "message", "channel": general(sim), "text": "over the socket", "id": 4242}
    assert await rtm.send_over_websocket(payload=payload) == 4242
    await until(lambda: any(p.get("text") == "over the socket" for p in sim.posted), "posted")
    frames = sim.received[start:]
    assert [f["type"] for f in frames] == ["ping", "typing", "message"]
    assert frames[2]["id"] == 4242
    await rtm.stop()


OWN_LOOP = '''
import asyncio, os, threading
from rtm_notebook import RTMClient

@RTMClient.run_on(event="hello")
async def stop_on_hello(**payload):
    print("HELLO", flush=True)
    payload["rtm_client"].stop()

loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
rtm_client = RTMClient(token=os.environ["SLACK_API_TOKEN"], base_url=os.environ["SIM_BASE_URL"], run_async=True, loop=loop)
loop.run_until_complete(rtm_client.start())
pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
print("DONE", rtm_client.state, len(pending), sorted(t.name for t in threading.enumerate()), flush=True)
'''


def test_seed_async_usage_with_its_own_loop(sim, tmp_path):
    """slackclient's async recipe: run_async=True, loop=..., run_until_complete(rtm_client.start())."""
    proc = run_script(sim, tmp_path, OWN_LOOP)
    out, err = proc.communicate(timeout=GUARD)
    assert proc.returncode == 0, err
    assert "HELLO" in out
    # when the future start() returned completes, the client has already let go of everything
    assert "DONE stopped 0 ['MainThread']" in out, out


def test_redefining_a_seed_callback_replaces_it():
    for text in ("first", "second"):
        @RTMClient.run_on(event="message")
        def greet(**payload):  # the same notebook cell, run twice
            return text  # noqa: B023 (late binding is the point: the cell's latest text)
    assert [cb() for cb in RTMClient._callbacks["message"]] == ["second"]
    rtm = RTMClient(token="xoxb-x")
    assert [h.name for h in rtm.handlers] == [f"seed:message:{__name__}.test_redefining_a_seed_callback_replaces_it.<locals>.greet"]
