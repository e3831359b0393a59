"""One RTM WebSocket: aiohttp's WebSocket client driving :mod:`.protocol`.

The connection reads frames, decodes them, settles replies and hands them
to the session core through its :class:`~rtm_notebook.transport.Wiring`,
in order, once: per wake-up of the read loop, one ``record`` call for the
frames that are events, then one ``intake`` call per event. Recording
before dispatching means a handler never sees an event the EventFrame does
not hold. It keeps the socket honest with RTM JSON pings after
``ping_interval`` seconds of silence and aborts it when a ping goes
unanswered. Reconnecting, dispatching and pacing are the core's job.

aiohttp rather than websockets: its compiled frame reader delivered about
twice the events per second (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType

from rtm_notebook.errors import ReplyError
from rtm_notebook.rtm.protocol import Keepalive, Protocol, decode
from rtm_notebook.transport import ConnectionClosed, Wiring

__all__ = ["Connection", "ConnectionClosed", "MAX_FRAME_RECEIVED", "drop", "parsed_frames"]

log = logging.getLogger(__name__)

# Slack sets no limit on what it sends; the cap only stops a broken server
# from exhausting memory (aiohttp's default of 4 MiB is too small for
# some rtm.start-era payloads).
MAX_FRAME_RECEIVED = 64 * 2**20
# A graceful close waits this long for the server's close frame.
CLOSE_TIMEOUT = 2.0

# Events delivered to the core at most per batch, so a long burst is
# recorded and dispatched as it arrives, not after the whole of it.
MAX_BATCH = 2048

_TEXT, _BINARY = WSMsgType.TEXT, WSMsgType.BINARY


# The two places aiohttp's private attributes are used; each has a test
# (tests/test_connection.py) that fails if aiohttp drops it.

def parsed_frames(ws: aiohttp.ClientWebSocketResponse) -> Any:
    """aiohttp's queue of frames parsed and not received yet: empty exactly
    when ``receive()`` would wait (``_reader._buffer``, public in aiohttp's
    Cython reader). Without it, an empty tuple: every frame is its own batch."""
    return getattr(getattr(ws, "_reader", None), "_buffer", ())


def drop(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Drop the TCP connection under ``ws`` at once, without a close
    handshake (a stalled server never answers one). aiohttp has no public
    abort on a client WebSocket; closing its HTTP response does it."""
    ws._response.close()


