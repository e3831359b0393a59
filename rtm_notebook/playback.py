"""Replay: a recording played into a client as its transport, to try handlers on past traffic.

``client = replay("events/", speed=1.0)`` (a JSON-lines recording, a Parquet
dataset, or a Slack export) gives a client like any other: handlers,
``%%rtm_on``, the live log, ``wait_for`` and the EventFrame behave as on a
live connection. The socket is the recording: a ``hello``, then every event
Slack had sent, in order, at the pace it came (``speed=2.0`` twice as fast,
``speed=None`` as fast as the client takes them), then a ``replay_end``
event (``await client.finished()`` returns then); the socket then stays open,
idle, until ``stop()``, so handlers answering the last events still get
their replies. What the
client would send goes nowhere: messages over the socket are recorded as
sent (and answered with a reply, so ``await say(...)`` returns), and Web API
calls are recorded as ``api_call`` rows and answered ``{"ok": true}``.

A Socket Mode recording plays the same way: each envelope is recorded as
it was and its handlers get its inner event (:func:`~rtm_notebook.fields.inner_event`),
as from the Socket Mode client; envelopes that client had marked
``duplicate`` (received again, not dispatched) are not played again.

The third transport under the session core (RTM and Socket Mode are the
others); it reads recordings through :class:`~rtm_notebook.events.EventFrame`.
Its rows have no ``transport`` (it is no live session).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

import orjson
import pandas as pd

from rtm_notebook.events import EventFrame
from rtm_notebook.fields import inner_event
from rtm_notebook.loops import call_soon
from rtm_notebook.outbox import Outbox
from rtm_notebook.rtm.client import RTMSession
from rtm_notebook.transport import Wiring
from rtm_notebook.web import SlackResponse

__all__ = ["ReplaySession", "replay"]

# Not replayed: the client's own rows (the replaying client makes its own), and
# what answered the recorded client (its hello, replies, pongs; RTM's goodbye and
# Socket Mode's disconnect): a replay says its own hello and answers its own messages.
_CLIENT_TYPES = frozenset(("open", "close", "state_change", "hello", "goodbye", "disconnect", "reply", "pong",
                           "replay_end"))
_CLIENT_ERRORS = frozenset(("connect_failed", "socket_failed", "not_delivered"))
# As fast as possible still lets the loop run handlers and the live log between these many events.
_YIELD_EVERY = 256


def recorded_events(path: str | os.PathLike) -> tuple[list[tuple[float, bytes]], EventFrame]:
    """What Slack sent, from a recording: ``(received_at, frame bytes)`` in order, and the frame read."""
    text = os.fspath(path)
    frame = EventFrame.from_slack_export(text) if _is_export(text) else EventFrame.read(text)
    df = frame.to_pandas()
    envelope = df["envelope_id"].notna()  # its type is its inner event's: never one of the client's own
    df = df[(envelope | ~df["type"].isin(_CLIENT_TYPES)) & ~df["duplicate"].fillna(False)]
    live = df[df["direction"] == "in"]
    # A Slack export is all history; a recording's history rows (a backfill) were never live.
    # History comes page by page, newest first: played in the order it happened.
    df = live if len(live) else df[df["direction"] == "history"].sort_values(["received_at", "seq"], kind="stable")
    out = []
    for at, raw, etype, plain in zip(df["received_at"], df["raw"], df["type"], df["envelope_id"].isna()):
        if not isinstance(raw, str):
            continue
        if plain and etype is not pd.NA and etype == "error":
            event = orjson.loads(raw)
            if "handler" in event or (event.get("error") or {}).get("code") in _CLIENT_ERRORS:
                continue
        out.append((at.timestamp(), raw.encode()))
    return out, frame


def _is_export(path: str) -> bool:
    """A zip, or a folder that is no Parquet dataset (the export reader says what a folder lacks)."""
    if path.endswith(".zip"):
        return True
    if not os.path.isdir(path):
        return False
    dataset = os.path.isdir(os.path.join(path, "_journal")) or any(n.startswith("date=") for n in os.listdir(path))
    return not dataset


class _Answers:
    """A Web API client that sends nothing: each call is recorded and answered ``ok``."""

    def __init__(self, session: ReplaySession, is_async: bool) -> None:
        self._session, self._async = session, is_async

    def _call(self, method: str, kwargs: dict) -> SlackResponse:
        args = {**(kwargs.pop("params", None) or {}), **(kwargs.pop("json", None) or {}),
                **(kwargs.pop("data", None) or {}), **kwargs}
        args.pop("token", None)
        args.pop("http_verb", None)
        self._session._would_call(method, args)
        answer: dict[str, Any] = {"ok": True, "replayed": True}
        if method == "chat.postMessage":
            answer.update(channel=args.get("channel"), ts=f"{time.time():.6f}",
                          message={"type": "message", "text": args.get("text"), "user": None})
        return SlackResponse(method, answer)

    def api_call(self, method: str, **kwargs: Any) -> Any:
        answer = self._call(method, dict(kwargs))
        if not self._async:
            return answer
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(answer)
        return fut

    def paginate(self, method: str, **kwargs: Any) -> Any:
        answer = self._call(method, dict(kwargs))
        if not self._async:
            return iter([answer])

        async def pages():
            yield answer
        return pages()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or "_" not in name:
            raise AttributeError(name)
        return lambda **kwargs: self.api_call(name.replace("_", "."), **kwargs)

    async def aclose(self) -> None:
        pass

    def close(self) -> None:
        pass


class _ReplayLink:
    """The recording as a socket (a transport Link)."""

    def __init__(self, events: list[tuple[float, bytes]], speed: float | None, wiring: Wiring,
                 gate: asyncio.Event) -> None:
        self.number = wiring.number
        self._gate = gate
        self.waiters: dict[int, asyncio.Future] = {}
        self.end_reason: str | None = None
        self._events, self._speed, self._wiring = events, speed, wiring
        self._ids = itertools.count(1)

    async def open(self) -> None:
        pass

    async def run(self) -> str:
        self._deliver([b'{"type":"hello"}'])
        await self._gate.wait()  # paused at the start until play()
        start_at, started = (self._events[0][0] if self._events else 0.0), time.monotonic()
        batch: list[bytes] = []
        for at, raw in self._events:
            if self._speed is not None:
                due = started + (at - start_at) / self._speed - time.monotonic()
                if due > 0:
                    self._deliver(batch)
                    batch = []
                    await asyncio.sleep(due)
            batch.append(raw)
            if len(batch) >= _YIELD_EVERY:
                self._deliver(batch)
                batch = []
                await asyncio.sleep(0)
        self._deliver(batch)
        # The end of the recording is not the end of the socket: handlers still
        # answering what came last get their replies, as on a live one.
        self._deliver([orjson.dumps({"type": "replay_end", "events": len(self._events)})])
        self._closed = asyncio.get_running_loop().create_future()
        await self._closed
        return self.end_reason or "closed by client"

    def _deliver(self, frames: list[bytes]) -> None:
        if not frames:
            return
        events = [orjson.loads(f) for f in frames]
        if self._wiring.record is not None:
            self._wiring.record(frames, events, time.time())
        for event in events:
            # An envelope is recorded as it came; handlers get what it carries.
            self._wiring.intake(inner_event(event))

    async def send(self, message: dict) -> int:
        mid = message.get("id") or next(self._ids)
        sent = {**message, "id": mid}
        self._wiring.sent(sent, orjson.dumps(sent).decode())
        if message.get("type") == "message":
            # Answered as Slack would, once the outbox holds its future: say() gets its reply.
            reply = {"ok": True, "reply_to": mid, "ts": f"{time.time():.6f}", "text": message.get("text")}
            asyncio.get_running_loop().call_soon(self._answer, reply)
        return mid

    def _answer(self, reply: dict) -> None:
        raw = orjson.dumps(reply)
        if self._wiring.record is not None:
            self._wiring.record([raw], [reply], time.time())
        fut = self.waiters.pop(reply["reply_to"], None)
        if fut is not None and not fut.done():
            fut.set_result(reply)
        self._wiring.intake(reply)

    async def close(self) -> None:
        if self.end_reason is None:
            self.end_reason = "closed by client"
        closed = getattr(self, "_closed", None)
        if closed is not None and not closed.done():
            closed.set_result(None)

    def control(self, event: dict) -> None:
        return None

    def abandon(self) -> dict[int, asyncio.Future]:
        waiters, self.waiters = self.waiters, {}
        return waiters


class _ReplayTransport:
    name = "replay"
    control: frozenset[str] = frozenset()

    def __init__(self, events: list[tuple[float, bytes]], speed: float | None, answer: dict,
                 gate: asyncio.Event) -> None:
        self._events, self._speed, self._answer, self._gate = events, speed, answer, gate

    async def connect(self) -> dict:
        return dict(self._answer)

    def link(self, answer: dict, wiring: Wiring) -> _ReplayLink:
        return _ReplayLink(self._events, self._speed, wiring, self._gate)

    async def aclose(self) -> None:
        pass


class ReplaySession(RTMSession):
    """A client whose socket is a recording (see the module docs). Plays once; stop it when done."""

    transport_name = None  # no live session: its rows have no transport

    def __init__(self, path: str | os.PathLike, *, speed: float | None = 1.0, paused: bool = False,
                 **options: Any) -> None:
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be a positive factor (2.0: twice as fast) or None (as fast as possible), "
                             f"not {speed!r}")
        options.setdefault("auto_reconnect", False)
        super().__init__("xoxb-replay", **options)
        self.path = os.fspath(path)
        self.speed = speed
        self._events, recording = recorded_events(self.path)
        self.user_names.update(recording.user_names)
        self.channel_names.update(recording.channel_names)
        self.directory.fetched = True  # names come from the recording, not from a Web API
        self.outbox = Outbox(paced=False)  # Slack's send limit: nothing is sent to Slack
        self.played = 0  # replays finished, and started (a restart plays again)
        self._runs = 0
        self.paused = paused
        self._gate = asyncio.Event()  # made here, so play() from any thread always finds it
        self.add_tap(self._note_end)

    def _note_end(self, event: dict) -> None:
        if event.get("type") == "replay_end":
            self.played += 1

    async def finished(self) -> ReplaySession:
        """Start if needed (and play, if paused) and return once the whole recording
        has been played and every handler has run what it was given."""
        await self.connect()
        self.play()
        while self.played < self._runs or any(h.queued or h.busy_for is not None for h in self.handlers):
            await asyncio.sleep(0.01)
        return self

    def __repr__(self) -> str:
        return f"<ReplaySession {self.path!r} speed={self.speed} state={self._state} events={len(self.event_frame)}>"

    def _transport(self) -> _ReplayTransport:
        answer = {"url": f"replay:{self.path}", "team": {"id": "T-replay", "name": f"replay of {self.path}"},
                  "self": {"id": "U-replay", "name": "replay"}}
        self._runs += 1
        gate = self._gate
        if self.paused:
            gate.clear()
        else:
            gate.set()
        return _ReplayTransport(self._events, self.speed, answer, gate)

    def play(self) -> None:
        """Start a replay made with ``paused=True`` (``%rtm_connect --replay`` makes one,
        so that cell handlers can be registered first); callable from any thread."""
        self.paused = False
        call_soon(self.loop, self._gate.set)

    def _web(self, is_async: bool) -> Any:
        return _Answers(self, is_async)

    def _would_call(self, method: str, args: dict) -> None:
        if self._record is not None:
            row = {"type": "api_call", "method": method, "args": args}
            self._record(row, None, "out", self.connection_number, time.time())
        if self._taps:
            self._feed_taps({"type": "api_call", "method": method, "channel": args.get("channel"),
                             "text": args.get("text"), "direction": "out"})


def replay(path: str | os.PathLike, speed: float | None = 1.0, *, paused: bool = False, **options: Any) -> ReplaySession:
    """A client that plays the recording at ``path`` (JSON-lines, Parquet dataset or
    Slack export) at ``speed`` (None: as fast as possible); start it as any client.
    ``paused=True`` holds the events after ``hello`` until :meth:`ReplaySession.play`."""
    return ReplaySession(path, speed=speed, paused=paused, **options)
