"""The paced outbox: messages wait here until a socket has said hello, then go out under Slack's limit.

It survives reconnects (a message queued while reconnecting goes out on the
next socket) and knows nothing of the wire: a link's ``send`` numbers and
encodes, the :class:`Pacer` says when.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rtm_notebook.errors import DeliveryError, SlackClientNotConnectedError
from rtm_notebook.loops import hand_over, on_loop_thread
from rtm_notebook.transport import ConnectionClosed

__all__ = ["Outbox", "Pacer", "SEND_RATE", "SEND_BURST"]

# Slack's send limit: about one message a second sustained, a small burst tolerated.
SEND_RATE = 1.0
SEND_BURST = 3


class Pacer:
    """A token bucket that keeps outgoing messages under Slack's send limit.

    Slack allows about one message per second sustained and disconnects a
    client that keeps going faster; a small burst is tolerated. ``rate``
    tokens accrue per second up to ``burst``; each message spends one.
    """

    def __init__(self, rate: float = 1.0, burst: int = 3, now: float = 0.0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now

    def delay(self, now: float) -> float:
        """Seconds to wait before the next message may go (0 when it may go now)."""
        self._refill(now)
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def take(self, now: float) -> None:
        """Spend one token for a message sent at ``now``."""
        self._refill(now)
        self._tokens -= 1.0


class _Outgoing:
    __slots__ = ("message", "paced", "future", "want_reply")

    def __init__(self, message: dict, paced: bool, future: asyncio.Future, want_reply: bool) -> None:
        self.message = message
        self.paced = paced
        self.future = future
        self.want_reply = want_reply


def _settle(result: concurrent.futures.Future, fut: asyncio.Future) -> None:
    if fut.cancelled():
        result.cancel()
    elif fut.exception() is not None:
        result.set_exception(fut.exception())
    else:
        result.set_result(fut.result())


def _retrieve(fut: asyncio.Future) -> None:
    # A fire-and-forget send that failed is already reported as an error
    # event; this keeps asyncio from also logging "exception never retrieved".
    if not fut.cancelled():
        fut.exception()


class Outbox:
    """Outgoing messages of one client, in order. Used on the client's loop only."""

    def __init__(self, *, paced: bool = True) -> None:
        """``paced=False``: nothing holds messages back (a replay sends nowhere)."""
        self._paced = paced
        self._items: deque[_Outgoing] = deque()
        self._wake: asyncio.Future | None = None
        self._pacer = Pacer(SEND_RATE, SEND_BURST, time.monotonic())
        #: whether the current socket has said hello (nothing goes out before)
        self.open = False
        #: whether the client runs (off: put() refuses, nothing would send it)
        self.accepting = False

    def __len__(self) -> int:
        return len(self._items)

    def holds(self, message_type: str) -> bool:
        return any(item.message.get("type") == message_type for item in self._items)

    def submit(self, loop: asyncio.AbstractEventLoop, message: dict, paced: bool, want_reply: bool) -> Any:
        """Queue ``message`` from any thread: on the loop's thread an awaitable
        future, elsewhere a ``concurrent.futures.Future`` (of the reply, or the id)."""
        if on_loop_thread(loop):
            return self.put(loop, message, paced, want_reply)
        result: concurrent.futures.Future = concurrent.futures.Future()

        def put() -> None:  # on the loop; no task is made for it
            try:
                fut = self.put(loop, message, paced, want_reply)
            except BaseException as exc:
                result.set_exception(exc)
                return
            fut.add_done_callback(lambda f: _settle(result, f))

        if not hand_over(loop, put):
            result.set_exception(SlackClientNotConnectedError("the client's event loop has closed"))
        return result

    def put(self, loop: asyncio.AbstractEventLoop, message: dict, paced: bool, want_reply: bool) -> asyncio.Future:
        """Queue ``message``; the future gets the reply (``want_reply``) or the message id."""
        if not self.accepting:
            raise SlackClientNotConnectedError("the client was stopped: start() it again before sending")
        fut = loop.create_future()
        if not want_reply:
            fut.add_done_callback(_retrieve)
        self._items.append(_Outgoing(message, paced, fut, want_reply))
        self.wake()
        return fut

    def wake(self) -> None:
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    async def run(self, link: Any) -> None:
        """Send through ``link`` until it closes (what it could not send stays queued)."""
        loop = asyncio.get_running_loop()
        items, pacer = self._items, self._pacer
        while True:
            if not self.open or not items:
                self._wake = loop.create_future()
                await self._wake
                continue
            item = items[0]
            if item.future.done():  # cancelled by its caller
                items.popleft()
                continue
            if item.paced and self._paced:
                wait = pacer.delay(time.monotonic())
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
            try:
                mid = await link.send(item.message)
            except ConnectionClosed:
                return
            except Exception as exc:  # refused before writing (too large, not JSON): only this one fails
                items.popleft()
                if not item.future.done():
                    item.future.set_exception(exc)
                continue
            items.popleft()
            if item.paced:
                pacer.take(time.monotonic())
            if item.future.done():
                continue
            if item.want_reply:
                link.waiters[mid] = item.future
            else:
                item.future.set_result(mid)

    def fail(self, why: str, report: Callable[[str, str], None]) -> None:
        """Stop accepting; fail everything queued with DeliveryError, ``report(code, msg)`` each."""
        self.accepting = False
        while self._items:
            item = self._items.popleft()
            if not item.future.done():
                what = f"{item.message.get('type')} to {item.message.get('channel', '-')}"
                item.future.set_exception(DeliveryError(f"{what} was not sent: {why}"))
                report("not_delivered", f"{item.message.get('type')} was not sent: {why}")
