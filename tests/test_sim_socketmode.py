"""The simulated workspace's Socket Mode server, over real loopback sockets.

First bare clients (websockets, aiohttp) that check the wire, then Slack's
own peers unmodified but for their base URL: slack_sdk's two Socket Mode
clients and Bolt's sync and async Socket Mode handlers.
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import time

import aiohttp
import httpx
import pytest
import websockets

from rtm_notebook.sim import SimWorkspace

from sim_support import (
    RECV_TIMEOUT,
    SmSocket,
    Socket,
    api,
    channel_id,
    connections_open,
    human,
    link_url,
    ok,
    wait_sync,
)

TIMEOUT = 15.0  # hang guard for the peers

# slack_sdk's and Bolt's aiohttp calls pass ssl=None; that is theirs, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")


SIM_SEED = 5


async def wait_for(pred, timeout: float = 10.0) -> None:
    """Poll a condition the server reaches asynchronously (a hang guard, not a speed check)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.01)




# -- apps.connections.open ----------------------------------------------


def test_connections_open_hands_out_a_link_url(sim):
    before = len(sim.connections_open_calls)
    body = connections_open(sim).json()
    assert body["ok"] is True
    assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/link/\?ticket=[0-9a-f-]{36}&app_id=A[A-Z0-9]{10}", body["url"])
    assert body["url"].endswith("app_id=" + sim.app_id)
    assert sim.app_token.startswith("xapp-1-" + sim.app_id + "-")
    assert len(sim.connections_open_calls) == before + 1
    assert connections_open(sim).json()["url"] != body["url"]


def test_connections_open_errors(sim):
    person = human(sim)
    # A bot or user token is a real token of the wrong type.
    assert connections_open(sim, token=sim.token).json() == {"ok": False, "error": "not_allowed_token_type"}
    assert connections_open(sim, token=sim.user_token(person)).json()["error"] == "not_allowed_token_type"
    assert connections_open(sim, token="xapp-1-AXXX-1-nope").json() == {"ok": False, "error": "invalid_auth"}
    assert connections_open(sim, token=None).json() == {"ok": False, "error": "not_authed"}
    # The app token as a form field is an error, even though it is the right token.
    r = httpx.post(sim.base_url + "apps.connections.open", data={"token": sim.app_token}, timeout=RECV_TIMEOUT)
    assert r.json() == {"ok": False, "error": "invalid_auth"}
    # The app token opens Socket Mode and nothing else.
    assert api(sim, "auth.test", token=sim.app_token).json() == {"ok": False, "error": "not_allowed_token_type"}
    assert api(sim, "rtm.connect", token=sim.app_token).json()["error"] == "not_allowed_token_type"
    assert ok(sim, "auth.test")["user_id"] == sim.bot_user_id


def test_connections_open_rate_limited_and_failing(sim):
    sim.rate_limit_connections_open(2, retry_after=7)
    before = len(sim.connections_open_calls)
    for _ in range(2):
        r = connections_open(sim)
        assert r.status_code == 429 and r.headers["Retry-After"] == "7"
        assert r.json() == {"ok": False, "error": "ratelimited"}
    assert connections_open(sim).json()["ok"] is True
    sim.fail_connections_open("internal_error", calls=1)
    assert connections_open(sim).json() == {"ok": False, "error": "internal_error"}
    assert connections_open(sim).json()["ok"] is True
    assert len(sim.connections_open_calls) == before + 5
    # rtm.connect's faults are its own.
    assert ok(sim, "rtm.connect")["url"]


# -- the socket -----------------------------------------------------------


async def test_hello_fields_and_connection_count(sim):
    a = await SmSocket.open(sim)
    hello = await a.recv()
    assert hello["type"] == "hello" and hello["num_connections"] == 1
    assert hello["connection_info"] == {"app_id": sim.app_id}
    info = hello["debug_info"]
    assert info["host"].startswith("applink-") and isinstance(info["build_number"], int)
    assert info["approximate_connection_time"] == 18060
    assert set(hello) == {"type", "num_connections", "debug_info", "connection_info"}  # no sim_seq on hello
    b = await SmSocket.open(sim)
    assert (await b.recv())["num_connections"] == 2
    assert sim.socket_mode_connections == 2 and sim.open_sockets == 0  # open_sockets counts RTM only
    await a.close()
    await wait_for(lambda: sim.socket_mode_connections == 1)
    await b.close()


async def test_ticket_is_single_use_and_expires(sim, monkeypatch):
    url = link_url(sim)
    first = await (SmSocket(await websockets.connect(url))).hello()
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(url)
    assert info.value.response.status_code == 401
    await first.close()
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(url.replace("ticket=", "ticket=0"))
    assert info.value.response.status_code == 404
    sim.expire_next_url()
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(link_url(sim))
    import rtm_notebook.sim.socketmode as socketmode

    url = link_url(sim)
    monkeypatch.setattr(socketmode, "TICKET_TTL", 0.0)  # instead of waiting 30 s
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(url)


