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

The EventFrame applies them twice over (in Python per event, and with
pyarrow's JSON reader per chunk: :data:`ARROW_PARSE_OPTIONS` and
:func:`derive_arrow`; tests compare the two); the live log and the CLI use
:func:`channel_of`, :func:`user_of`, :func:`type_label` and :func:`summary`. Nothing here imports the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

__all__ = ["FIELDS", "ARROW_PARSE_OPTIONS", "extract", "derive_arrow", "ts_seconds", "channel_of", "user_of",
           "type_label", "summary"]

#: The derived columns, in the order :func:`extract` returns them.
FIELDS = ("type", "subtype", "channel", "user", "text", "ts", "thread_ts", "event_ts", "reply_to")

_LS = pa.large_string()

# What pyarrow's JSON reader extracts: every field a rule reads, in the shape
# the common events have. Any other shape (a channel object, a number where a
# string belongs) makes the reader fail for that block, and those rows take
# the Python rules.
ARROW_PARSE_OPTIONS = pa_json.ParseOptions(
    explicit_schema=pa.schema([
        *[(name, _LS) for name in FIELDS[:-1]], ("reply_to", pa.int64()),
        ("item", pa.struct([("channel", _LS)])),
        ("message", pa.struct([("user", _LS), ("text", _LS), ("thread_ts", _LS)])),
        ("error", pa.struct([("code", _LS), ("msg", _LS)])),
    ]),
    unexpected_field_behavior="ignore")


def extract(event: dict) -> tuple:
    """``(type, subtype, channel, user, text, ts, thread_ts, event_ts, reply_to)``
    by the rules above, values as found (the EventFrame normalises them).

    A frame with ``reply_to`` and no ``type`` is Slack's reply to a message
    the client sent: its type is ``"reply"``, as the client counts and
    dispatches it.
    """
    get = event.get
    channel = get("channel")
    user = get("user")
    text = get("text")
    thread_ts = get("thread_ts")
    if channel.__class__ is not str or user.__class__ is not str or "message" in event:
        channel, user, text, thread_ts = _resolve(event, channel, user, text, thread_ts)
    type_ = get("type")
    if type_ is None and get("reply_to") is not None:
        type_ = "reply"
    if text is None and type_ == "error":
        error = get("error")
        if isinstance(error, dict) and error.get("msg") is not None:
            code = error.get("code")
            text = f"{_text(code)}: {_text(error['msg'])}" if code is not None else error["msg"]
    return (type_, get("subtype"), channel, user, text, get("ts"), thread_ts, get("event_ts"), get("reply_to"))


def _resolve(event: dict, channel: Any, user: Any, text: Any, thread_ts: Any) -> tuple:
    """The nested-object rules, for the events where a plain field is missing."""
    get = event.get
    if channel is None:
        item = get("item")
        if isinstance(item, dict):
            channel = item.get("channel")
    elif isinstance(channel, dict):
        channel = channel.get("id")
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
    return channel, user, text, thread_ts


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


def derive_arrow(col: dict[str, pa.Array], n: int, pool: pa.MemoryPool) -> list[pa.Array]:
    """The rules over the columns pyarrow's JSON reader made with
    :data:`ARROW_PARSE_OPTIONS` (``n`` rows): the arrays of :data:`FIELDS`."""
    item, message, error = col["item"], col["message"], col["error"]
    col["channel"] = pc.coalesce(col["channel"], pc.struct_field(item, [0]), memory_pool=pool)
    for i, name in enumerate(("user", "text", "thread_ts")):
        col[name] = pc.coalesce(col[name], pc.struct_field(message, [i]), memory_pool=pool)
    replies = pc.and_(pc.is_null(col["type"]), pc.is_valid(col["reply_to"]))
    if pc.any(replies).as_py():  # only then a new type column: most chunks hold no reply
        col["type"] = pc.if_else(replies, pa.scalar("reply", _LS), col["type"], memory_pool=pool)
    code, msg = pc.struct_field(error, [0]), pc.struct_field(error, [1])
    said = pc.coalesce(pc.binary_join_element_wise(code, msg, pa.scalar(": ", _LS)), msg)
    is_error = pc.fill_null(pc.equal(col["type"], pa.scalar("error", _LS)), False)
    col["text"] = pc.coalesce(col["text"], pc.if_else(is_error, said, pa.nulls(n, _LS)), memory_pool=pool)
    return [col[name] for name in FIELDS]


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
    return channel if isinstance(channel, str) else None


def user_of(event: Mapping[str, Any]) -> str | None:
    """The event's user id by the rule above (None when it has none)."""
    user = event.get("user")
    if user is None:
        message = event.get("message")
        user = message.get("user") if isinstance(message, Mapping) else None
    if isinstance(user, Mapping):
        user = user.get("id")
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
