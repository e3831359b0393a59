"""The aiohttp WebSocket under both transports: opening with clear errors, ending, closing.

:class:`WebSocketLink` is what an RTM socket (:mod:`rtm_notebook.rtm.connection`)
and a Socket Mode socket (:mod:`rtm_notebook.socketmode.connection`) share:
how a URL becomes an open socket (every failure an ``OSError``,
``TimeoutError`` or ``ValueError`` that says why), how the end of the read
loop becomes an ``end_reason``, and a polite close that drops the socket
when the server does not answer. What frames mean is each transport's.

aiohttp rather than websockets: its compiled frame reader delivered about
twice the events per second (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from typing import Any

import aiohttp
import numpy as np
import orjson
from aiohttp import WSMsgType

from rtm_notebook.transport import Wiring

__all__ = ["CLOSE_TIMEOUT", "MAX_FRAME_RECEIVED", "MAX_BATCH", "WebSocketLink", "drop", "parsed_frames",
           "text_frames", "write_frames"]

log = logging.getLogger(__name__)

_TEXT, _BINARY = WSMsgType.TEXT, WSMsgType.BINARY

# Slack sets no limit on what it sends; the cap only stops a broken server
# from exhausting memory (aiohttp's default of 4 MiB is too small for
# some rtm.start-era payloads).
MAX_FRAME_RECEIVED = 64 * 2**20
# A graceful close waits this long for the server's close frame.
CLOSE_TIMEOUT = 2.0
# Events delivered to the core at most per batch, so a long burst is
# recorded and dispatched as it arrives, not after the whole of it.
MAX_BATCH = 2048


# The places aiohttp's private attributes are used (and _websocket_mask
# below, its compiled masking); each has a test
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


def _transport(ws: aiohttp.ClientWebSocketResponse) -> asyncio.Transport | None:
    """The transport under ``ws`` (aiohttp's writer's, ``_writer.transport``; None without it)."""
    return getattr(getattr(ws, "_writer", None), "transport", None)


try:  # aiohttp's own compiled masking (private; tests/test_connection.py checks it is there)
    from aiohttp._websocket.helpers import websocket_mask as _websocket_mask
except ImportError:  # pragma: no cover: write_frames then lets aiohttp write each frame itself
    _websocket_mask = None

_PACK_LEN2, _PACK_LEN3 = struct.Struct("!BBH").pack, struct.Struct("!BBQ").pack
# Writes a socket's buffer may hold before the writer waits for it to drain.
WRITE_BUFFER_HIGH = 1 << 20


def text_frames(payloads: list[bytes]) -> bytes:
    """Client text frames (masked, RFC 6455) for each UTF-8 payload, as one buffer."""
    size = len(payloads[0]) if payloads else 0
    if 0 < size < 126 and len(payloads) > 8 and all(len(p) == size for p in payloads):
        return _same_size_frames(payloads, size)
    parts: list[bytes | bytearray] = []
    append = parts.append
    for payload in payloads:
        n = len(payload)
        if n < 126:
            append(bytes((0x81, 0x80 | n)))
        elif n < 65536:
            append(_PACK_LEN2(0x81, 0xFE, n))
        else:
            append(_PACK_LEN3(0x81, 0xFF, n))
        key = os.urandom(4)  # RFC 6455 10.3: from a strong source of entropy, fresh per frame
        append(key)
        data = bytearray(payload)
        _websocket_mask(key, data)
        append(data)
    return b"".join(parts)


def _same_size_frames(payloads: list[bytes], size: int) -> bytes:
    """text_frames for payloads of one size under 126 bytes (a burst's acks: envelope ids
    are UUIDs), as one array operation: a frame per row, header, key, masked payload."""
    n = len(payloads)
    frames = np.empty((n, 6 + size), np.uint8)
    frames[:, 0] = 0x81
    frames[:, 1] = 0x80 | size
    keys = np.frombuffer(os.urandom(4 * n), np.uint8).reshape(n, 4)  # a fresh key per frame
    frames[:, 2:6] = keys
    data = np.frombuffer(b"".join(payloads), np.uint8).reshape(n, size)
    np.bitwise_xor(data, np.tile(keys, (1, (size + 3) // 4))[:, :size], out=frames[:, 6:])
    return frames.tobytes()


async def write_frames(ws: aiohttp.ClientWebSocketResponse, payloads: list[bytes]) -> None:
    """Write text frames for ``payloads`` with one write to the socket.

    aiohttp writes each frame on its own, and each write to an idle socket
    is a ``send`` system call: for a burst's acks that was a quarter of the
    client's CPU (docs/benchmarks.md). Raises ConnectionResetError when the
    socket is closing (nothing was written).
    """
    transport = _transport(ws)
    if transport is None or _websocket_mask is None:  # an aiohttp without them: its own writes, one by one
        for payload in payloads:
            await ws.send_frame(payload, aiohttp.WSMsgType.TEXT)
        return
    if ws.closed or transport.is_closing():
        raise ConnectionResetError("the WebSocket is closing")
    transport.write(text_frames(payloads))
    while transport.get_write_buffer_size() > WRITE_BUFFER_HIGH and not transport.is_closing():
        await asyncio.sleep(0.001)


class WebSocketLink:
    """One client WebSocket of a transport (the open/close half of a transport Link).

    ``wiring.number`` is the client's connection count, for the record;
    ``heartbeat`` is aiohttp's WebSocket-level ping interval (None: none).
    """

    #: what repr() calls a socket of this kind
    kind = "WebSocket"
    #: whether aiohttp answers the server's close frame inside ``receive()``;
    #: False: the read loop first hands on what it read before the close
    #: (a Socket Mode link acks it: nothing may be sent after the answer),
    #: then :meth:`close` answers it
    autoclose = True

    def __init__(self, url: str, wiring: Wiring, *, open_timeout: float = 30.0, ssl: Any = None,
                 proxy: str | None = None, heartbeat: float | None = None) -> None:
        self.url = url
        self.number = wiring.number
        #: frames received so far
        self.frames = 0
        #: id -> future of a message whose reply is awaited
        self.waiters: dict[int, asyncio.Future] = {}
        #: why the socket ended: "closed 1000 ...", "stale: ...", "network: ..."
        self.end_reason: str | None = None
        self.ws: Any = None
        self._wiring = wiring
        self._open_timeout = open_timeout
        self._ssl = ssl
        self._proxy = proxy
        self._heartbeat = heartbeat
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        state = "open" if self.ws is not None and self.end_reason is None else (self.end_reason or "new")
        return f"<{self.kind} #{self.number} {state} frames={self.frames}>"

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
                    # autoping answers the server's pings; heartbeat, when set,
                    # sends ours and ends a socket whose pong does not come.
                    autoping=True, autoclose=self.autoclose, heartbeat=self._heartbeat,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT),
                    max_msg_size=MAX_FRAME_RECEIVED,
                    # Slack's frames are small: deflate would cost more CPU per
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

    # -- what a transport's link gives -------------------------------------------

    def _beside(self) -> Any:
        """A coroutine to run beside the read loop while the socket is open (a keepalive), or None."""
        return None

    def _accept(self, event: Any) -> bool:
        """Whether a decoded frame is an event (anything else is reported as malformed)."""
        return event.__class__ is dict

    async def _deliver(self, frames: list[bytes], events: list[dict], arrived: float) -> None:
        """Hand one batch to the core: record, then intake (see :mod:`rtm_notebook.transport`)."""
        raise NotImplementedError

    def _malformed(self, data: bytes) -> dict:
        """The error event for a frame that is no event (it keeps the text, as ``raw``)."""
        raise NotImplementedError

    # -- reading ------------------------------------------------------------------

    async def run(self) -> str:
        """Read until the socket ends; return why it ended (never raises for I/O)."""
        beside = self._beside()
        companion = None if beside is None else asyncio.get_running_loop().create_task(
            beside, name=f"rtm-keepalive-{self.number}")
        try:
            await self._read()
        except OSError as exc:
            if self.end_reason is None:
                self.end_reason = f"network: {exc}"
        except Exception as exc:
            # A bug behind intake must not take the whole session down
            # silently: drop this socket, say why, and let the client reconnect.
            log.exception("%s #%s: error while handling a frame", self.kind, self.number)
            self.end_reason = f"internal error: {exc!r}"
            self.abort()
        finally:
            if companion is not None:
                companion.cancel()
                await asyncio.wait([companion])
        return self.end_reason or "ended"

    async def _read(self) -> None:
        receive = self.ws.receive
        loads = orjson.loads
        bad_json = orjson.JSONDecodeError
        accept, deliver = self._accept, self._deliver
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
                        await deliver(*batch, arrived)
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
                if accept(event):
                    if keep:
                        frames.append(data)
                    events.append(event)
                    if not greeted and event.get("type") == "hello":
                        # What hello brings about (the state change) is recorded
                        # right after it, not after the burst that follows it.
                        greeted = True
                        batch, frames, events = (frames, events), [], []
                        await deliver(*batch, arrived)
                    continue
                if events:
                    batch, frames, events = (frames, events), [], []
                    await deliver(*batch, arrived)
                self.frames += 1
                error = self._malformed(data)
                self._wiring.malformed(error, error["raw"])
        finally:
            if events:  # received: recorded and dispatched even when reading failed
                batch, frames, events = (frames, events), [], []
                await deliver(*batch, arrived)

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
            # aiohttp's heartbeat ends a socket whose pong did not come this way too.
            self.end_reason = "connection lost"
        else:
            self.end_reason = f"closed {code}"

    def abort(self) -> None:
        """Drop the TCP connection at once (a stalled server never answers a close)."""
        if self.ws is not None:
            drop(self.ws)

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
        waiters, self.waiters = self.waiters, {}
        return waiters