async def test_generated_traffic_comes_as_events_api_envelopes(sim):
    sock = await (await SmSocket.open(sim)).hello()
    sim.burst(300)
    await wait_for(lambda: sim.events_dispatched > 0)
    n = sim.events_dispatched
    assert 150 < n < 300  # typing and presence are RTM-only: the Events API does not send them
    frames = [await sock.envelope() for _ in range(n)]
    for frame in frames:
        assert set(frame) == {"envelope_id", "payload", "type", "accepts_response_payload", "retry_attempt", "retry_reason"}
        assert frame["type"] == "events_api" and frame["accepts_response_payload"] is False
        assert frame["retry_attempt"] == 0 and frame["retry_reason"] == ""
        payload = frame["payload"]
        assert payload["type"] == "event_callback" and payload["api_app_id"] == sim.app_id
        assert payload["token"] == sim.verification_token and payload["token"] != sim.app_token
        assert payload["team_id"] == sim.team["id"] and re.fullmatch(r"Ev[A-Z0-9]{8,}", payload["event_id"])
        assert isinstance(payload["event_time"], int)
        assert payload["authorizations"][0]["user_id"] == sim.bot_user_id
        assert payload["authorizations"][0]["is_bot"] is True
        event = payload["event"]
        assert event["type"] not in ("user_typing", "presence_change") and "event_ts" in event
        if event["type"] == "message":
            assert event["channel_type"] in ("channel", "group")
    assert [f["payload"]["event"]["sim_seq"] for f in frames] == list(range(1, n + 1))
    assert len({f["payload"]["event_id"] for f in frames}) == n
    assert len({f["envelope_id"] for f in frames}) == n
    assert {e["type"] for f in frames if (e := f["payload"]["event"])} >= {"message", "reaction_added"}
    sent = sim.envelopes_sent
    assert [s["envelope_id"] for s in sent] == [f["envelope_id"] for f in frames]
    assert all(s["retry_attempt"] == 0 and s["type"] == "events_api" for s in sent)
    for frame in frames:
        await sock.ack(frame)
    await wait_for(lambda: len(sim.acks) == n)
    await sock.close()


async def test_rate_drives_socket_mode_too():
    with SimWorkspace(seed=1, rate=200) as sim:
        sock = await (await SmSocket.open(sim)).hello()
        frame = await sock.until(lambda f: f["payload"]["event"].get("type") == "message"
                                 and "Hello" in f["payload"]["event"].get("text", ""))
        await sock.ack(frame)
        sim.set_rate(0)
        await sock.close()


async def test_inner_event_has_the_rtm_shape_plus_event_ts_and_channel_type(sim):
    general = channel_id(sim, "general")
    rtm = await (await Socket.open(sim)).hello()
    sm = await (await SmSocket.open(sim)).hello()
    msg = sim.post_message(human(sim), general, "same on both")
    ok(sim, "reactions.add", channel=general, timestamp=msg["ts"], name="eyes")
    for _ in range(2):
        from_rtm = await rtm.recv()
        envelope = await sm.envelope()
        await sm.ack(envelope)
        event = dict(envelope["payload"]["event"])
        assert event.pop("sim_seq") >= 1
        if event["type"] == "message":
            assert event.pop("channel_type") == "channel"
        from_rtm.pop("sim_seq")
        assert event == from_rtm
    await rtm.close()
    await sm.close()


async def test_ack_is_recorded(sim):
    sock = await (await SmSocket.open(sim)).hello()
    sim.post_message(human(sim), "general", "ack me")
    envelope = await sock.envelope()
    await sock.ack(envelope, payload={})
    await wait_for(lambda: sim.acks)
    ack = sim.acks[0]
    assert ack["envelope_id"] == envelope["envelope_id"] and ack["type"] == "events_api"
    assert ack["event_id"] == envelope["payload"]["event_id"] and ack["payload"] == {}
    assert ack["retry_attempt"] == 0 and ack["late"] is False
    assert ack["sent_at"] <= ack["acked_at"] and ack["connection"] == sim.envelopes_sent[0]["connection"]
    assert {"envelope_id": envelope["envelope_id"], "payload": {}} in sim.received
    # An ack for an envelope never sent is recorded, with no type.
    await sock.send({"envelope_id": "not-an-envelope"})
    await wait_for(lambda: len(sim.acks) == 2)
    assert sim.acks[1]["type"] is None
    await sock.close()


