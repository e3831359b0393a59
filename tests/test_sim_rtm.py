"""The simulated workspace's RTM socket, over real loopback sockets."""

from __future__ import annotations

import asyncio
import time

import pytest

from rtm_notebook.sim import SimWorkspace
from sim_support import Socket, api, channel_id, ok, socket_url

import websockets


@pytest.fixture
def sim():
    with SimWorkspace(seed=3) as s:
        yield s


async def test_hello_is_first_and_sim_seq_counts(sim):
    sock = await (await Socket.open(sim)).hello()
    sim.burst(50)
    frames = [await sock.recv() for _ in range(50)]
    assert [f["sim_seq"] for f in frames] == list(range(2, 52))
    assert all("type" in f for f in frames)
    assert sim.sent == {1: 51}
    assert sim.open_sockets == 1
    await sock.close()


async def test_ping_pong_echoes_extra_fields(sim):
    sock = await (await Socket.open(sim)).hello()
    await sock.send({"id": 7, "type": "ping", "time": 1234, "note": "x"})
    pong = await sock.until(lambda f: f.get("type") == "pong")
    assert pong == {"type": "pong", "reply_to": 7, "time": 1234, "note": "x", "sim_seq": 2}
    await sock.close()


async def test_client_message_reply_and_broadcast_to_others_only(sim):
    general = channel_id(sim, "general")
    a = await (await Socket.open(sim)).hello()
    b = await (await Socket.open(sim)).hello()
    await a.send({"id": 1, "type": "message", "channel": general, "text": "Hi there"})
    reply = await a.until(lambda f: "reply_to" in f)
    assert reply["ok"] is True and reply["reply_to"] == 1 and reply["text"] == "Hi there"
    assert len(reply["ts"]) == 17 and reply["ts"][10] == "."
    seen = await b.until(lambda f: f.get("type") == "message")
    assert seen["text"] == "Hi there" and seen["ts"] == reply["ts"]
    assert seen["user"] == sim.bot_user_id and seen["channel"] == general
    # The sender does not get its own message back as an event.
    await a.send({"id": 2, "type": "ping"})
    frames = []
    while True:
        f = await a.recv()
        if f.get("type") == "pong":
            break
        frames.append(f)
    assert not [f for f in frames if f.get("type") == "message"]
    assert sim.posted[-1]["text"] == "Hi there"
    assert {"id": 1, "type": "message", "channel": general, "text": "Hi there"} in sim.received
    await a.close()
    await b.close()


async def test_chat_post_message_is_broadcast(sim):
    sock = await (await Socket.open(sim)).hello()
    body = ok(sim, "chat.postMessage", channel=channel_id(sim, "random"), text="from the web api")
    event = await sock.until(lambda f: f.get("type") == "message")
    assert event["text"] == "from the web api" and event["ts"] == body["ts"]
    await sock.close()


async def test_post_message_helper_injects_as_a_person(sim):
    sock = await (await Socket.open(sim)).hello()
    human = next(u for u in sim.users if not u["is_bot"])
    msg = sim.post_message(human["id"], "general", "Hello bot")
    event = await sock.until(lambda f: f.get("type") == "message")
    assert event["user"] == human["id"] and event["text"] == "Hello bot" and event["ts"] == msg["ts"]
    with pytest.raises(ValueError, match="no channel"):
        sim.post_message(human["id"], "no-such-channel", "x")
    with pytest.raises(ValueError, match="no user"):
        sim.post_message("UNOBODY", "general", "x")
    await sock.close()


async def test_burst_after_hello_arrives_right_after_hello(sim):
    sim.burst_after_hello(300)
    sock = await (await Socket.open(sim)).hello()
    frames = [await sock.recv() for _ in range(300)]
    assert [f["sim_seq"] for f in frames] == list(range(2, 302))
    await sock.close()
    # Only the next socket gets it.
    again = await (await Socket.open(sim)).hello()
    await again.send({"id": 1, "type": "ping"})
    assert (await again.recv())["type"] == "pong"
    await again.close()


async def test_rate_generates_traffic_with_hello_messages():
    with SimWorkspace(seed=1, rate=200) as sim:
        sock = await (await Socket.open(sim)).hello()
        hello = await sock.until(lambda f: f.get("type") == "message" and "Hello" in f.get("text", ""))
        assert hello["user"] in {u["id"] for u in sim.users}
        sim.set_rate(0)
        await sock.close()
