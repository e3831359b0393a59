"""One RTM WebSocket: :class:`~rtm_notebook.websocket.WebSocketLink` driving :mod:`.protocol`.

The connection reads frames, decodes them, settles replies and hands them
to the session core through its :class:`~rtm_notebook.transport.Wiring`,
in order, once: per wake-up of the read loop, one ``record`` call for the
frames that are events, then one ``intake`` call per event. Recording
before dispatching means a handler never sees an event the EventFrame does
not hold. It keeps the socket honest with RTM JSON pings after
``ping_interval`` seconds of silence and aborts it when a ping goes
unanswered. Reconnecting, dispatching and pacing are the core's job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from rtm_notebook.errors import ReplyError
from rtm_notebook.rtm.protocol import Keepalive, Protocol, decode
from rtm_notebook.transport import ConnectionClosed, Wiring
from rtm_notebook.websocket import WebSocketLink

__all__ = ["Connection", "ConnectionClosed"]

log = logging.getLogger(__name__)


class Connection(WebSocketLink):
    """A single WebSocket connection to an RTM URL (a transport Link).

    ``wiring`` says where frames go (see :mod:`rtm_notebook.transport`).
    No WebSocket-level heartbeat: the RTM JSON ping is the keepalive Slack
    expects, and a second one would only double the traffic.
    """

    kind = "Connection"

    def __init__(self, url: str, wiring: Wiring, *, ping_interval: float, pong_timeout: float,
                 open_timeout: float = 30.0, ssl: Any = None, proxy: str | None = None) -> None:
        super().__init__(url, wiring, open_timeout=open_timeout, ssl=ssl, proxy=proxy)
        self.protocol = Protocol()
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._keepalive: Keepalive | None = None

    def _beside(self) -> Any:
        self._keepalive = Keepalive(self._ping_interval, self._pong_timeout, time.monotonic())
        return self._keep_alive()

    def _accept(self, event: Any) -> bool:
        return event.__class__ is dict and ("type" in event or "reply_to" in event)

    def _malformed(self, data: bytes) -> dict:
        return decode(data)

    async def _deliver(self, frames: list[bytes], events: list[dict], arrived: float) -> None:
        self.frames += len(events)
        wiring = self._wiring
        if wiring.record is not None:
            wiring.record(frames, events, arrived)
        intake, reply = wiring.intake, self._reply
        for event in events:
            if "reply_to" in event:
                reply(event)
            intake(event)

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

    def control(self, event: dict) -> Any:
        """A ``goodbye``: Slack closes soon. Returns the closing for the core
        to run beside the read loop, which keeps draining the frames Slack
        still sends before its close frame."""
        self.end_reason = "goodbye"
        return self.close()

    def abandon(self) -> dict[int, asyncio.Future]:
        """The socket is gone: the awaited replies will never come. Hand their futures back."""
        self.protocol.abandon()
        return super().abandon()