async def test_unacked_event_is_retried_three_times_then_given_up(sim):
    sim.ack_timeout = 0.3
    sock = await (await SmSocket.open(sim)).hello()
    sim.post_message(human(sim), "general", "nobody acks this")
    attempts = [await sock.envelope() for _ in range(4)]
    assert [a["retry_attempt"] for a in attempts] == [0, 1, 2, 3]
    assert [a["retry_reason"] for a in attempts] == ["", "timeout", "timeout", "timeout"]
    assert len({a["payload"]["event_id"] for a in attempts}) == 1
    assert len({a["envelope_id"] for a in attempts}) == 4
    assert len({a["payload"]["event"]["sim_seq"] for a in attempts}) == 1
    assert await sock.quiet(1.0) == []  # no fourth retry
    assert [r["retry_attempt"] for r in sim.redelivered] == [1, 2, 3]
    assert {r["reason"] for r in sim.redelivered} == {"timeout"}
    assert [r["envelope_id"] for r in sim.redelivered] == [a["envelope_id"] for a in attempts[1:]]
    assert [r["retry_attempt"] for r in sim.envelopes_sent] == [0, 1, 2, 3]
    (gave_up,) = sim.undelivered
    assert gave_up["reason"] == "retries_exhausted" and gave_up["event_id"] == attempts[0]["payload"]["event_id"]
    await sock.close()


async def test_acked_events_are_not_retried(sim):
    sim.ack_timeout = 1.0
    sock = await (await SmSocket.open(sim)).hello()
    sim.burst(100)
    await wait_for(lambda: sim.events_dispatched > 0)
    for _ in range(sim.events_dispatched):
        await sock.ack(await sock.envelope())
    assert await sock.quiet(1.5) == []
    assert sim.redelivered == [] and sim.undelivered == []
    assert not [a for a in sim.acks if a["late"]]
    await sock.close()


async def test_an_ack_after_the_retry_is_late(sim):
    sim.ack_timeout = 0.3
    sock = await (await SmSocket.open(sim)).hello()
    sim.post_message(human(sim), "general", "ack me late")
    first = await sock.envelope()
    retry = await sock.envelope()
    assert retry["retry_attempt"] == 1
    await sock.ack(first)
    await wait_for(lambda: sim.acks)
    assert sim.acks[0]["late"] is True and sim.acks[0]["retry_attempt"] == 0
    assert sim.redelivered[0]["acked_late"] is True
    assert await sock.quiet(1.0) == []  # the ack settled the event: no second retry
    await sock.close()


async def test_unacked_events_come_back_on_the_next_connection_after_a_drop(sim):
    sim.ack_timeout = 1.5  # well past the drop, so the retries are all for the lost connection
    sock = await (await SmSocket.open(sim)).hello()
    sim.burst(60)
    await wait_for(lambda: sim.events_dispatched > 0)
    n = sim.events_dispatched
    frames = [await sock.envelope() for _ in range(n)]
    acked = frames[::2]
    for frame in acked:
        await sock.ack(frame)
    await wait_for(lambda: len(sim.acks) == len(acked))
    sim.drop_connections()
    with pytest.raises(websockets.ConnectionClosedError):
        await sock.recv()
    await wait_for(lambda: sim.socket_mode_connections == 0)
    again = await (await SmSocket.open(sim)).hello()
    unacked = frames[1::2]
    back = [await again.envelope() for _ in unacked]
    assert [b["payload"]["event_id"] for b in back] == [f["payload"]["event_id"] for f in unacked]
    assert {b["retry_attempt"] for b in back} == {1}
    assert {r["reason"] for r in sim.redelivered} == {"connection_closed"}
    for frame in back:
        await again.ack(frame)
    assert await again.quiet(1.0) == []
    await again.close()


async def test_a_drop_mid_burst_loses_nothing(sim):
    """Acked before the drop, queued but unsent (moved as they are), written but unacked (retried): all arrive."""
    # Slack's 3 s: well above the time an envelope spends in the socket
    # buffers before this client reads it, so no retry races its ack.
    sim.ack_timeout = 3.0
    sim.burst_after_hello(3_000)
    sock = await (await SmSocket.open(sim)).hello()
    n = sim.events_dispatched
    seen = set()
    for _ in range(500):
        frame = await sock.envelope()
        seen.add(frame["payload"]["event"]["sim_seq"])
        await sock.ack(frame)
    await wait_for(lambda: len(sim.acks) == 500)
    sim.drop_connections()
    with pytest.raises(websockets.ConnectionClosedError):
        while True:
            await sock.recv()
    again = await (await SmSocket.open(sim)).hello()
    while len(seen) < n:
        frame = await again.envelope()
        seen.add(frame["payload"]["event"]["sim_seq"])
        await again.ack(frame)
    assert seen == set(range(1, n + 1))
    late = await again.quiet(0.5)
    for frame in late:  # retries of what the old connection had already written and then lost
        assert frame["retry_attempt"] >= 1
        await again.ack(frame)
    assert not [a for a in sim.acks if a["late"]]
    assert sim.undelivered == []
    await again.close()


