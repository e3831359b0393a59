"""One RTM WebSocket session: websockets' asyncio client driving protocol.py.

The connection reads frames, decodes them, settles replies and hands each
event to the client's ``intake`` callback, in order, once. It keeps the
socket honest with RTM JSON pings after ``ping_interval`` seconds of silence
and aborts it when a ping goes unanswered. Everything else (reconnecting,
recording, dispatching, pacing the outbox) is the client's job.

The read loop is the hot path: per frame it does one ``recv``, one UTF-8
decode, one ``orjson.loads`` and one call to ``intake``; nothing else is
awaited and nothing else is allocated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rtm_notebook.errors import ReplyError
from rtm_notebook.protocol import Keepalive, Protocol, decode

__all__ = ["Connection", "MAX_FRAME_RECEIVED"]

log = logging.getLogger(__name__)

# Slack sets no limit on what it sends; the cap only stops a broken server
# from exhausting memory (websockets' default of 1 MiB is too small for
# some rtm.start-era payloads).
MAX_FRAME_RECEIVED = 64 * 2**20
MAX_QUEUED_FRAMES = 4096
# A graceful close waits this long for the server's close frame.
CLOSE_TIMEOUT = 2.0


class Connection:
    """A single WebSocket connection to an RTM URL.

    ``intake(event, raw)`` is called on the loop for every frame received
    (``raw`` is the frame's text). ``on_sent(message, text)`` is called for
    every frame written, so the client can record it. ``number`` is the
    client's connection count, for the record.
    """

    def __init__(
        self,
        url: str,
        *,
        number: int,
        intake: Callable[[dict, str], None],
        on_sent: Callable[[dict, str], None],
        ping_interval: float,
        pong_timeout: float,
        open_timeout: float = 30.0,
        ssl: Any = None,
        proxy: str | None = None,
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
        self._on_sent = on_sent
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._open_timeout = open_timeout
        self._ssl = ssl
        self._proxy = proxy
        self._keepalive_task: asyncio.Task | None = None
        self._keepalive: Keepalive | None = None

    def __repr__(self) -> str:
        state = "open" if self.ws is not None and self.end_reason is None else (self.end_reason or "new")
        return f"<Connection #{self.number} {state} frames={self.frames}>"

    async def open(self) -> None:
        """Open the WebSocket (raises OSError / websockets errors on failure)."""
        kwargs: dict[str, Any] = {
            "open_timeout": self._open_timeout,
            "close_timeout": CLOSE_TIMEOUT,
            # The RTM JSON ping below is the keepalive Slack expects; a
            # second, protocol-level one would only double the traffic.
            "ping_interval": None,
            "max_size": MAX_FRAME_RECEIVED,
            # RTM events are small: deflate would cost more CPU per event
            # than it saves on loopback or a LAN.
            "compression": None,
            # websockets pauses the transport past 16 queued frames by default;
            # a deeper queue lets one loop iteration drain a whole TCP read
            # (hundreds of small events) instead of waking up every 16.
            "max_queue": MAX_QUEUED_FRAMES,
        }
        if self.url.startswith("wss:") and self._ssl is not None:
            kwargs["ssl"] = self._ssl
        if self._proxy:
            kwargs["proxy"] = self._proxy
        self.ws = await connect(self.url, **kwargs)

    async def run(self) -> str:
        """Read until the socket ends; return why it ended (never raises for I/O)."""
        loop = asyncio.get_running_loop()
        self._keepalive = Keepalive(self._ping_interval, self._pong_timeout, time.monotonic())
        self._keepalive_task = loop.create_task(self._keep_alive(), name=f"rtm-keepalive-{self.number}")
        try:
            await self._read()
        except ConnectionClosed as exc:
            if self.end_reason is None:
                rcvd = exc.rcvd
                self.end_reason = f"closed {rcvd.code} {rcvd.reason}".strip() if rcvd else "connection lost"
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
        recv = self.ws.recv
        intake = self._intake
        loads = orjson.loads
        bad_json = orjson.JSONDecodeError
        reply = self._reply
        while True:
            # decode=False: a text frame with invalid UTF-8 must become an
            # error event here, not fail the whole connection inside websockets.
            data = await recv(False)
            self.frames += 1
            try:
                raw = data.decode()
                event = loads(raw)
            except (UnicodeDecodeError, bad_json):
                event = decode(data)
                raw = event["raw"]
            else:
                if event.__class__ is not dict or ("type" not in event and "reply_to" not in event):
                    event = decode(raw)
            if "reply_to" in event:
                reply(event)
            intake(event, raw)

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
        websockets' ConnectionClosed if the socket is gone.
        """
        mid, text = self.protocol.prepare(message)
        try:
            await self.ws.send(text)
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
        if ws is not None and ws.transport is not None:
            ws.transport.abort()

    async def close(self) -> None:
        """Close the WebSocket politely (1000), dropping it if the server does not answer."""
        ws = self.ws
        if ws is None:
            return
        if self.end_reason is None:
            self.end_reason = "closed by client"
        try:
            await ws.close()
        except Exception:  # closing a dead socket: nothing left to tell the server
            self.abort()

    def abandon(self) -> dict[int, asyncio.Future]:
        """The socket is gone: the awaited replies will never come. Hand their futures back."""
        self.protocol.abandon()
        waiters, self.waiters = self.waiters, {}
        return waiters
