"""The RTM connection over real sockets: batches recorded before dispatch, in order,
and the two private attributes of aiohttp it relies on (each test here fails
if aiohttp drops one)."""

from __future__ import annotations

import asyncio
import collections

import aiohttp
from aiohttp import web

from rtm_notebook import websocket
from rtm_notebook.events import EventFrame
from rtm_notebook.rtm.connection import Connection
from rtm_notebook.transport import Wiring
from rtm_notebook.websocket import drop, parsed_frames

from rtm_support import GUARD, client_for, until


async def _server(frames: list[str | bytes], *, then_wait: bool = False):
    """A WebSocket server on loopback that sends ``frames`` and closes (or waits)."""
    closed = asyncio.Event()
    seen: list[aiohttp.WSMessage] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for frame in frames:
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        if then_wait:
            async for msg in ws:
                seen.append(msg)
            seen.append(await ws.receive())
        else:
            await ws.close()
        closed.set()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"ws://127.0.0.1:{port}/ws", closed, seen


def _wiring(frame: EventFrame, log: list):
    def record(frames, events, received_at):
        log.append(("record", len(frames)))
        frame.extend(frames, received_at, connection=1, events=events)

    def intake(event, raw=None):
        log.append(("intake", event.get("type"), len(frame)))
        if raw is not None:
            frame.append(event, raw, connection=1)

    return Wiring(1, intake, lambda m, t: None, record)


async def test_each_batch_is_recorded_before_its_events_are_dispatched_and_order_holds():
    frames = [f'{{"type":"message","text":"m{i}"}}' for i in range(5)] + ["not json"] + \
             [f'{{"type":"message","text":"n{i}"}}' for i in range(3)]
    runner, url, _, _ = await _server(frames)
    frame, log = EventFrame(), []
    try:
        conn = Connection(url, _wiring(frame, log), ping_interval=30, pong_timeout=30)
        await conn.open()
        await asyncio.wait_for(conn.run(), GUARD)
    finally:
        await runner.cleanup()
    # Every dispatched event was in the EventFrame already.
    for entry in log:
        if entry[0] == "intake" and entry[1] != "error":
            assert entry[2] > 0
    df = frame.to_pandas()
    texts = df["text"].tolist()
    assert texts[:5] == [f"m{i}" for i in range(5)] and texts[6:] == [f"n{i}" for i in range(3)]
    assert texts[5].startswith("not_json: ")
    assert df["type"].tolist() == ["message"] * 5 + ["error"] + ["message"] * 3
    assert conn.frames == len(frames)


async def test_parsed_frames_is_aiohttps_queue_of_parsed_frames():
    runner, url, _, _ = await _server(['{"type":"hello"}'], then_wait=True)
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            queue = parsed_frames(ws)
            assert isinstance(queue, collections.deque), \
                "aiohttp no longer exposes its queue of parsed frames: every frame is now its own batch"
            await asyncio.sleep(0.1)  # the hello is parsed, not received yet
            assert len(queue) == 1
            await ws.receive()
            assert len(queue) == 0
    finally:
        await runner.cleanup()


async def test_drop_ends_the_tcp_connection_without_a_close_handshake():
    runner, url, closed, seen = await _server(['{"type":"hello"}'], then_wait=True)
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(url)
            await ws.receive()
            drop(ws)
            await asyncio.wait_for(closed.wait(), GUARD)
            assert not [m for m in seen if m.type == aiohttp.WSMsgType.CLOSE], "a close frame was sent"
    finally:
        await runner.cleanup()


async def test_write_frames_writes_masked_text_frames_a_server_reads_back():
    """Socket Mode's acks are written as frames the client builds itself, one write per batch:
    aiohttp's server must read each back as the text it was, in order, whatever its size."""
    runner, url, closed, seen = await _server([], then_wait=True)
    same = [b'{"envelope_id":"%036d"}' % i for i in range(40)]  # one size: the array path
    mixed = [b"", b"x" * 125, b"y" * 126, "\u00e9t\u00e9".encode(), b"z" * 70_000]  # every header length
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(url)
            assert websocket._transport(ws) is not None and websocket._websocket_mask is not None, \
                "aiohttp no longer exposes its writer's transport or its masking: acks are written one by one"
            await websocket.write_frames(ws, same)
            await websocket.write_frames(ws, mixed)
            await ws.close()
            await asyncio.wait_for(closed.wait(), GUARD)
    finally:
        await runner.cleanup()
    texts = [m.data for m in seen if m.type == aiohttp.WSMsgType.TEXT]
    assert texts == [p.decode() for p in same + mixed]


async def test_every_task_the_client_makes_is_named_rtm(sim):
    before = asyncio.all_tasks()
    rtm = client_for(sim)
    rtm.on("message")(lambda client, event: None)

    @rtm.on("hello")
    async def on_hello(client, event):
        pass

    await rtm.connect()
    sim.send_goodbye()
    await until(lambda: rtm.connection_number == 2 and rtm.state == "connected", "the reconnect")
    made = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()}
    await rtm.async_stop()
    assert made and all(t.get_name().startswith("rtm-") for t in made), sorted(t.get_name() for t in made)


async def test_a_failing_intake_mid_batch_records_and_dispatches_each_frame_once():
    frames = [f'{{"type":"message","text":"m{i}"}}' for i in range(5)]
    runner, url, _, _ = await _server(frames, then_wait=True)
    recorded, dispatched = [], []

    def intake(event, raw=None):
        dispatched.append(event["text"])
        if event["text"] == "m2":
            raise RuntimeError("a bug behind intake")

    wiring = Wiring(1, intake, lambda m, t: None, lambda frames, events, at: recorded.extend(e["text"] for e in events))
    try:
        conn = Connection(url, wiring, ping_interval=30, pong_timeout=30)
        await conn.open()
        assert await asyncio.wait_for(conn.run(), GUARD) == "internal error: RuntimeError('a bug behind intake')"
    finally:
        await runner.cleanup()
    assert recorded == [f"m{i}" for i in range(5)]
    assert dispatched == ["m0", "m1", "m2"]


async def test_the_state_change_hello_brings_is_recorded_right_after_it(sim):
    sim.burst_after_hello(300)
    rtm = client_for(sim)
    await rtm.connect()
    await until(lambda: len(rtm.event_frame) > 300, "the burst")
    await rtm.async_stop()
    types = rtm.events["type"].tolist()
    at = types.index("hello")
    assert types[at + 1] == "state_change"