async def test_events_with_no_connection_wait_for_the_next_one(sim):
    sock = await (await SmSocket.open(sim)).hello()
    await sock.close()
    await wait_for(lambda: sim.socket_mode_connections == 0)
    sim.post_message(human(sim), "general", "while nobody was connected")
    again = await (await SmSocket.open(sim)).hello()
    envelope = await again.envelope()
    assert envelope["payload"]["event"]["text"] == "while nobody was connected"
    assert envelope["retry_attempt"] == 0  # it was never sent before
    await again.ack(envelope)
    await again.close()


async def test_envelopes_are_spread_over_connections(sim):
    a = await (await SmSocket.open(sim)).hello()
    b = await (await SmSocket.open(sim)).hello()
    sim.burst(200)
    await wait_for(lambda: sim.events_dispatched > 0)
    n = sim.events_dispatched
    await wait_for(lambda: len(sim.envelopes_sent) == n)
    per_conn: dict[int, int] = {}
    for record in sim.envelopes_sent:
        per_conn[record["connection"]] = per_conn.get(record["connection"], 0) + 1
    assert len(per_conn) == 2 and abs(min(per_conn.values()) - max(per_conn.values())) <= 1  # round robin
    seqs = {}
    for sock, number in zip((a, b), sorted(per_conn)):  # a opened first, so it has the lower number
        frames = [await sock.envelope() for _ in range(per_conn[number])]
        for frame in frames:
            await sock.ack(frame)
        seqs[number] = [f["payload"]["event"]["sim_seq"] for f in frames]
        assert seqs[number] == sorted(seqs[number])
    assert sorted(seqs[min(seqs)] + seqs[max(seqs)]) == list(range(1, n + 1))
    assert await a.quiet(0.2) == [] and await b.quiet(0.2) == []
    await a.close()
    await b.close()


@pytest.mark.parametrize("reason", ["refresh_requested", "too_many_websockets", "link_disabled"])
async def test_disconnect_then_close(sim, reason):
    sim.disconnect_close_after = 0.3
    sock = await (await SmSocket.open(sim)).hello()
    assert sim.socket_mode_disconnect(reason) == 1
    frame = await sock.recv()
    assert frame["type"] == "disconnect" and frame["reason"] == reason
    assert frame["debug_info"]["host"].startswith("applink-")
    with pytest.raises(websockets.ConnectionClosedOK):
        await sock.recv()
    await wait_for(lambda: sim.socket_mode_connections == 0)
    assert sim.socket_mode_disconnects[-1]["reason"] == reason
    if reason == "link_disabled":
        assert connections_open(sim).json() == {"ok": False, "error": "access_denied"}
        sim.enable_socket_mode()
    again = await (await SmSocket.open(sim)).hello()
    await again.close()


async def test_warning_only_warns(sim):
    sock = await (await SmSocket.open(sim)).hello()
    sim.socket_mode_disconnect("warning")
    assert (await sock.recv())["reason"] == "warning"
    sim.post_message(human(sim), "general", "still here")
    envelope = await sock.envelope()
    assert envelope["payload"]["event"]["text"] == "still here"
    await sock.ack(envelope)
    await sock.close()
    with pytest.raises(ValueError, match="unknown disconnect reason"):
        sim.socket_mode_disconnect("bored")


async def test_disconnect_one_connection(sim):
    sim.disconnect_close_after = 0.2
    a = await (await SmSocket.open(sim)).hello()
    b = await (await SmSocket.open(sim)).hello()
    sim.post_message(human(sim), "general", "which one am I on")
    await wait_for(lambda: sim.envelopes_sent)
    number = sim.envelopes_sent[0]["connection"]
    with pytest.raises(ValueError, match="no open Socket Mode connection"):
        sim.socket_mode_disconnect("refresh_requested", connection=999)
    assert sim.socket_mode_disconnect("refresh_requested", connection=number) == 1
    frames = {sock: [] for sock in (a, b)}
    for sock in (a, b):
        try:
            while True:
                frames[sock].append(json.loads(await asyncio.wait_for(sock.ws.recv(), 0.6)))
        except (TimeoutError, websockets.ConnectionClosedOK):
            pass
    told = [s for s, fs in frames.items() if any(f.get("type") == "disconnect" for f in fs)]
    assert len(told) == 1  # only the connection that carried the event
    assert [f["type"] for f in frames[told[0]]] == ["events_api", "disconnect"]
    assert sim.socket_mode_disconnects[0]["connection"] == number
    await wait_for(lambda: sim.socket_mode_connections == 1)
    for sock in (a, b):
        await sock.close()