class Connection:
    """A single WebSocket connection to an RTM URL (a transport Link).

    ``wiring`` says where frames go (see :mod:`rtm_notebook.transport`);
    ``wiring.number`` is the client's connection count, for the record.
    """

    def __init__(
        self,
        url: str,
        wiring: Wiring,
        *,
        ping_interval: float,
        pong_timeout: float,
        open_timeout: float = 30.0,
        ssl: Any = None,
        proxy: str | None = None,
    ) -> None:
        self.url = url
        self.number = wiring.number
        self.protocol = Protocol()
        #: frames received so far (the keepalive watches it change)
        self.frames = 0
        #: id -> future of a message whose reply is awaited
        self.waiters: dict[int, asyncio.Future] = {}
        #: why the connection ended: "closed 1000 ...", "stale", "network: ..."
        self.end_reason: str | None = None
        self.ws: Any = None
        self._wiring = wiring
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._open_timeout = open_timeout
        self._ssl = ssl
        self._proxy = proxy
        self._keepalive_task: asyncio.Task | None = None
        self._keepalive: Keepalive | None = None
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        state = "open" if self.ws is not None and self.end_reason is None else (self.end_reason or "new")
        return f"<Connection #{self.number} {state} frames={self.frames}>"

    async def open(self) -> None:
        """Open the WebSocket.

        Raises OSError (refused, reset, TLS or handshake failures, all
        with the reason in the message), TimeoutError, or ValueError for a
        URL that is not a WebSocket URL.
        """
        session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(self._open_timeout):
                self.ws = await session.ws_connect(
                    self.url,
                    # No protocol-level heartbeat: the RTM JSON ping below is the
                    # keepalive Slack expects, and a second one would only double
                    # the traffic. autoping still answers the server's pings.
                    autoping=True, heartbeat=None,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT),
                    max_msg_size=MAX_FRAME_RECEIVED,
                    # RTM events are small: deflate would cost more CPU per
                    # event than it saves on loopback or a LAN.
                    compress=0,
                    # Bytes, not str: orjson reads bytes directly, and a text
                    # frame with invalid UTF-8 becomes an error event here
                    # instead of failing the whole connection.
                    decode_text=False,
                    ssl=True if self._ssl is None else self._ssl,
                    proxy=self._proxy,
                )
        except BaseException as exc:
            await session.close()
            if isinstance(exc, aiohttp.InvalidURL):
                raise ValueError(f"not a WebSocket URL: {exc}") from None
            if isinstance(exc, aiohttp.WSServerHandshakeError):
                raise OSError(f"the server refused the WebSocket handshake (HTTP {exc.status})") from None
            if isinstance(exc, aiohttp.ClientError):
                raise OSError(f"{type(exc).__name__}: {exc}") from None
            raise
        self._session = session

    async def run(self) -> str:
        """Read until the socket ends; return why it ended (never raises for I/O)."""
        loop = asyncio.get_running_loop()
        self._keepalive = Keepalive(self._ping_interval, self._pong_timeout, time.monotonic())
        self._keepalive_task = loop.create_task(self._keep_alive(), name=f"rtm-keepalive-{self.number}")
        try:
            await self._read()
        except OSError as exc:
            if self.end_reason is None:
                self.end_reason = f"network: {exc}"
        except Exception as exc:
            # A bug behind intake must not take the whole session down
            # silently: drop this socket, say why, and let the client reconnect.
            log.exception("RTM connection #%s: error while handling a frame", self.number)
            self.end_reason = f"internal error: {exc!r}"
            self.abort()
        finally:
            task, self._keepalive_task = self._keepalive_task, None
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        return self.end_reason or "ended"

    async def _read(self) -> None:
        receive = self.ws.receive
        loads = orjson.loads
        bad_json = orjson.JSONDecodeError
        keep = self._wiring.record is not None
        waiting = parsed_frames(self.ws)
        frames: list[bytes] = []
        events: list[dict] = []
        greeted = False
        arrived = time.time()
        try:
            while True:
                if not waiting or len(events) >= MAX_BATCH:
                    if events:
                        batch, frames, events = (frames, events), [], []
                        self._deliver(*batch, arrived)
                    if not waiting:
                        msg = await receive()
                        # Frames aiohttp had parsed were read off the socket
                        # before this wake-up (socket reads run only while
                        # this task waits), so one stamp per wake-up is never
                        # earlier than a frame's arrival.
                        arrived = time.time()
                    else:
                        msg = await receive()
                else:
                    msg = await receive()  # parsed already: returns without yielding
                kind = msg.type
                if kind is not _TEXT and kind is not _BINARY:
                    self._ended(msg)
                    return
                data = msg.data
                try:
                    event = loads(data)
                except bad_json:  # not JSON, or not UTF-8
                    event = None
                if event.__class__ is dict and ("type" in event or "reply_to" in event):
                    if keep:
                        frames.append(data)
                    events.append(event)
                    if not greeted and event.get("type") == "hello":
                        # What hello brings about (the state change) is recorded
                        # right after it, not after the burst that follows it.
                        greeted = True
                        batch, frames, events = (frames, events), [], []
                        self._deliver(*batch, arrived)
                    continue
                if events:
                    batch, frames, events = (frames, events), [], []
                    self._deliver(*batch, arrived)
                self.frames += 1
                error = decode(data)
                self._wiring.intake(error, error["raw"])
        finally:
            if events:  # received: recorded and dispatched even when reading failed
                batch, frames, events = (frames, events), [], []
                self._deliver(*batch, arrived)

    def _deliver(self, frames: list[bytes], events: list[dict], arrived: float) -> None:
        self.frames += len(events)
        wiring = self._wiring
        if wiring.record is not None:
            wiring.record(frames, events, arrived)
        intake, reply = wiring.intake, self._reply
        for event in events:
            if "reply_to" in event:
                reply(event)
            intake(event)

    def _ended(self, msg: aiohttp.WSMessage) -> None:
        """Say why the socket ended, from the message that ended the read loop."""
        if self.end_reason is not None:
            return
        if msg.type is WSMsgType.ERROR:
            self.end_reason = f"network: {msg.data}"
            return
        code = self.ws.close_code
        if msg.type is WSMsgType.CLOSE:
            reason = msg.extra or ""
            self.end_reason = f"closed {msg.data} {reason}".strip()
        elif code is None or code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE:
            self.end_reason = "connection lost"
        else:
            self.end_reason = f"closed {code}"

    def _reply(self, event: dict) -> None:
        sent = self.protocol.reply(event)
        if sent is None:
            return
        if sent["type"] == "ping":
            if self._keepalive is not None:
                self._keepalive.pong(sent["id"], time.monotonic(), self.frames)
            return
        fut = self.waiters.pop(sent["id"], None)
        if fut is not None and not fut.done():
            if event.get("ok") is False:
                fut.set_exception(ReplyError(event))
            else:
                fut.set_result(event)

    async def send(self, message: dict) -> int:
        """Number, encode and write ``message``; return its id.

        Raises MessageTooLargeError / SlackClientError before writing, and
        ConnectionClosed if the socket is gone.
        """
        mid, text = self.protocol.prepare(message)
        ws = self.ws
        try:
            if ws.closed:
                raise ConnectionClosed(f"RTM connection #{self.number} is closed")
            await ws.send_str(text)
        except ConnectionError as exc:
            self.protocol.pending.pop(mid, None)
            if isinstance(exc, ConnectionClosed):
                raise
            raise ConnectionClosed(f"RTM connection #{self.number} is closed: {exc}") from None
        except BaseException:
            self.protocol.pending.pop(mid, None)
            raise
        self._wiring.sent({**message, "id": mid}, text)
        return mid

    async def _keep_alive(self) -> None:
        ka = self._keepalive
        assert ka is not None
        while True:
            await asyncio.sleep(max(ka.next_check(time.monotonic()), 0.01))
            now = time.monotonic()
            action = ka.tick(now, self.frames)
            if action == "ping":
                try:
                    mid = await self.send({"type": "ping"})
                except ConnectionClosed:
                    return
                ka.sent_ping(mid, now)
            elif action == "dead":
                self.end_reason = f"stale: no pong within {self._pong_timeout:g} s"
                log.warning("RTM connection #%s is silent and did not answer a ping; reconnecting", self.number)
                self.abort()
                return

    def abort(self) -> None:
        """Drop the TCP connection at once (a stalled server never answers a close)."""
        if self.ws is not None:
            drop(self.ws)

    def control(self, event: dict) -> Any:
        """A ``goodbye``: Slack closes soon. Returns the closing for the core
        to run beside the read loop, which keeps draining the frames Slack
        still sends before its close frame."""
        self.end_reason = "goodbye"
        return self.close()

    async def close(self) -> None:
        """Close the WebSocket politely (1000), dropping it if the server does not answer."""
        ws, session = self.ws, self._session
        if self.end_reason is None and ws is not None:
            self.end_reason = "closed by client"
        try:
            if ws is not None:
                await ws.close()
        except Exception:  # closing a dead socket: nothing left to tell the server
            self.abort()
        finally:
            if session is not None:
                self._session = None
                await session.close()

    def abandon(self) -> dict[int, asyncio.Future]:
        """The socket is gone: the awaited replies will never come. Hand their futures back."""
        self.protocol.abandon()
        waiters, self.waiters = self.waiters, {}
        return waiters
