"""What a row says about an event: the field-derivation rules, in one place.

Slack's events put the same facts in different places (a reaction's channel
is in ``item``, an edit's text in ``message``, a channel event's channel is
an object). These rules pick one value per fact, so the rows of one
conversation share ``channel`` and ``user`` whatever the event's shape:

* ``channel``: ``event["channel"]`` when it is a string; when it is an object
  (``channel_created``, ``im_created``, ...) its ``"id"``; when absent,
  ``event["item"]["channel"]`` (reactions, pins, stars).
* ``user``: ``event["user"]`` when a string; when an object (``team_join``,
  ``user_change``) its ``"id"``; when absent, the wrapped message's user
  (``event["message"]["user"]``: ``message_changed``, ``message_replied``).
* ``text`` and ``thread_ts``: the top-level field, else the wrapped
  ``event["message"]``'s (so an edit shows the new text).
* ``text`` of an ``error`` event without one, whose ``error`` is an object
  with a ``msg``: ``"<code>: <msg>"`` (just ``<msg>`` without a ``code``).

Socket Mode frames are envelopes: a dict with a str ``envelope_id`` and a
``payload`` key. :func:`inner_event` says which event an envelope carries
(what handlers get). An envelope's row takes ``type``, ``subtype``,
``channel``, ``user``, ``text``, ``ts``, ``thread_ts`` and ``event_ts``
from that inner event by the rules above, with three more for what slash
commands and interactive payloads hold instead:

* ``channel``, when there is still none: ``event["channel_id"]`` (slash
  commands), then ``event["container"]["channel_id"]`` (interactive).
* ``user``, when there is still none: ``event["user_id"]`` (slash commands).
* ``ts`` when absent: ``event["container"]["message_ts"]`` (an interactive
  payload from a message; its ``channel`` and ``user`` are objects).

The ``reply`` type and the ``error`` text are rules of a frame's own, so not
of an inner event; ``reply_to`` is always the frame's. ``envelope_type``
(the envelope's ``type``), ``envelope_id``, ``event_id``
(``payload["event_id"]``, ``events_api`` envelopes only) and
``retry_attempt`` (the envelope's) come from the envelope, and are null on
every other row.

The EventFrame applies them twice over (in Python per event, and with
pyarrow's JSON reader per chunk: :data:`ARROW_PARSE_OPTIONS`, or
:data:`ARROW_PLAIN_OPTIONS` for chunks without envelopes, and
:func:`derive_arrow`; tests compare the two). The live log, handler filters
and the CLI use :func:`channel_of`, :func:`user_of`, :func:`type_label` and
:func:`summary` on the events handlers get (RTM events, inner events), so
:func:`channel_of` and :func:`user_of` always take the fallbacks above. A
Socket Mode client uses :func:`inner_event`. Nothing here imports the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

__all__ = ["FIELDS", "EVENT_FIELDS", "ARROW_PARSE_OPTIONS", "ARROW_PLAIN_OPTIONS", "NeedsEnvelopes", "extract",
           "derive_arrow", "nulls", "inner_event", "is_envelope", "ts_seconds", "channel_of", "user_of", "type_label",
           "summary"]

#: The derived columns, in the order :func:`extract` returns them.
FIELDS = ("type", "subtype", "channel", "user", "text", "ts", "thread_ts", "event_ts", "reply_to",
          "envelope_type", "envelope_id", "event_id", "retry_attempt")
#: The fields taken from an envelope's inner event (the first eight of FIELDS).
EVENT_FIELDS = FIELDS[:8]

_LS = pa.large_string()


def _strings(*names: str) -> list[tuple[str, pa.DataType]]:
    return [(name, _LS) for name in names]


# What one event level holds that a rule reads: a frame itself, and (with
# the inner events' fallbacks) an envelope's payload, an events_api payload's event.
_EVENT = [
    *_strings(*EVENT_FIELDS),
    ("item", pa.struct(_strings("channel"))),
    ("message", pa.struct(_strings("user", "text", "thread_ts"))),
]
_INNER = [*_EVENT, *_strings("channel_id", "user_id"), ("container", pa.struct(_strings("channel_id", "message_ts")))]
_FRAME = [*_EVENT, ("reply_to", pa.int64()), ("error", pa.struct(_strings("code", "msg"))), ("envelope_id", _LS)]

# What pyarrow's JSON reader extracts: every field a rule reads, in the shape
# the common events have. Any other shape (a channel object, a number where a
# string belongs) makes the reader fail for that block, and those rows take
# the Python rules.
ARROW_PARSE_OPTIONS = pa_json.ParseOptions(
    explicit_schema=pa.schema([
        *_FRAME, ("retry_attempt", pa.int64()),
        ("payload", pa.struct([*_INNER, ("event_id", _LS), ("event", pa.struct(_INNER))])),
    ]),
    unexpected_field_behavior="ignore")
# The same without what only envelopes hold, for chunks without any (RTM):
# the reader builds every field's column for every row, present or not, and
# the envelopes' fields more than double its time. A row it shows to have an
# ``envelope_id`` means the block needs ARROW_PARSE_OPTIONS (derive_arrow
# says so).
ARROW_PLAIN_OPTIONS = pa_json.ParseOptions(explicit_schema=pa.schema(_FRAME), unexpected_field_behavior="ignore")


def is_envelope(frame: Mapping[str, Any]) -> bool:
    """Whether a decoded frame is a Socket Mode envelope: a str ``envelope_id`` and a ``payload``."""
    return frame.get("envelope_id").__class__ is str and "payload" in frame


def inner_event(envelope: Mapping[str, Any]) -> dict:
    """The event a Socket Mode envelope carries (what handlers get):

    * ``events_api``: ``payload["event"]`` (the same object; a payload
      without an event object is its own event, as an interactive one is);
    * ``slash_commands``: a copy of the payload with ``"type": "slash_command"``;
    * ``interactive``: the payload (it has its own ``type``: ``block_actions``,
      ``view_submission``, ...);
    * any other envelope type: a copy of the payload with ``"type"`` the
      envelope's type.

    A payload that is not an object gives ``{"type": <envelope type>}``. A
    frame that is no envelope (``hello``, ``disconnect``) is its own event
    and is returned as it is.
    """
    if envelope.get("envelope_id").__class__ is not str or "payload" not in envelope:
        return envelope  # type: ignore[return-value]
    payload = envelope["payload"]
    etype = envelope.get("type")
    if isinstance(payload, dict):
        if etype == "events_api":
            event = payload.get("event")
            return event if isinstance(event, dict) else payload
        if etype == "interactive":
            return payload
        return {**payload, "type": "slash_command" if etype == "slash_commands" else etype}
    return {"type": etype}


def extract(event: dict) -> tuple:
    """``(type, subtype, channel, user, text, ts, thread_ts, event_ts, reply_to,
    envelope_type, envelope_id, event_id, retry_attempt)`` by the rules above,
    values as found (the EventFrame normalises them).

    A frame with ``reply_to`` and no ``type`` is Slack's reply to a message
    the client sent: its type is ``"reply"``, as the client counts and
    dispatches it.
    """
    get = event.get
    envelope_id = get("envelope_id")
    if envelope_id is not None and envelope_id.__class__ is str and "payload" in event:
        return _envelope_fields(event, envelope_id)
    channel = get("channel")
    user = get("user")
    text = get("text")
    ts = get("ts")
    thread_ts = get("thread_ts")
    if channel.__class__ is not str or user.__class__ is not str or "message" in event:
        channel, user, text, ts, thread_ts = _resolve(event, channel, user, text, ts, thread_ts, False)
    type_ = get("type")
    reply_to = get("reply_to")
    if type_ is None and reply_to is not None:
        type_ = "reply"
    if text is None and type_ == "error":
        error = get("error")
        if isinstance(error, dict) and error.get("msg") is not None:
            code = error.get("code")
            text = f"{_text(code)}: {_text(error['msg'])}" if code is not None else error["msg"]
    return (type_, get("subtype"), channel, user, text, ts, thread_ts, get("event_ts"), reply_to,
            None, None, None, None)


def _envelope_fields(envelope: dict, envelope_id: str) -> tuple:
    inner = inner_event(envelope)
    get = inner.get
    channel = get("channel")
    user = get("user")
    text = get("text")
    ts = get("ts")
    thread_ts = get("thread_ts")
    if channel.__class__ is not str or user.__class__ is not str or "message" in inner or "container" in inner:
        channel, user, text, ts, thread_ts = _resolve(inner, channel, user, text, ts, thread_ts, True)
    etype = envelope.get("type")
    payload = envelope["payload"]
    event_id = payload.get("event_id") if etype == "events_api" and isinstance(payload, dict) else None
    return (get("type"), get("subtype"), channel, user, text, ts, thread_ts, get("event_ts"), envelope.get("reply_to"),
            etype, envelope_id, event_id, envelope.get("retry_attempt"))


def _resolve(event: Mapping, channel: Any, user: Any, text: Any, ts: Any, thread_ts: Any, inner: bool) -> tuple:
    """The nested-object rules, for the events where a plain field is missing
    (with the fallbacks of inner events when ``inner``)."""
    get = event.get
    if channel is None:
        item = get("item")
        if isinstance(item, dict):
            channel = item.get("channel")
    elif isinstance(channel, dict):
        channel = channel.get("id")
    if inner:
        container = get("container")
        if not isinstance(container, dict):
            container = None
        if channel is None:
            channel = get("channel_id")
            if channel is None and container is not None:
                channel = container.get("channel_id")
        if ts is None and container is not None:
            ts = container.get("message_ts")
    if isinstance(user, dict):
        user = user.get("id")
    if user is None or text is None or thread_ts is None:
        message = get("message")
        if isinstance(message, dict):
            if user is None:
                user = message.get("user")
                if isinstance(user, dict):
                    user = user.get("id")
            if text is None:
                text = message.get("text")
            if thread_ts is None:
                thread_ts = message.get("thread_ts")
    if user is None and inner:
        user = get("user_id")
    return channel, user, text, ts, thread_ts


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


_null_blocks: dict[pa.DataType, pa.Array] = {}


def nulls(n: int, type_: pa.DataType = _LS) -> pa.Array:
    """``n`` nulls of ``type_``: a slice of one array shared by every caller,
    so a column that is all null (the envelope columns of an RTM chunk)
    costs no memory of its own."""
    block = _null_blocks.get(type_)
    if block is None or len(block) < n:
        block = _null_blocks[type_] = pa.nulls(max(n, 1 << 16), type_)
    return block.slice(0, n)


def _first(pool: pa.MemoryPool, *arrays: pa.Array | None) -> pa.Array:
    """``coalesce`` of the arrays, skipping those that are all null (most
    fallbacks, in most chunks): with one left, that one, not a copy."""
    held = [a for a in arrays if a is not None and a.null_count < len(a)]
    if not held:
        return arrays[0]
    return held[0] if len(held) == 1 else pc.coalesce(*held, memory_pool=pool)


def _level(get, n: int, pool: pa.MemoryPool, inner: bool) -> dict[str, pa.Array]:
    """The rules over one event level's columns (``get(name)``: a frame's,
    or with the fallbacks of inner events when ``inner``)."""
    def sub(struct: pa.Array | None, name: str) -> pa.Array | None:
        return pc.struct_field(struct, name) if struct is not None and struct.null_count < n else None

    item, message = get("item"), get("message")
    container = get("container") if inner else None
    return {
        "type": get("type"), "subtype": get("subtype"), "event_ts": get("event_ts"),
        "channel": _first(pool, get("channel"), sub(item, "channel"), get("channel_id") if inner else None,
                          sub(container, "channel_id")),
        "user": _first(pool, get("user"), sub(message, "user"), get("user_id") if inner else None),
        "text": _first(pool, get("text"), sub(message, "text")),
        "ts": _first(pool, get("ts"), sub(container, "message_ts")),
        "thread_ts": _first(pool, get("thread_ts"), sub(message, "thread_ts")),
    }


class NeedsEnvelopes(Exception):
    """derive_arrow() was given a block with envelopes read without their fields: read it with ARROW_PARSE_OPTIONS."""


def _where(mask: pa.Array, yes: pa.Array, no: pa.Array, pool: pa.MemoryPool) -> pa.Array:
    """``if_else`` for a mask without nulls, with no copy when it is all one value."""
    count = pc.sum(mask).as_py() or 0
    if count == len(mask):
        return yes
    if count == 0:
        return no
    return pc.if_else(mask, yes, no, memory_pool=pool)


def _is(values: pa.Array, value: str) -> pa.Array:
    return pc.fill_null(pc.equal(values, pa.scalar(value, _LS)), False)


def derive_arrow(col: dict[str, pa.Array], n: int, pool: pa.MemoryPool, raw: pa.Array | None = None) -> list[pa.Array]:
    """The rules over the columns pyarrow's JSON reader made with
    :data:`ARROW_PARSE_OPTIONS` or :data:`ARROW_PLAIN_OPTIONS` (``n`` rows):
    the arrays of :data:`FIELDS`.

    Raises :class:`NeedsEnvelopes` for ARROW_PLAIN_OPTIONS' columns of a
    block with an ``envelope_id``. ``raw`` (the rows' JSON texts) tells
    ``"payload": null`` from no payload, which the reader cannot: a row with
    an ``envelope_id`` and such a payload raises ValueError, for the Python
    rules to take it.
    """
    top = _level(col.__getitem__, n, pool, False)
    type_, reply_to = top["type"], col["reply_to"]
    replies = pc.and_(pc.is_null(type_), pc.is_valid(reply_to))
    if pc.any(replies).as_py():  # only then a new type column: most chunks hold no reply
        top["type"] = pc.if_else(replies, pa.scalar("reply", _LS), type_, memory_pool=pool)
    error = col["error"]
    if error.null_count < n:
        code, msg = pc.struct_field(error, [0]), pc.struct_field(error, [1])
        said = pc.coalesce(pc.binary_join_element_wise(code, msg, pa.scalar(": ", _LS)), msg)
        is_error = _is(top["type"], "error")
        top["text"] = pc.coalesce(top["text"], pc.if_else(is_error, said, nulls(n)), memory_pool=pool)
    envelope_id = col["envelope_id"]
    if envelope_id.null_count == n:  # no envelope: an RTM chunk
        return [*(top[name] for name in EVENT_FIELDS), reply_to, nulls(n), nulls(n), nulls(n), nulls(n, pa.int64())]
    payload = col.get("payload")
    if payload is None:
        raise NeedsEnvelopes
    if raw is not None:
        unsure = pc.and_(pc.is_valid(envelope_id), pc.is_null(payload))
        if pc.any(unsure).as_py():
            texts = pc.filter(raw, unsure)
            if pc.any(pc.match_substring(texts, '"payload"')).as_py() or pc.any(
                    pc.match_substring(texts, "\\u")).as_py():
                raise ValueError("an envelope_id with a null payload: the Python rules tell it from no payload")
    is_env = pc.and_(pc.is_valid(envelope_id), pc.is_valid(payload))
    etype = col["type"]
    event = pc.struct_field(payload, "event")
    events_api = pc.and_(is_env, _is(etype, "events_api"))
    use_event = pc.and_(events_api, pc.is_valid(event))
    inner = _level(lambda name: pc.struct_field(payload, name), n, pool, True)
    # The payload is its own event: interactive ones, and events_api ones without an event.
    own = pc.and_(is_env, pc.or_(_is(etype, "interactive"), pc.and_(events_api, pc.is_null(event))))
    inner["type"] = _where(own, inner["type"], etype, pool)
    slash = _is(etype, "slash_commands")
    if pc.any(slash).as_py():
        inner["type"] = pc.if_else(slash, pa.scalar("slash_command", _LS), inner["type"], memory_pool=pool)
    if pc.any(use_event).as_py():
        nested = _level(lambda name: pc.struct_field(event, name), n, pool, True)
        inner = {name: _where(use_event, nested[name], inner[name], pool) for name in EVENT_FIELDS}
    out = [_where(is_env, inner[name], top[name], pool) for name in EVENT_FIELDS]
    return [*out, reply_to, _where(is_env, etype, nulls(n), pool), _where(is_env, envelope_id, nulls(n), pool),
            _where(events_api, pc.struct_field(payload, "event_id"), nulls(n), pool),
            _where(is_env, col["retry_attempt"], nulls(n, pa.int64()), pool)]


def ts_seconds(ts: Any) -> float:
    """A Slack ``ts`` as epoch seconds, for a row's ``received_at`` when the time it
    was posted is all there is (history, exports); 0.0 for what is no time."""
    try:
        seconds = float(ts)
    except (TypeError, ValueError):
        return 0.0
    return seconds if -1e11 < seconds < 1e11 else 0.0  # also rejects nan and inf


def channel_of(event: Mapping[str, Any]) -> str | None:
    """The event's channel id by the rule above (None when it has none)."""
    channel = event.get("channel")
    if channel is None:
        item = event.get("item")
        channel = item.get("channel") if isinstance(item, Mapping) else None
    elif isinstance(channel, Mapping):
        channel = channel.get("id")
    if channel is None:
        channel = event.get("channel_id")
        if channel is None:
            container = event.get("container")
            channel = container.get("channel_id") if isinstance(container, Mapping) else None
    return channel if isinstance(channel, str) else None


def user_of(event: Mapping[str, Any]) -> str | None:
    """The event's user id by the rule above (None when it has none)."""
    user = event.get("user")
    if isinstance(user, Mapping):
        user = user.get("id")
    if user is None:
        message = event.get("message")
        user = message.get("user") if isinstance(message, Mapping) else None
        if isinstance(user, Mapping):
            user = user.get("id")
    if user is None:
        user = event.get("user_id")
    return user if isinstance(user, str) else None


def type_label(event: Mapping[str, Any]) -> str:
    """``type`` or ``type/subtype``."""
    label = str(event.get("type", "reply" if "reply_to" in event else ""))
    subtype = event.get("subtype")
    return f"{label}/{subtype}" if isinstance(subtype, str) and subtype else label


def summary(event: Mapping[str, Any]) -> str:
    """What a one-line view shows of an event: its text by the rule above,
    else what the event is about (a reaction, a presence, a state change,
    an error's message without its code, which the view shows apart)."""
    text = event.get("text")
    if isinstance(text, str):
        return text
    inner = event.get("message")
    if isinstance(inner, Mapping) and isinstance(inner.get("text"), str):
        return inner["text"]
    etype = event.get("type")
    if etype in ("reaction_added", "reaction_removed"):
        return f":{event.get('reaction', '')}:"
    if etype == "presence_change":
        return str(event.get("presence", ""))
    if etype == "state_change":
        return f"{event.get('previous', '')} → {event.get('state', '')}"
    error = event.get("error")
    if error is not None:
        if isinstance(error, Mapping):
            return str(error.get("msg") or error)
        return str(error)
    return ""