async def test_refresh_moves_new_envelopes_to_the_next_connection(sim):
    sim.disconnect_close_after = 1.0
    old = await (await SmSocket.open(sim)).hello()
    sim.socket_mode_disconnect("refresh_requested")
    assert (await old.recv())["reason"] == "refresh_requested"
    new = await (await SmSocket.open(sim)).hello()
    sim.burst(50)
    await wait_for(lambda: sim.events_dispatched > 0)
    frames = [await new.envelope() for _ in range(sim.events_dispatched)]
    for frame in frames:
        await new.ack(frame)
    assert await old.quiet(0.2) == []  # the old connection got none of them
    with pytest.raises(websockets.ConnectionClosedOK):
        await old.recv()
    await new.close()


async def test_eleventh_connection_is_refused_with_too_many_websockets(sim):
    sim.disconnect_close_after = 0.2
    socks = [await (await SmSocket.open(sim)).hello() for _ in range(10)]
    eleventh = await SmSocket.open(sim)
    frame = await eleventh.recv()
    assert frame["type"] == "disconnect" and frame["reason"] == "too_many_websockets"
    with pytest.raises(websockets.ConnectionClosedOK):
        await eleventh.recv()
    await wait_for(lambda: sim.socket_mode_connections == 10)
    # The ten keep working, and the refused one got nothing.
    sim.burst(40)
    await wait_for(lambda: len(sim.envelopes_sent) == sim.events_dispatched > 0)
    assert len({r["connection"] for r in sim.envelopes_sent}) == 10
    for sock in socks:
        await sock.close()


async def test_debug_reconnects_ends_the_connection(sim):
    sim.debug_reconnect_after = 0.5
    sim.disconnect_close_after = 0.2
    plain = await (await SmSocket.open(sim)).hello()
    debug = await (await SmSocket.open(sim, debug_reconnects=True)).hello()
    frame = await debug.recv()
    assert frame["type"] == "disconnect" and frame["reason"] == "refresh_requested"
    with pytest.raises(websockets.ConnectionClosedOK):
        await debug.recv()
    assert await plain.quiet(0.3) == []  # only the debug connection is ended
    await plain.close()


async def test_faults_act_on_socket_mode_sockets(sim):
    sock = await (await SmSocket.open(sim)).hello()
    sim.stall()
    sim.post_message(human(sim), "general", "during the stall")
    assert await sock.quiet(0.4) == []
    sim.stall(0)
    envelope = await sock.envelope()
    assert envelope["payload"]["event"]["text"] == "during the stall"
    await sock.ack(envelope)
    sim.send_malformed("not_json")
    assert await asyncio.wait_for(sock.ws.recv(), RECV_TIMEOUT) == "this is not JSON {"
    sim.close_sockets(4002, "maintenance")
    with pytest.raises(websockets.ConnectionClosed) as info:
        await sock.recv()
    assert info.value.rcvd.code == 4002 and info.value.rcvd.reason == "maintenance"


async def test_server_pings_and_answers_pings_unless_stalled(sim):
    sim.socket_mode_ping_interval = 0.2
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(link_url(sim), autoping=False) as ws:
            assert json.loads((await ws.receive(timeout=RECV_TIMEOUT)).data)["type"] == "hello"
            msg = await ws.receive(timeout=RECV_TIMEOUT)
            assert msg.type is aiohttp.WSMsgType.PING
            await ws.ping(b"client")
            while (msg := await ws.receive(timeout=RECV_TIMEOUT)).type is not aiohttp.WSMsgType.PONG:
                pass
            assert msg.data == b"client"
            sim.stall()
            await ws.ping(b"stalled")
            with pytest.raises(asyncio.TimeoutError):
                while True:
                    msg = await ws.receive(timeout=0.6)
                    assert msg.type is not aiohttp.WSMsgType.PONG  # neither pongs nor pings while stalled
            sim.stall(0)


async def test_burst_after_hello_of_20000_arrives_in_order(sim):
    sim.burst_after_hello(20_000)
    sock = await (await SmSocket.open(sim)).hello()
    n = sim.events_dispatched
    assert n > 15_000
    last = 0
    for _ in range(n):
        frame = json.loads(await asyncio.wait_for(sock.ws.recv(), RECV_TIMEOUT))
        seq = frame["payload"]["event"]["sim_seq"]
        assert seq == last + 1
        last = seq
        await sock.ws.send('{"envelope_id":"%s"}' % frame["envelope_id"])
    await wait_for(lambda: len(sim.acks) == n)
    assert sim.redelivered == []
    await sock.close()


# -- what people do -------------------------------------------------------


