"""One Socket Mode WebSocket: envelopes in, acks out, before any handler runs.

Per wake-up of the read loop (:class:`~rtm_notebook.websocket.WebSocketLink`)
the batch of frames is, in this order:

1. recorded, whole envelopes as they arrived (``wiring.record``), a
   redelivered event already seen marked as a duplicate;
2. acknowledged: one ack per envelope, written before any handler gets the
   batch, so no handler (slow, stuck, failing) can make an ack late. The
   exception is an envelope that accepts an answer (a slash command, a
   view submission) and has handlers for its type: its ack waits for their
   answer up to :data:`~.protocol.ANSWER_DEADLINE`, then goes out empty (``"*"`` handlers do not answer);
3. handed to the core (``wiring.intake``): the *inner* event (an Events API
   event has the shape of the RTM event of the same type), a duplicate not
   again.

``disconnect`` frames are recorded and dispatched as events too, and then
acted on: ``warning``/``refresh_requested`` ask the core for a successor
(it opens the next socket before this one closes), ``link_disabled`` ends
the session with what to do, ``too_many_websockets`` refuses this socket.
Keepalive is WebSocket pings (Slack pings its clients; aiohttp's heartbeat
sends ours and ends a socket whose pong does not come).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from rtm_notebook.fields import inner_event
from rtm_notebook.handlers import Interaction
from rtm_notebook.rtm.protocol import decode, malformed
from rtm_notebook.socketmode.protocol import (
    ANSWER_DEADLINE,
    HANDOVER_REASONS,
    Seen,
    SocketModeDisabled,
    ack_frame,
    answer_payload,
)
from rtm_notebook.transport import ConnectionClosed, Wiring
from rtm_notebook.websocket import WebSocketLink, write_frames

__all__ = ["SocketModeLink"]

log = logging.getLogger(__name__)

_EVENTS_API = "events_api"
_CONTROL = frozenset(("hello", "disconnect"))


class _Held:
    """An envelope whose handlers may answer it: its ack, deadline and response_url."""

    __slots__ = ("envelope_id", "type", "accepts", "response_url", "expected", "timer", "acked", "answered")

    def __init__(self, envelope: dict, event_type: str, expected: int) -> None:
        self.envelope_id: str = envelope["envelope_id"]
        self.type = event_type
        self.accepts = envelope.get("accepts_response_payload") is True
        payload = envelope.get("payload")
        self.response_url = _response_url(payload) if isinstance(payload, dict) else None
        self.expected = expected
        self.timer: asyncio.TimerHandle | None = None
        self.acked = not self.accepts  # an envelope that takes no answer was acked with the others
        self.answered = False


def _said(kind: str, held: _Held, answer: dict) -> dict:
    """The row of an answer (an ``ack`` with a payload, or a ``response`` posted):
    not shaped as an envelope, whose columns are for what was received."""
    row = {"type": kind, "envelope_id": held.envelope_id, "answer": answer}
    if isinstance(answer.get("text"), str):
        row["text"] = answer["text"]
    return row


def _response_url(payload: dict) -> str | None:
    url = payload.get("response_url")
    if isinstance(url, str):
        return url
    urls = payload.get("response_urls")  # a view submission's, when its modal asked for one
    if isinstance(urls, list) and urls and isinstance(urls[0], dict) and isinstance(urls[0].get("response_url"), str):
        return urls[0]["response_url"]
    return None


class SocketModeLink(WebSocketLink):
    """A single Socket Mode WebSocket (a transport Link; see :mod:`rtm_notebook.transport`).

    ``seen`` is the client's memory of event ids (shared by its sockets, so
    a redelivery on another socket is a duplicate too); ``respond(url,
    body)`` posts an answer to a ``response_url``.
    """

    kind = "SocketModeLink"
    # The envelopes read just before the server's close frame are acked before the close is answered.
    autoclose = False

    def __init__(self, url: str, wiring: Wiring, *, seen: Seen, respond: Callable[[str, dict], Awaitable[Any]],
                 ping_interval: float, open_timeout: float = 30.0, ssl: Any = None, proxy: str | None = None) -> None:
        super().__init__(url, wiring, open_timeout=open_timeout, ssl=ssl, proxy=proxy, heartbeat=ping_interval)
        self.seen = seen
        self.greeted = asyncio.Event()
        self.wants_successor = asyncio.Event()
        self.fatal: BaseException | None = None
        self.retry_later: str | None = None
        #: envelopes received, acks written, redelivered events not dispatched again
        self.envelopes = self.acks = self.duplicates = 0
        self._respond = respond
        self._tasks: set[asyncio.Task] = set()
        self._held: set[_Held] = set()  # waiting for their handlers' answers
        self._broken = False

    def _accept(self, event: Any) -> bool:
        # An envelope, or a control frame (hello, disconnect); any other object is reported as RTM's would be.
        return event.__class__ is dict and ("envelope_id" in event or "type" in event)

    def _malformed(self, data: bytes) -> dict:
        error = decode(data)
        if "raw" in error and error["error"]["code"] != "no_type":
            return error
        # An object without either (RTM would take one with a reply_to): say what Socket Mode wants.
        raw = error["raw"] if "raw" in error else bytes(data).decode(errors="replace")
        return malformed("no_type", "frame is an object with neither 'envelope_id' nor 'type'", raw)

    async def _deliver(self, frames: list[bytes], envelopes: list[dict], arrived: float) -> None:
        # One pass sorts the batch (the hot path: kept free of calls it can do without).
        self.frames += len(envelopes)
        wiring = self._wiring
        seen, now = self.seen, time.monotonic()
        ids = seen.ids
        dumps = orjson.dumps
        events: list[Any] = []
        acks: list[bytes] = []
        duplicates: list[int] | None = None
        controls: list[dict] | None = None
        frames_only = 0
        for i, envelope in enumerate(envelopes):
            envelope_id = envelope.get("envelope_id")
            if envelope_id.__class__ is not str:
                frames_only += 1
                events.append(envelope)  # hello, disconnect: the frame is the event
                if envelope.get("type") in _CONTROL:
                    controls = [envelope] if controls is None else [*controls, envelope]
                continue
            if envelope.get("type") == _EVENTS_API:
                payload = envelope.get("payload")
                if payload.__class__ is dict:
                    event = payload.get("event")
                    event_id = payload.get("event_id")
                    if event_id.__class__ is str:
                        if event_id in ids:
                            # Handlers had it (or have it queued): recorded, acked, not run again.
                            self.duplicates += 1
                            duplicates = [i] if duplicates is None else [*duplicates, i]
                            events.append(None)
                            acks.append(dumps({"envelope_id": envelope_id}))
                            continue
                        ids[event_id] = now  # Seen.add, inlined: once per event
                    if event.__class__ is not dict:
                        event = inner_event(envelope)
                else:
                    event = inner_event(envelope)
                events.append(event)
                acks.append(dumps({"envelope_id": envelope_id}))  # ack_frame, inlined
                continue
            event = inner_event(envelope)
            expected = wiring.listeners(event.get("type"))
            if expected:  # handlers that may answer it: they settle its ack
                held = _Held(envelope, event.get("type"), expected)
                self._held.add(held)
                event = Interaction(event, functools.partial(self._settle, held))
                if held.accepts:
                    held.timer = asyncio.get_running_loop().call_later(ANSWER_DEADLINE, self._deadline, held)
                    events.append(event)
                    continue
            events.append(event)
            acks.append(ack_frame(envelope_id))
        seen.prune(now)
        self.envelopes += len(envelopes) - frames_only
        if wiring.record is not None:
            wiring.record(frames, envelopes, arrived, duplicates)
        if acks and not self._broken:
            try:
                await write_frames(self.ws, acks)
            except ConnectionError:
                # The socket is closing: what is not acked comes again (events)
                # and is then a duplicate; everything read is still dispatched.
                self._broken = True
            else:
                self.acks += len(acks)
        intake = wiring.intake
        for event in events:
            if event is not None:
                intake(event)
        if controls is not None:
            for frame in controls:
                if frame["type"] == "hello":
                    self.greeted.set()
                else:
                    await self._disconnect(frame)

    async def _disconnect(self, frame: dict) -> None:
        reason = frame.get("reason")
        if reason == "link_disabled":
            self.fatal = SocketModeDisabled()
        elif reason == "too_many_websockets":
            self.retry_later = (f"Slack refused connection #{self.number}: too_many_websockets (an app may have 10 "
                                "Socket Mode connections open; is this app running in another kernel or process? "
                                "Stop those clients)")
        else:  # warning, refresh_requested, or a reason Slack adds later: move over
            if reason not in HANDOVER_REASONS:
                log.info("Socket Mode connection #%s: disconnect %r; moving to a new connection", self.number, reason)
            self.wants_successor.set()
            return
        self.end_reason = f"disconnect: {reason}"
        await self.close()

    # -- answers -------------------------------------------------------------------

    def _settle(self, held: _Held, result: Any) -> None:
        """A handler that got ``held``'s event has returned ``result`` (on the loop)."""
        held.expected -= 1
        try:
            answer = answer_payload(result)
        except TypeError as exc:
            self._report("bad_answer", f"{held.type}: {exc}")
            answer = None
        if answer is not None and not held.answered:
            held.answered = True
            if not held.acked and not self._broken and self.ws is not None and not self.ws.closed:
                self._ack(held, answer)
            elif held.response_url is not None:
                self._spawn(self._post(held, answer))
            else:
                self._report("no_response_url", f"a {held.type} answered after the ack has no response_url to "
                             "take the answer; post it with client.web_client instead")
        if held.expected <= 0:
            self._held.discard(held)
            if not held.acked:
                self._ack(held, None)

    def _deadline(self, held: _Held) -> None:
        if not held.acked:
            self._ack(held, None)  # a later answer goes to the response_url

    def _ack(self, held: _Held, answer: dict | None) -> None:
        held.acked = True
        if held.timer is not None:
            held.timer.cancel()
        self._spawn(self._write(held, answer))

    async def _write(self, held: _Held, answer: dict | None) -> None:
        text = ack_frame(held.envelope_id, answer)
        try:
            await write_frames(self.ws, [text])
        except ConnectionError:
            self._broken = True
            if answer is not None and held.response_url is not None:
                await self._post(held, answer)  # the ack is lost; the answer need not be
            return
        self.acks += 1
        if answer is not None:
            # Recorded as what it is (the wire text has no type), the answer included.
            self._wiring.sent(_said("ack", held, answer), None)

    async def _post(self, held: _Held, answer: dict) -> None:
        try:
            if not await self._respond(held.response_url, answer):
                log.warning("the client has stopped: the answer to a %s was not posted", held.type)
                return
        except Exception as exc:
            self._report("response_failed", f"posting the answer to the {held.type}'s response_url failed: {exc}")
            return
        # The URL itself is a short-lived credential: the record keeps what was said.
        self._wiring.sent(_said("response", held, answer), None)

    def _report(self, code: str, msg: str) -> None:
        log.warning("%s", msg)
        error = {"type": "error", "error": {"code": code, "msg": msg}}
        self._wiring.malformed(error, orjson.dumps(error).decode())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"rtm-socketmode-{self.number}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the rest of a Link ------------------------------------------------------------

    def control(self, event: dict) -> Any:
        return None  # the link acts on its own disconnect frames (see _disconnect)

    async def send(self, message: dict) -> int:
        raise ConnectionClosed("a Socket Mode socket carries only acks; post messages with client.send_message "
                               "or client.web_client")

    async def close(self) -> None:
        await super().close()
        for held in self._held:
            if held.timer is not None:
                held.timer.cancel()  # an ack now could not be written; a later answer goes to the response_url
        self._held.clear()
        if self._tasks:  # acks and answers in flight finish (their socket is gone: they fail fast)
            _, late = await asyncio.wait(list(self._tasks), timeout=5.0)
            for task in late:
                task.cancel()
