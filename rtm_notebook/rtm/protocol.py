"""The RTM session as pure logic: no sockets, no asyncio, no clocks of its own.

:mod:`rtm_notebook.rtm.connection` feeds frames and the current time in and
writes out what this module returns, so everything here can be tested (and
fuzzed) without a network. The rules come from Slack's RTM reference
(``shared/PROTOCOL.md``):

* every frame from Slack is a JSON object with a ``type``, except replies to
  our own messages, which carry ``reply_to`` instead;
* every frame we send carries a positive integer ``id``, unique per
  connection, and Slack echoes it as ``reply_to`` (possibly out of order);
* a client frame over 16 KB gets the client disconnected, and message text
  should stay within 4,000 characters;
* a JSON ``ping`` is answered by a ``pong`` with the same ``reply_to``.

A frame that breaks these rules never raises: :func:`decode` turns it into an
``error`` event that keeps the raw text, so the session goes on and nothing
is lost.
"""

from __future__ import annotations

from typing import Any

import orjson

from rtm_notebook.errors import MessageTooLargeError, SlackClientError

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_TEXT_CHARS",
    "Protocol",
    "Keepalive",
    "decode",
    "malformed",
]

MAX_FRAME_BYTES = 16 * 1024
MAX_TEXT_CHARS = 4000

# Errors raised by orjson.loads on bad input; orjson.JSONDecodeError covers
# syntax, depth and encoding problems.
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

# Message types that Slack answers with a frame carrying ``reply_to``: only
# these are kept in the pending table, so it cannot grow without bound.
REPLIED_TYPES = frozenset({"message", "ping"})


def malformed(kind: str, msg: str, raw: str) -> dict:
    """The error event that stands in for a frame that could not be used.

    ``kind`` is a short machine-readable code (``not_json``, ``not_object``,
    ``no_type``, ``binary``, ``bad_utf8``); ``raw`` is the frame's text
    (binary or badly encoded frames are decoded with replacement characters)
    so the DataFrame shows exactly what arrived.
    """
    return {"type": "error", "error": {"code": kind, "msg": msg}, "raw": raw}