async def test_slash_command_and_its_answer(sim):
    general = channel_id(sim, "general")
    sock = await (await SmSocket.open(sim)).hello()
    envelope_id = sim.slash_command("/deploy", "prod now", user=human(sim), channel="general")
    envelope = await sock.envelope()
    assert envelope["envelope_id"] == envelope_id and envelope["type"] == "slash_commands"
    assert envelope["accepts_response_payload"] is True and "retry_attempt" not in envelope
    payload = envelope["payload"]
    assert payload["command"] == "/deploy" and payload["text"] == "prod now"
    assert payload["user_id"] == human(sim) and payload["channel_id"] == general and payload["channel_name"] == "general"
    assert payload["team_id"] == sim.team["id"] and payload["api_app_id"] == sim.app_id
    assert payload["user_name"] and re.fullmatch(r"\d+\.\d+\.[0-9a-f]{32}", payload["trigger_id"])
    assert payload["response_url"].startswith(sim.base_url[:-4] + "commands/")
    await sock.ack(envelope, {"text": "Deploying prod now"})
    ack = await asyncio.to_thread(sim.wait_for_ack, envelope_id)
    assert ack["type"] == "slash_commands" and ack["payload"] == {"text": "Deploying prod now"}
    (answer,) = sim.command_answers
    assert answer["text"] == "Deploying prod now" and answer["visible"] is False  # ephemeral: no message
    assert not [m for m in sim.posted if m["text"] == "Deploying prod now"]
    # An in_channel answer is a message everyone sees (and an event).
    second = sim.slash_command("/deploy", "staging")
    await sock.ack(await sock.envelope(), {"text": "Deploying staging", "response_type": "in_channel"})
    await asyncio.to_thread(sim.wait_for_ack, second)
    event = await sock.envelope()
    assert event["payload"]["event"]["text"] == "Deploying staging"
    assert event["payload"]["event"]["user"] == sim.bot_user_id
    await sock.ack(event)
    with pytest.raises(ValueError, match="starts with '/'"):
        sim.slash_command("deploy")
    await sock.close()


async def test_unanswered_slash_command_times_out_and_is_not_retried(sim):
    sim.ack_timeout = 0.3
    sock = await (await SmSocket.open(sim)).hello()
    envelope_id = sim.slash_command("/deploy", "prod")
    envelope = await sock.envelope()
    assert await sock.quiet(0.8) == []  # no retry
    (timeout,) = sim.slash_timeouts
    assert timeout["envelope_id"] == envelope_id and timeout["reason"] == "timeout"
    await sock.ack(envelope, {"text": "too late"})
    ack = await asyncio.to_thread(sim.wait_for_ack, envelope_id)
    assert ack["late"] is True and sim.command_answers == []
    with pytest.raises(TimeoutError):
        sim.wait_for_ack("never-sent", timeout=0.05)
    await sock.close()


async def test_unacked_interactive_payload_times_out_without_retry(sim):
    sim.ack_timeout = 0.3
    sock = await (await SmSocket.open(sim)).hello()
    envelope_id = sim.block_action("approve", "yes")
    await sock.envelope()
    assert await sock.quiet(0.8) == []
    (timeout,) = sim.interactive_timeouts
    assert timeout["envelope_id"] == envelope_id and timeout["type"] == "interactive"
    await sock.close()


def test_slash_command_with_no_connection_fails_for_the_person(sim):
    envelope_id = sim.slash_command("/deploy")
    assert sim.slash_timeouts[0]["envelope_id"] == envelope_id
    assert sim.slash_timeouts[0]["reason"] == "no_connection"


async def test_block_action_and_response_url(sim):
    general = channel_id(sim, "general")
    posted = ok(sim, "chat.postMessage", channel=general, text="Approve?")
    sock = await (await SmSocket.open(sim)).hello()
    envelope_id = sim.block_action("approve", "yes", user=human(sim), channel=general, message_ts=posted["ts"])
    envelope = await sock.envelope()
    assert envelope["envelope_id"] == envelope_id and envelope["type"] == "interactive"
    assert envelope["accepts_response_payload"] is False  # a block action's ack carries nothing
    payload = envelope["payload"]
    assert payload["type"] == "block_actions" and payload["user"]["id"] == human(sim)
    (action,) = payload["actions"]
    assert action["action_id"] == "approve" and action["value"] == "yes" and action["type"] == "button"
    assert payload["message"]["ts"] == posted["ts"] and payload["message"]["text"] == "Approve?"
    assert payload["channel"]["id"] == general and payload["container"]["message_ts"] == posted["ts"]
    assert payload["trigger_id"] and payload["response_url"].startswith(sim.base_url[:-4] + "actions/")
    await sock.ack(envelope)
    assert (await asyncio.to_thread(sim.wait_for_ack, envelope_id))["type"] == "interactive"
    r = httpx.post(payload["response_url"], json={"text": "Approved", "replace_original": True}, timeout=RECV_TIMEOUT)
    assert r.status_code == 200 and r.text == "ok"
    (response,) = sim.responses
    assert response["envelope_id"] == envelope_id and response["body"] == {"text": "Approved", "replace_original": True}
    assert response["kind"] == "actions" and response["url"] == payload["response_url"]
    assert httpx.post(payload["response_url"] + "x", json={"text": "x"}, timeout=RECV_TIMEOUT).status_code == 404
    # A button in the App Home: no message, so no response_url.
    sim.block_action("refresh")
    home = (await sock.envelope())["payload"]
    assert home["container"]["type"] == "view" and "response_url" not in home and "message" not in home
    with pytest.raises(ValueError, match="no message"):
        sim.block_action("approve", channel=general, message_ts="1.000000")
    await sock.close()


