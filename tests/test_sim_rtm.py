"""The simulated workspace's RTM socket, over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

from rtm_notebook.sim import SimWorkspace

from sim_support import Socket, api, channel_id, ok, socket_url

SIM_SEED = 3


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


async def test_url_is_single_use(sim):
    url = socket_url(sim)
    async with websockets.connect(url) as first:
        assert json_of(await first.recv())["type"] == "hello"
        async with websockets.connect(url) as second:
            error = json_of(await second.recv())
            assert error["type"] == "error" and error["error"] == {"code": 1, "msg": "Socket URL has expired"}
            with pytest.raises(websockets.ConnectionClosedOK):
                await asyncio.wait_for(second.recv(), 10)


async def test_url_expires_after_its_lifetime(sim, monkeypatch):
    import rtm_notebook.sim.server as server

    url = socket_url(sim)
    monkeypatch.setattr(server, "URL_TTL", 0.0)  # instead of waiting 30 s
    async with websockets.connect(url) as ws:
        assert json_of(await ws.recv())["error"]["code"] == 1


async def test_unknown_socket_url_is_refused(sim):
    url = socket_url(sim)
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(url[: url.rindex("/") + 1] + "not-a-ticket")


async def test_typing_reaches_others(sim):
    general = channel_id(sim, "general")
    a = await (await Socket.open(sim)).hello()
    b = await (await Socket.open(sim)).hello()
    await a.send({"id": 1, "type": "typing", "channel": general})
    typing = await b.until(lambda f: f.get("type") == "user_typing")
    assert typing["channel"] == general and typing["user"] == sim.bot_user_id
    await a.close()
    await b.close()


async def test_presence_sub_and_query(sim):
    humans = [u["id"] for u in sim.users if not u["is_bot"]]
    sock = await (await Socket.open(sim)).hello()
    await sock.send({"type": "presence_sub", "ids": humans[:3]})
    changes = [await sock.recv() for _ in range(3)]
    assert [c["user"] for c in changes] == humans[:3]
    assert all(c["type"] == "presence_change" and c["presence"] in ("active", "away") for c in changes)
    await sock.send({"type": "presence_query", "ids": [humans[4]]})
    assert (await sock.recv())["user"] == humans[4]
    await sock.send({"id": 9, "type": "presence_sub", "ids": "everyone"})
    bad = await sock.recv()
    assert bad["ok"] is False and bad["reply_to"] == 9
    await sock.close()

    batch = await (await Socket.open(sim, batch_presence_aware="1")).hello()
    await batch.send({"type": "presence_query", "ids": humans[:4]})
    users = []
    while len(users) < 4:
        frame = await batch.recv()
        assert frame["type"] == "presence_change" and "users" in frame
        users += frame["users"]
    assert sorted(users) == sorted(humans[:4])
    await batch.close()


async def test_generated_presence_respects_presence_sub():
    with SimWorkspace(seed=2) as sim:
        humans = [u["id"] for u in sim.users if not u["is_bot"]]
        sock = await (await Socket.open(sim)).hello()
        await sock.send({"type": "presence_sub", "ids": humans[:1]})
        assert (await sock.recv())["user"] == humans[0]
        sim.burst(400)
        await sock.send({"id": 1, "type": "ping"})
        frames = []
        while (frame := await sock.recv()).get("type") != "pong":
            frames.append(frame)
        presence = [f for f in frames if f["type"] == "presence_change"]
        assert presence and {f["user"] for f in presence} == {humans[0]}
        await sock.close()


async def test_message_errors(sim):
    general = channel_id(sim, "general")
    sock = await (await Socket.open(sim)).hello()
    await sock.send({"id": 1, "type": "message", "channel": general})
    assert (await sock.recv())["error"] == {"code": 2, "msg": "message text is missing"}
    await sock.send({"id": 2, "type": "message", "channel": "CNOPE", "text": "hi"})
    err = await sock.recv()
    assert err["ok"] is False and err["reply_to"] == 2 and err["error"]["msg"] == "channel not found"
    await sock.send({"id": 3, "type": "message", "channel": general, "text": "y" * 4001})
    assert (await sock.recv())["error"]["code"] == 3
    await sock.send({"id": 4, "type": "dance"})
    assert (await sock.recv())["error"]["msg"] == "unsupported message type"
    await sock.ws.send("not json at all")
    assert (await sock.recv())["type"] == "error"
    await sock.ws.send(b"\x00binary")
    assert (await sock.recv())["type"] == "error"
    await sock.send({"id": 5, "type": "ping"})
    assert (await sock.recv())["reply_to"] == 5  # still connected
    await sock.close()


async def test_frame_over_16kb_disconnects(sim):
    sock = await (await Socket.open(sim)).hello()
    await sock.ws.send('{"type":"ping","pad":"' + "x" * 17_000 + '"}')
    with pytest.raises(websockets.ConnectionClosed) as info:
        await sock.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_sending_too_fast_gets_slow_down_then_disconnect(sim):
    general = channel_id(sim, "general")
    sock = await (await Socket.open(sim)).hello()
    for i in range(1, 21):
        await sock.send({"id": i, "type": "message", "channel": general, "text": f"spam {i}"})
    replies = []
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            frame = await sock.recv()
            if "reply_to" in frame:
                replies.append(frame)
    assert replies[-1] == {"ok": False, "reply_to": replies[-1]["reply_to"],
                           "error": {"code": -1, "msg": "slow down, too many messages..."},
                           "sim_seq": replies[-1]["sim_seq"]}
    assert all(r["ok"] for r in replies[:-1]) and len(replies) < 20


async def test_several_clients_each_get_everything(sim):
    socks = [await (await Socket.open(sim)).hello() for _ in range(4)]
    sim.burst(200)
    for sock in socks:
        frames = [await sock.recv() for _ in range(200)]
        assert [f["sim_seq"] for f in frames] == list(range(2, 202))
    assert sim.sent == {i: 201 for i in range(1, 5)}
    texts = [[f.get("text") for f in sock.frames[1:]] for sock in socks]
    assert texts[0] == texts[1] == texts[2] == texts[3]
    for sock in socks:
        await sock.close()


async def test_web_api_actions_become_events(sim):
    general = channel_id(sim, "general")
    sock = await (await Socket.open(sim)).hello()
    person = next(u for u in sim.users if not u["is_bot"])
    theirs = sim.post_message(person["id"], general, "react to me")
    posted = ok(sim, "chat.postMessage", channel=general, text="original")
    ok(sim, "chat.update", channel=general, ts=posted["ts"], text="changed")
    ok(sim, "reactions.add", channel=general, timestamp=theirs["ts"], name="eyes")
    ok(sim, "chat.delete", channel=general, ts=posted["ts"])
    frames = [await sock.recv() for _ in range(5)]
    assert frames[0]["text"] == "react to me"
    assert frames[1]["type"] == "message" and frames[1]["text"] == "original"
    changed = frames[2]
    assert changed["subtype"] == "message_changed" and changed["hidden"] is True
    assert changed["message"]["text"] == "changed" and changed["message"]["ts"] == posted["ts"]
    assert changed["previous_message"]["text"] == "original"
    reaction = frames[3]
    assert reaction["type"] == "reaction_added" and reaction["reaction"] == "eyes"
    assert reaction["item"] == {"type": "message", "channel": general, "ts": theirs["ts"]}
    assert reaction["item_user"] == person["id"]
    deleted = frames[4]
    assert deleted["subtype"] == "message_deleted" and deleted["deleted_ts"] == posted["ts"]
    await sock.close()


async def test_ts_increase_per_channel_under_traffic(sim):
    sock = await (await Socket.open(sim)).hello()
    sim.burst(2000)
    last: dict[str, str] = {}
    for _ in range(2000):
        frame = await sock.recv()
        if frame["type"] == "message" and "subtype" not in frame:
            channel = frame["channel"]
            assert frame["ts"] > last.get(channel, "")
            last[channel] = frame["ts"]
    assert len(last) >= 3
    await sock.close()


# -- faults -----------------------------------------------------------


async def test_drop_connections_aborts_without_close_frame(sim):
    sock = await (await Socket.open(sim)).hello()
    sim.drop_connections()
    with pytest.raises(websockets.ConnectionClosedError) as info:
        await sock.recv()
    assert info.value.rcvd is None  # no close frame
    await wait_for(lambda: sim.open_sockets == 0)


async def test_send_goodbye_then_close(sim):
    sock = await (await Socket.open(sim)).hello()
    sim.send_goodbye()
    assert (await sock.recv()) == {"type": "goodbye", "sim_seq": 2}
    with pytest.raises(websockets.ConnectionClosedOK):
        await sock.recv()


async def test_close_sockets_with_code(sim):
    sock = await (await Socket.open(sim)).hello()
    sim.close_sockets(4002, "maintenance")
    with pytest.raises(websockets.ConnectionClosed) as info:
        await sock.recv()
    assert info.value.rcvd.code == 4002 and info.value.rcvd.reason == "maintenance"


async def test_stall_stops_pongs_and_events_then_resumes_without_loss(sim):
    sock = await (await Socket.open(sim)).hello()
    sim.stall()
    await sock.send({"id": 1, "type": "ping"})
    sim.burst(20)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(sock.ws.recv(), 0.5)
    sim.stall(0)
    await sock.send({"id": 2, "type": "ping"})
    frames = [await sock.recv() for _ in range(21)]
    assert [f["sim_seq"] for f in frames] == list(range(2, 23))
    pongs = [f for f in frames if f.get("type") == "pong"]
    assert [p["reply_to"] for p in pongs] == [2]  # the ping sent during the stall is never answered
    await sock.close()


async def test_stall_stops_protocol_pongs_too(sim):
    sock = await (await Socket.open(sim)).hello()
    assert await asyncio.wait_for(await sock.ws.ping(b"before"), 10) is not None
    sim.stall()
    waiter = await sock.ws.ping(b"during")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(waiter), 0.5)
    sim.stall(0)
    assert await asyncio.wait_for(await sock.ws.ping(b"after"), 10) is not None
    await sock.close()


async def test_timed_stall_ends_by_itself(sim):
    sock = await (await Socket.open(sim)).hello()
    sim.stall(0.3)
    sim.burst(5)
    frames = [await sock.recv() for _ in range(5)]
    assert [f["sim_seq"] for f in frames] == [2, 3, 4, 5, 6]
    await sock.close()


@pytest.mark.parametrize("kind", ["not_json", "binary", "no_type", "array", "huge", "nested", "bad_utf8"])
async def test_send_malformed(sim, kind):
    sock = await (await Socket.open(sim)).hello()
    sim.send_malformed(kind)
    sim.burst(1)
    raw = await asyncio.wait_for(sock.ws.recv(), 10)
    if kind in ("binary", "bad_utf8"):
        assert isinstance(raw, bytes)
        if kind == "bad_utf8":
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
    elif kind == "not_json":
        with pytest.raises(ValueError):
            json.loads(raw)
    elif kind == "no_type":
        assert "type" not in json.loads(raw)
    elif kind == "array":
        assert isinstance(json.loads(raw), list)
    elif kind == "huge":
        assert len(raw) > 1_000_000
    elif kind == "nested":
        with pytest.raises(RecursionError):
            json.loads(raw)
    # The stream goes on, numbered as if the bad frame were not there.
    assert (await sock.recv())["sim_seq"] == 2
    await sock.close()
    with pytest.raises(ValueError, match="unknown malformed kind"):
        sim.send_malformed("weird")


def test_rate_limit_connect(sim):
    sim.rate_limit_connect(2, retry_after=7)
    before = len(sim.connect_calls)
    for _ in range(2):
        r = api(sim, "rtm.connect")
        assert r.status_code == 429 and r.headers["Retry-After"] == "7"
        assert r.json() == {"ok": False, "error": "ratelimited"}
    assert ok(sim, "rtm.connect")["url"]
    assert len(sim.connect_calls) == before + 3


def test_fail_connect(sim):
    sim.fail_connect("not_allowed_token_type", calls=2)
    assert api(sim, "rtm.connect").json() == {"ok": False, "error": "not_allowed_token_type"}
    assert api(sim, "rtm.start").json() == {"ok": False, "error": "not_allowed_token_type"}
    assert ok(sim, "rtm.connect")["ok"]


async def test_expire_next_url(sim):
    sim.expire_next_url()
    expired = socket_url(sim)
    fresh = socket_url(sim)
    async with websockets.connect(expired) as ws:
        assert json_of(await ws.recv()) == {"type": "error", "error": {"code": 1, "msg": "Socket URL has expired"}, "sim_seq": 1}
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    async with websockets.connect(fresh) as ws:
        assert json_of(await ws.recv())["type"] == "hello"


def test_faults_need_a_running_workspace():
    idle = SimWorkspace(seed=1)
    with pytest.raises(RuntimeError, match="not running"):
        idle.send_goodbye()


def json_of(frame):
    return json.loads(frame)


async def wait_for(pred, timeout=10.0):
    """Poll a condition the server reaches asynchronously (a hang guard, not a speed check)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