def decode(frame: str | bytes) -> dict:
    """Decode one WebSocket frame into an event dict. Never raises.

    A text frame holding a JSON object with a ``type`` (or a reply with a
    ``reply_to``) comes back as that object. Anything else becomes an
    ``error`` event (see :func:`malformed`) carrying the raw text.
    ``bytes`` are treated as a frame whose payload should be UTF-8 JSON:
    Slack sends only text frames, but a payload that is valid UTF-8 JSON is
    still the event it says it is, and anything else is reported, not lost.
    """
    if frame.__class__ is not str:
        if not isinstance(frame, (bytes, bytearray, memoryview)):
            return malformed("not_text", f"frame of type {type(frame).__name__} is not text", repr(frame))
        data = bytes(frame)
        try:
            frame = data.decode()
        except UnicodeDecodeError as exc:
            return malformed("bad_utf8", f"frame is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                             data.decode(errors="replace"))
    try:
        event = _loads(frame)
    except _JSONDecodeError as exc:
        return malformed("not_json", f"frame is not valid JSON: {exc}", frame)
    if event.__class__ is not dict:
        return malformed("not_object", f"frame is JSON {type(event).__name__}, not an object", frame)
    if "type" not in event and "reply_to" not in event:
        return malformed("no_type", "frame has neither 'type' nor 'reply_to'", frame)
    return event


def _check_text(message: dict) -> None:
    text = message.get("text")
    if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
        raise MessageTooLargeError(
            f"message text is {len(text)} characters; Slack's limit over RTM is {MAX_TEXT_CHARS}. "
            "Split it, or post it with web_client.chat_postMessage."
        )


class Protocol:
    """Numbering, reply matching and size checks for one RTM connection.

    Create one per WebSocket connection: ids restart at 1 and the pending
    table belongs to the socket that carried the messages.
    """

    def __init__(self) -> None:
        self._next_id = 1
        self._used: set[int] = set()
        #: id -> the message we sent, for messages Slack will answer.
        self.pending: dict[int, dict] = {}

    def next_id(self) -> int:
        """A fresh positive message id, unique on this connection."""
        nid = self._next_id
        while nid in self._used:
            nid += 1
        self._next_id = nid + 1
        self._used.add(nid)
        return nid

    def prepare(self, message: dict) -> tuple[int, str]:
        """Number and encode an outgoing message; return ``(id, text)``.

        An ``id`` already in ``message`` is kept if it is a positive int not
        used before on this connection. Raises :class:`MessageTooLargeError`
        (text over 4,000 characters or frame over 16 KB) or
        :class:`SlackClientError` (not a dict, no ``type``, bad ``id``, not
        JSON-serialisable) before anything is sent. ``message`` itself is
        not modified.
        """
        if not isinstance(message, dict):
            raise SlackClientError(f"an RTM message must be a dict, not {type(message).__name__}")
        mtype = message.get("type")
        if not isinstance(mtype, str) or not mtype:
            raise SlackClientError("an RTM message needs a 'type', e.g. {'type': 'message', 'channel': ..., 'text': ...}")
        _check_text(message)
        mid = message.get("id")
        if mid is None:
            mid = self.next_id()
        else:
            if mid.__class__ is not int or mid <= 0:
                raise SlackClientError(f"message id must be a positive integer, got {mid!r}")
            if mid in self._used:
                raise SlackClientError(f"message id {mid} was already used on this connection")
            self._used.add(mid)
        out = dict(message)
        out["id"] = mid
        try:
            data = orjson.dumps(out)
        except TypeError as exc:
            self._used.discard(mid)
            raise SlackClientError(f"message cannot be encoded as JSON: {exc}") from None
        if len(data) > MAX_FRAME_BYTES:
            self._used.discard(mid)
            raise MessageTooLargeError(
                f"message is {len(data)} bytes encoded; Slack disconnects clients that send frames over "
                f"{MAX_FRAME_BYTES} bytes, so it was not sent."
            )
        if mtype in REPLIED_TYPES:
            self.pending[mid] = out
        return mid, data.decode()

    def reply(self, event: dict) -> dict | None:
        """Match a frame carrying ``reply_to``; return the message it answers.

        Returns ``None`` (and changes nothing) for a ``reply_to`` that is not
        pending: a duplicate, a reply for an earlier connection, or garbage.
        """
        rid = event.get("reply_to")
        if rid.__class__ is not int:
            return None
        return self.pending.pop(rid, None)

    def abandon(self) -> dict[int, dict]:
        """The connection ended: hand back every message still unanswered."""
        pending, self.pending = self.pending, {}
        return pending


class Keepalive:
    """When to send an RTM ping and when to give up on a silent socket.

    Time is passed in (``time.monotonic()`` seconds) so the rule can be
    tested without waiting. ``frames`` is a count of frames received that
    the caller keeps; any change means the socket is alive. After
    ``interval`` seconds without a frame, :meth:`tick` asks for a ping; if
    that ping has no pong within ``timeout`` seconds, :meth:`tick` declares
    the socket dead.
    """

    def __init__(self, interval: float, timeout: float, now: float) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("ping interval and pong timeout must be positive")
        self.interval = interval
        self.timeout = timeout
        self._frames = 0
        self._quiet_since = now
        #: id and send time of the ping awaiting its pong
        self.ping_id: int | None = None
        self.ping_sent_at = 0.0

    def tick(self, now: float, frames: int) -> str | None:
        """``"ping"``, ``"dead"`` or ``None``: what the connection should do now."""
        if self.ping_id is not None:
            if now - self.ping_sent_at >= self.timeout:
                return "dead"
            return None
        if frames != self._frames:
            self._frames = frames
            self._quiet_since = now
            return None
        if now - self._quiet_since >= self.interval:
            return "ping"
        return None

    def sent_ping(self, ping_id: int, now: float) -> None:
        self.ping_id = ping_id
        self.ping_sent_at = now

    def pong(self, reply_to: Any, now: float, frames: int) -> bool:
        """A pong arrived; return whether it answers the outstanding ping."""
        if self.ping_id is None or reply_to != self.ping_id:
            return False
        self.ping_id = None
        self._frames = frames
        self._quiet_since = now
        return True

    def next_check(self, now: float) -> float:
        """Seconds until :meth:`tick` can next return something new."""
        if self.ping_id is not None:
            return max(0.0, self.ping_sent_at + self.timeout - now)
        return max(0.0, min(self.interval, self._quiet_since + self.interval - now))