async def test_slash_command_response_url_in_channel_posts(sim):
    sock = await (await SmSocket.open(sim)).hello()
    sim.slash_command("/deploy", "prod")
    envelope = await sock.envelope()
    await sock.ack(envelope)
    r = httpx.post(envelope["payload"]["response_url"], json={"text": "Deployed", "response_type": "in_channel"},
                   timeout=RECV_TIMEOUT)
    assert r.text == "ok"
    assert sim.responses[0]["kind"] == "commands" and sim.posted[-1]["text"] == "Deployed"
    event = await sock.envelope()
    assert event["payload"]["event"]["text"] == "Deployed"
    await sock.ack(event)
    await sock.close()


async def test_shortcut_and_view_submission(sim):
    general = channel_id(sim, "general")
    msg = sim.post_message(human(sim), general, "shortcut me")
    sock = await (await SmSocket.open(sim)).hello()
    sim.shortcut("open_ticket")
    glob = (await sock.envelope())["payload"]
    assert glob["type"] == "shortcut" and glob["callback_id"] == "open_ticket" and glob["trigger_id"]
    sim.shortcut("file_it", channel=general, message_ts=msg["ts"])
    on_message = (await sock.envelope())["payload"]
    assert on_message["type"] == "message_action" and on_message["message"]["text"] == "shortcut me"
    assert on_message["response_url"] and on_message["channel"]["id"] == general
    values = {"title": {"input": {"type": "plain_text_input", "value": "Broken build"}}}
    envelope_id = sim.view_submission("new_ticket", values)
    submission = await sock.envelope()
    assert submission["envelope_id"] == envelope_id and submission["type"] == "interactive"
    assert submission["accepts_response_payload"] is True  # for a response_action
    view = submission["payload"]["view"]
    assert submission["payload"]["type"] == "view_submission" and view["callback_id"] == "new_ticket"
    assert view["state"]["values"] == values
    await sock.ack(submission, {"response_action": "errors", "errors": {"title": "Too short"}})
    ack = await asyncio.to_thread(sim.wait_for_ack, envelope_id)
    assert ack["payload"]["response_action"] == "errors"
    await sock.close()


# -- Slack's own clients --------------------------------------------------

async def test_slack_sdk_aiohttp_socket_mode_client(sim):
    from slack_sdk.socket_mode.aiohttp import SocketModeClient
    from slack_sdk.socket_mode.response import SocketModeResponse
    from slack_sdk.web.async_client import AsyncWebClient

    general = channel_id(sim, "general")
    got: asyncio.Queue = asyncio.Queue()

    async def on_request(client, req):
        if req.type == "events_api":
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            event = req.payload["event"]
            if event.get("text") == "Hello sdk aiohttp":
                await client.web_client.chat_postMessage(channel=event["channel"], text="Hi from the aiohttp client")
                got.put_nowait((req.envelope_id, event))

    client = SocketModeClient(app_token=sim.app_token, web_client=AsyncWebClient(token=sim.token, base_url=sim.base_url))
    client.socket_mode_request_listeners.append(on_request)
    try:
        await client.connect()
        await wait_for(lambda: sim.socket_mode_connections == 1)
        sim.post_message(human(sim), general, "Hello sdk aiohttp")
        envelope_id, event = await asyncio.wait_for(got.get(), TIMEOUT)
        assert event["user"] == human(sim) and event["channel"] == general
        await wait_for(lambda: any(a["envelope_id"] == envelope_id for a in sim.acks), TIMEOUT)
        await wait_for(lambda: "Hi from the aiohttp client" in {m["text"] for m in sim.posted}, TIMEOUT)
    finally:
        await client.close()
    await wait_for(lambda: sim.socket_mode_connections == 0)