async def test_stop_closes_sockets_going_away():
    sim = SimWorkspace(seed=4).start()
    with pytest.raises(RuntimeError, match="already running"):
        sim.start()
    sock = await (await Socket.open(sim)).hello()
    await asyncio.get_running_loop().run_in_executor(None, sim.stop)
    with pytest.raises(websockets.ConnectionClosed) as info:
        await sock.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    sim.stop()  # idempotent
    assert sim.base_url == ""


def test_close_code_must_be_sendable(sim):
    with pytest.raises(ValueError, match="not a close code"):
        sim.close_sockets(1006)
    with pytest.raises(ValueError, match="123 bytes"):
        sim.close_sockets(1000, "x" * 200)


async def test_firehose_keeps_order_and_leaves_room_for_the_web_api():
    with SimWorkspace(seed=1, rate=float("inf")) as sim:
        sock = await (await Socket.open(sim)).hello()
        call = asyncio.ensure_future(asyncio.to_thread(ok, sim, "auth.test"))
        last = 1
        while not call.done() or last < 2000:
            frame = json.loads(await asyncio.wait_for(sock.ws.recv(), 10))
            assert frame["sim_seq"] == last + 1
            last = frame["sim_seq"]
        assert (await call)["user_id"] == sim.bot_user_id
    # stop() closed the socket (no client close: with the firehose still
    # queued, the client's close frame would wait behind unread frames).
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(sock.ws.recv(), 10)
