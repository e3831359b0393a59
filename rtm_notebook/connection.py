"""One RTM WebSocket session: aiohttp's WebSocket client driving protocol.py.

The connection reads frames, decodes them, settles replies and hands each
event to the client's ``intake`` callback, in order, once. It keeps the
socket honest with RTM JSON pings after ``ping_interval`` seconds of silence
and aborts it when a ping goes unanswered. Everything else (reconnecting,
dispatching, pacing the outbox, recording what the lane below does not) is
the client's job.

The read loop is the hot path: per frame it does one ``receive``, one
``orjson.loads`` of the frame's bytes and one call to ``intake``. The bytes
are not decoded to str: orjson reads UTF-8 (and refuses what is not).

Given a ``lane`` (the client's EventFrame's open chunk, see
``events._Lane``), the loop records each event frame itself: the frame's
bytes object as it is and its arrival time, two list appends. A Python
call per frame for that cost more instructions than everything else
recording does (measured with cachegrind on the simulated workspace's
burst), and so did copying the bytes anywhere.

The arrival time is read once each time the loop waits for the socket and
wakes, not once per frame: frames aiohttp had parsed already were all read
off the socket before that wake-up (socket reads run only while this task
waits), so the stamp is never earlier than the frame's arrival, and it is
no later than a per-frame stamp. In a burst one wake-up brings hundreds of
frames.

Why aiohttp and not ``websockets`` here: on the simulated workspace's
firehose (2-core machine, sim in another process) a bare receive loop over
aiohttp's C-accelerated frame reader delivered 128,000-178,000 events/s
where the same loop over ``websockets`` delivered 56,000-89,000 (see
docs/benchmarks.md): websockets parses every frame in Python, and that
parser was the largest single cost in a profile of the whole client.
aiohttp is already the simulated workspace's server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType

from rtm_notebook.errors import ReplyError
from rtm_notebook.protocol import Keepalive, Protocol, decode

__all__ = ["Connection", "ConnectionClosed", "MAX_FRAME_RECEIVED"]

log = logging.getLogger(__name__)

# Slack sets no limit on what it sends; the cap only stops a broken server
# from exhausting memory (aiohttp's default of 4 MiB is too small for
# some rtm.start-era payloads).
MAX_FRAME_RECEIVED = 64 * 2**20
# A graceful close waits this long for the server's close frame.
CLOSE_TIMEOUT = 2.0

_TEXT, _BINARY = WSMsgType.TEXT, WSMsgType.BINARY


def _parsed_frames(ws: aiohttp.ClientWebSocketResponse) -> Any:
    """aiohttp's queue of frames parsed and not received yet: empty exactly
    when ``receive()`` would wait. A private attribute (``_reader._buffer``,
    public in aiohttp's Cython reader); tests/test_client_modern.py checks
    it is there. Without it, an empty tuple: every frame gets its own stamp."""
    return getattr(getattr(ws, "_reader", None), "_buffer", ())


class ConnectionClosed(ConnectionError):
    """The socket closed before a frame could be written."""


class Connection:
    """A single WebSocket connection to an RTM URL.

    ``intake(event, raw)`` is called on the loop for every frame received
    (``raw`` is the frame's UTF-8 bytes, or None when the frame was
    recorded through ``lane``; for a frame that is not an event, the text
    of the ``error`` event it became, as str). ``on_sent(message, text)`` is called for
    every frame written, so the client can record it. ``number`` is the
    client's connection count, for the record.
    """

    def __init__(
        self,
        url: str,
        *,
        number: int,
        intake: Callable[[dict, bytes | str | None], None],
        on_sent: Callable[[dict, str], None],
        ping_interval: float,
        pong_timeout: float,
        open_timeout: float = 30.0,
        ssl: Any = None,
        proxy: str | None = None,
        lane: Any = None,
    ) -> None:
        self.url = url
        self.number = number
        self.protocol = Protocol()
        #: frames received so far (the keepalive watches it change)
        self.frames = 0
        #: id -> future of a message whose reply is awaited
        self.waiters: dict[int, asyncio.Future] = {}
        #: why the connection ended: "closed 1000 ...", "stale", "network: ..."
        self.end_reason: str | None = None
        self.ws: Any = None
        self._intake = intake
        self._lane = lane
        self._on_sent = on_sent
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
        ws = self.ws
        receive = ws.receive
        intake = self._intake
        loads = orjson.loads
        bad_json = orjson.JSONDecodeError
        reply = self._reply
        lane = self._lane
        if lane is not None:
            keep, times, limit, seal = lane.texts.append, lane.times, lane.limit, lane.seal
            time_at = times.append
        now = time.time
        waiting = _parsed_frames(ws)
        arrived = now()
        while True:
            if waiting:
                # Parsed already: receive() returns without yielding to the
                # loop, and the frame was read off the socket before the
                # loop last woke this task (no socket reads run in between).
                msg = await receive()
            else:
                msg = await receive()
                arrived = now()
            kind = msg.type
            if kind is not _TEXT and kind is not _BINARY:
                self._ended(msg)
                return
            data = msg.data
            self.frames += 1
            try:
                event = loads(data)
            except bad_json:  # not JSON, or not UTF-8
                event = None
            if event.__class__ is not dict or ("type" not in event and "reply_to" not in event):
                event = decode(data)
                data = event["raw"]
            elif lane is not None:
                keep(data)
                time_at(arrived)
                if len(times) >= limit:
                    seal()
                data = None
            if "reply_to" in event:
                reply(event)
            intake(event, data)

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
        self._on_sent({**message, "id": mid}, text)
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
        ws = self.ws
        if ws is not None:
            # aiohttp has no public abort on a client WebSocket; closing its
            # HTTP response closes the underlying connection without waiting
            # for a close handshake, and the read loop then ends.
            ws._response.close()

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