def test_slack_sdk_builtin_socket_mode_client(sim):
    from slack_sdk import WebClient
    from slack_sdk.socket_mode.builtin import SocketModeClient
    from slack_sdk.socket_mode.response import SocketModeResponse

    general = channel_id(sim, "general")
    got: queue.Queue = queue.Queue()

    def on_request(client, req):
        if req.type == "events_api":
            client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            event = req.payload["event"]
            if event.get("text") == "Hello sdk builtin":
                client.web_client.chat_postMessage(channel=event["channel"], text="Hi from the builtin client")
                got.put((req.envelope_id, event))

    client = SocketModeClient(app_token=sim.app_token, web_client=WebClient(token=sim.token, base_url=sim.base_url))
    client.socket_mode_request_listeners.append(on_request)
    try:
        client.connect()
        assert wait_sync(lambda: sim.socket_mode_connections == 1)
        sim.post_message(human(sim), general, "Hello sdk builtin")
        envelope_id, event = got.get(timeout=TIMEOUT)
        assert event["user"] == human(sim)
        assert wait_sync(lambda: any(a["envelope_id"] == envelope_id for a in sim.acks))
        assert wait_sync(lambda: "Hi from the builtin client" in {m["text"] for m in sim.posted})
    finally:
        client.close()
    assert wait_sync(lambda: sim.socket_mode_connections == 0)


def test_bolt_app_with_socket_mode_handler(sim):
    from slack_bolt import App
    from slack_bolt.adapter.socket_mode import SocketModeHandler
    from slack_sdk import WebClient

    general = channel_id(sim, "general")
    seen: queue.Queue = queue.Queue()
    app = App(client=WebClient(token=sim.token, base_url=sim.base_url))

    @app.message("Hello bolt")
    def hello(message, say):
        seen.put(message)
        say("Hi from Bolt")

    @app.command("/deploy")
    def deploy(ack, command):
        ack(f"Deploying {command['text']}")

    handler = SocketModeHandler(app, sim.app_token)
    try:
        handler.connect()
        assert wait_sync(lambda: sim.socket_mode_connections == 1)
        sim.post_message(human(sim), general, "Hello bolt")
        message = seen.get(timeout=TIMEOUT)
        assert message["channel"] == general and message["user"] == human(sim)
        assert wait_sync(lambda: "Hi from Bolt" in {m["text"] for m in sim.posted})
        event_ids = {r["event_id"] for r in sim.envelopes_sent
                     if r["sim_seq"] == 1}  # the person's message was the first event
        assert wait_sync(lambda: event_ids & {a["event_id"] for a in sim.acks})
        envelope_id = sim.slash_command("/deploy", "prod")
        ack = sim.wait_for_ack(envelope_id, timeout=TIMEOUT)
        assert ack["payload"] == {"text": "Deploying prod"} and not ack["late"]
        assert sim.command_answers[-1]["text"] == "Deploying prod"
    finally:
        handler.close()
    assert wait_sync(lambda: sim.socket_mode_connections == 0)


async def test_bolt_async_app_with_async_socket_mode_handler(sim):
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
    from slack_bolt.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    general = channel_id(sim, "general")
    seen: asyncio.Queue = asyncio.Queue()
    app = AsyncApp(client=AsyncWebClient(token=sim.token, base_url=sim.base_url))

    @app.message("Hello async bolt")
    async def hello(message, say):
        seen.put_nowait(message)
        await say("Hi from async Bolt")

    @app.command("/deploy")
    async def deploy(ack, command):
        await ack(f"Deploying {command['text']} asynchronously")

    handler = AsyncSocketModeHandler(app, sim.app_token)
    try:
        await handler.connect_async()
        await wait_for(lambda: sim.socket_mode_connections == 1)
        sim.post_message(human(sim), general, "Hello async bolt")
        message = await asyncio.wait_for(seen.get(), TIMEOUT)
        assert message["channel"] == general
        await wait_for(lambda: "Hi from async Bolt" in {m["text"] for m in sim.posted}, TIMEOUT)
        first = next(r["event_id"] for r in sim.envelopes_sent if r["sim_seq"] == 1)
        await wait_for(lambda: first in {a["event_id"] for a in sim.acks}, TIMEOUT)
        envelope_id = sim.slash_command("/deploy", "prod")
        ack = await asyncio.to_thread(sim.wait_for_ack, envelope_id, TIMEOUT)
        assert ack["payload"] == {"text": "Deploying prod asynchronously"}
    finally:
        await handler.close_async()
    await wait_for(lambda: sim.socket_mode_connections == 0)


def test_the_sim_imports_none_of_the_client():
    """DESIGN.md: the simulated workspace (Socket Mode included) imports nothing of the client;
    it shares only loops.py, the thread hand-over, which imports nothing of the package."""
    import subprocess
    import sys

    code = "import sys, rtm_notebook.sim; print(' '.join(sorted(m for m in sys.modules if m.startswith('rtm_notebook'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert "rtm_notebook.sim.socketmode" in loaded
    assert [m for m in loaded if m != "rtm_notebook" and not m.startswith("rtm_notebook.sim")] == ["rtm_notebook.loops"]
