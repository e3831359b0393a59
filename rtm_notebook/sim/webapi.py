"""Web API methods of the simulated workspace, without any HTTP.

``WebApi.call(method, caller, args)`` returns the Slack response body (with
``ok``) and the RTM events the call caused; the server turns the first into
JSON and broadcasts the second. Argument checking and error codes follow
Slack's reference; where the reference is silent the choice is marked.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable
from typing import Any

from rtm_notebook.sim.model import Conversation, Workspace, parse_ts
from rtm_notebook.sim.traffic import add_reaction

# Slack's Web API cuts messages at 40,000 characters (RTM at 4,000).
MAX_TEXT = 40_000
CONVERSATION_TYPES = {"public_channel", "private_channel", "mpim", "im"}
REACTION_NAME = re.compile(r"^[a-z0-9_+'\-]{1,100}$")


class ApiError(Exception):
    """An ``ok: false`` answer; ``messages`` go to ``response_metadata.messages`` like Slack's."""

    def __init__(self, error: str, *messages: str) -> None:
        super().__init__(error)
        self.error = error
        self.messages = list(messages)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error": self.error}
        if self.messages:
            body["response_metadata"] = {"messages": self.messages}
        return body


class Args:
    """Typed access to request arguments (form fields are strings, JSON values are not)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def str(self, name: str, *, missing: str | None = None) -> str | None:
        """A string argument; numbers are accepted as their text. ``missing`` is the error when absent."""
        value = self.data.get(name)
        if value is None or value == "":
            if missing == "invalid_arguments":
                raise ApiError(missing, f"[ERROR] missing required field: {name}")
            if missing is not None:
                raise ApiError(missing)
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ApiError("invalid_arguments", f"[ERROR] must provide a string [json-pointer:/{name}]")
        return str(value)

    def int(self, name: str, default: int, *, lo: int, hi: int, error: str = "invalid_limit") -> int:
        value = self.data.get(name)
        if value is None or value == "":
            return default
        try:
            if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
                raise ValueError
            number = int(value)
        except (TypeError, ValueError):
            raise ApiError(error, f"[ERROR] must provide an integer [json-pointer:/{name}]") from None
        if number == 0:
            return default
        if not lo <= number <= hi:
            raise ApiError(error, f"[ERROR] {name} must be between {lo} and {hi}")
        return number

    def bool(self, name: str) -> bool:
        value = self.data.get(name)
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("1", "true") if value is not None else False

    def present(self, name: str) -> bool:
        return self.data.get(name) not in (None, "", [])


def encode_cursor(kind: str, value: str) -> str:
    """Slack's cursors are base64 of ``kind:value`` (``user:U…``, ``next_ts:…``)."""
    return base64.b64encode(f"{kind}:{value}".encode()).decode()


def decode_cursor(cursor: str, kind: str) -> str:
    try:
        decoded = base64.b64decode(cursor.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError("invalid_cursor") from None
    prefix, sep, value = decoded.partition(":")
    if prefix != kind or not sep or not value:
        raise ApiError("invalid_cursor")
    return value


def ts_bound(value: str | None, error: str) -> int | None:
    """``oldest`` / ``latest``: a ts, or a plain number of seconds."""
    if value is None:
        return None
    sec, _, frac = value.partition(".")
    if not sec.isdigit() or (frac and not frac.isdigit()) or len(frac) > 6:
        raise ApiError(error)
    return int(sec) * 1_000_000 + int(frac.ljust(6, "0") or 0)


class WebApi:
    """The methods, bound to one workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.ws = workspace
        # Every message created through chat.postMessage or a socket, for tests.
        self.posted: list[dict[str, Any]] = []
        self.methods: dict[str, Callable[[str, Args], tuple[dict[str, Any], list[dict[str, Any]]]]] = {
            "auth.test": self.auth_test,
            "chat.postMessage": self.chat_post_message,
            "chat.update": self.chat_update,
            "chat.delete": self.chat_delete,
            "reactions.add": self.reactions_add,
            "conversations.list": self.conversations_list,
            "conversations.info": self.conversations_info,
            "conversations.history": self.conversations_history,
            "conversations.replies": self.conversations_replies,
            "users.list": self.users_list,
            "users.info": self.users_info,
        }

    def call(self, method: str, caller: str, data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run ``method`` for user ``caller``: (response body, events to broadcast)."""
        try:
            body, events = self.methods[method](caller, Args(data))
        except ApiError as exc:
            return exc.body(), []
        return {"ok": True, **body}, events

    # -- helpers -------------------------------------------------------

    def _conv(self, caller: str, args: Args, name: str = "channel", missing: str = "invalid_arguments") -> Conversation:
        key = args.str(name, missing=missing)
        conv = self.ws.conversation(key)
        if conv is None or not self.ws.visible(conv, caller):
            raise ApiError("channel_not_found")
        return conv

    def _text(self, args: Args) -> str:
        text = args.str("text")
        if text is None:
            if args.present("blocks") or args.present("attachments"):
                return ""
            raise ApiError("no_text")
        if len(text) > MAX_TEXT:
            raise ApiError("msg_too_long")
        return text

    def new_message(self, conv: Conversation, user: str, text: str, thread_ts: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Store a message by ``user`` and return it with its ``message`` event."""
        ws = self.ws
        extra: dict[str, Any] = {}
        if thread_ts is not None:
            parent = conv.messages.get(thread_ts)
            if parent is None:
                raise ApiError("thread_not_found")
            # A reply to a reply joins the parent's thread, as in Slack.
            thread_ts = parent.get("thread_ts", thread_ts)
            root = conv.messages.get(thread_ts)
            extra["parent_user_id"] = (root or parent).get("user", "")
        ts = ws.clock.next()
        msg = ws.add_message(conv, user, text, ts, thread_ts=thread_ts, **extra)
        self.posted.append({"channel": conv.id, **msg})
        event = dict(msg)
        event["channel"] = conv.id
        event["event_ts"] = ts
        return msg, event

    def _own_message(self, caller: str, args: Args, ts_field: str, not_yours: str) -> tuple[Conversation, dict[str, Any]]:
        conv = self._conv(caller, args)
        ts = args.str(ts_field, missing="invalid_arguments")
        msg = conv.messages.get(ts)
        if msg is None:
            raise ApiError("message_not_found")
        if not_yours and msg.get("user") != caller:
            raise ApiError(not_yours)
        return conv, msg

    # -- methods -------------------------------------------------------

    def auth_test(self, caller: str, args: Args):
        ws = self.ws
        body = {"url": ws.team["url"], "team": ws.team["name"], "user": ws.users[caller]["name"],
                "team_id": ws.team_id, "user_id": caller, "is_enterprise_install": False}
        if caller == ws.bot_user_id:
            body["bot_id"] = ws.bot_id
        return body, []

    def chat_post_message(self, caller: str, args: Args):
        conv = self._conv(caller, args, missing="channel_not_found")
        if caller not in conv.members:
            raise ApiError("not_in_channel")
        text = self._text(args)
        thread_ts = args.str("thread_ts")
        if thread_ts is not None and parse_ts(thread_ts) is None:
            raise ApiError("invalid_thread_ts")
        msg, event = self.new_message(conv, caller, text, thread_ts)
        return {"channel": conv.id, "ts": msg["ts"], "message": dict(msg)}, [event]

    def chat_update(self, caller: str, args: Args):
        conv, msg = self._own_message(caller, args, "ts", "cant_update_message")
        text = self._text(args)
        ts = self.ws.clock.next()
        previous = {k: msg[k] for k in ("type", "user", "text", "ts") if k in msg}
        msg["text"] = text
        msg["edited"] = {"user": caller, "ts": ts}
        changed = {k: msg[k] for k in ("type", "user", "text", "ts", "edited", "thread_ts", "bot_id") if k in msg}
        event = {"type": "message", "subtype": "message_changed", "hidden": True, "channel": conv.id,
                 "ts": ts, "event_ts": ts, "message": changed, "previous_message": previous}
        return {"channel": conv.id, "ts": msg["ts"], "text": text, "message": dict(changed)}, [event]

    def chat_delete(self, caller: str, args: Args):
        conv, msg = self._own_message(caller, args, "ts", "cant_delete_message")
        ts = msg["ts"]
        event = self.ws.delete_message(conv, msg)
        return {"channel": conv.id, "ts": ts}, [event]

    def reactions_add(self, caller: str, args: Args):
        conv, msg = self._own_message(caller, args, "timestamp", "")
        name = args.str("name", missing="invalid_arguments").strip(":")
        if not REACTION_NAME.match(name):
            raise ApiError("invalid_name")
        if not add_reaction(msg, name, caller):
            raise ApiError("already_reacted")
        event = {"type": "reaction_added", "user": caller, "reaction": name, "item_user": msg.get("user", ""),
                 "item": {"type": "message", "channel": conv.id, "ts": msg["ts"]}, "event_ts": self.ws.clock.next()}
        return {}, [event]

    def conversations_list(self, caller: str, args: Args):
        types = set(t.strip() for t in (args.str("types") or "public_channel").split(",") if t.strip())
        if not types or not types <= CONVERSATION_TYPES:
            raise ApiError("invalid_types")
        wanted = {"public" for t in types if t == "public_channel"} | {"private" for t in types if t == "private_channel"} \
            | {"im" for t in types if t == "im"}
        limit = args.int("limit", 100, lo=1, hi=1000)
        convs = [c for c in self.ws.conversations.values() if c.kind in wanted and self.ws.visible(c, caller)]
        page, next_cursor = self._page_by_id(convs, args, limit, "team", lambda c: c.id)
        return {"channels": [c.to_api(caller) for c in page], "response_metadata": {"next_cursor": next_cursor}}, []

    @staticmethod
    def _page_by_id(items: list, args: Args, limit: int, kind: str, key: Callable[[Any], str]):
        start = 0
        cursor = args.str("cursor")
        if cursor is not None:
            wanted = decode_cursor(cursor, kind)
            for i, item in enumerate(items):
                if key(item) == wanted:
                    start = i
                    break
            else:
                raise ApiError("invalid_cursor")
        page = items[start:start + limit]
        rest = items[start + limit:start + limit + 1]
        return page, encode_cursor(kind, key(rest[0])) if rest else ""

    def conversations_info(self, caller: str, args: Args):
        conv = self._conv(caller, args)
        return {"channel": conv.to_api(caller)}, []

    def _window(self, args: Args) -> tuple[int, int, bool]:
        oldest = ts_bound(args.str("oldest"), "invalid_ts_oldest")
        latest = ts_bound(args.str("latest"), "invalid_ts_latest")
        return (oldest if oldest is not None else -1, latest if latest is not None else 1 << 62, args.bool("inclusive"))

    def _cursor_ts(self, args: Args) -> int | None:
        """Where a ``next_ts`` cursor resumes the listing; None without a cursor."""
        cursor = args.str("cursor")
        if cursor is None:
            return None
        ts = parse_ts(decode_cursor(cursor, "next_ts"))
        if ts is None:
            raise ApiError("invalid_cursor")
        return ts

    def conversations_history(self, caller: str, args: Args):
        conv = self._conv(caller, args)
        oldest, latest, inclusive = self._window(args)
        limit = args.int("limit", 100, lo=1, hi=999)
        below = self._cursor_ts(args)
        picked = []
        for msg in reversed(conv.messages.values()):
            if msg.get("thread_ts", msg["ts"]) != msg["ts"]:
                continue
            t = parse_ts(msg["ts"])
            if below is not None and t > below:
                continue
            if t > latest or (t == latest and not inclusive):
                continue
            if t < oldest or (t == oldest and not inclusive):
                break
            picked.append(msg)
            if len(picked) > limit:
                break
        has_more = len(picked) > limit
        page = [dict(m) for m in picked[:limit]]
        next_cursor = encode_cursor("next_ts", picked[limit]["ts"]) if has_more else ""
        return {"messages": page, "has_more": has_more, "pin_count": 0,
                "response_metadata": {"next_cursor": next_cursor}}, []

    def conversations_replies(self, caller: str, args: Args):
        conv = self._conv(caller, args)
        ts = args.str("ts", missing="invalid_arguments")
        msg = conv.messages.get(ts)
        if msg is None:
            raise ApiError("thread_not_found")
        root_ts = msg.get("thread_ts", ts)
        root = conv.messages.get(root_ts, msg)
        oldest, latest, inclusive = self._window(args)
        limit = args.int("limit", 100, lo=1, hi=1000)
        from_ts = self._cursor_ts(args)
        replies = []
        for m in conv.messages.values():
            if m.get("thread_ts") != root_ts or m["ts"] == root_ts:
                continue
            t = parse_ts(m["ts"])
            if (from_ts is not None and t < from_ts) or t < oldest or (t == oldest and not inclusive):
                continue
            if t > latest or (t == latest and not inclusive):
                break
            replies.append(m)
            if len(replies) > limit:
                break
        has_more = len(replies) > limit
        # Slack repeats the thread's parent at the top of every page.
        page = [dict(root)] + [dict(m) for m in replies[:limit]]
        next_cursor = encode_cursor("next_ts", replies[limit]["ts"]) if has_more else ""
        return {"messages": page, "has_more": has_more, "response_metadata": {"next_cursor": next_cursor}}, []

    def users_list(self, caller: str, args: Args):
        users = list(self.ws.users.values())
        # users.list without a limit returns everyone on one page.
        limit = args.int("limit", len(users), lo=1, hi=1000)
        page, next_cursor = self._page_by_id(users, args, limit, "user", lambda u: u["id"])
        return {"members": [dict(u) for u in page], "cache_ts": int(time.time()),
                "response_metadata": {"next_cursor": next_cursor}}, []

    def users_info(self, caller: str, args: Args):
        uid = args.str("user", missing="invalid_arguments")
        user = self.ws.users.get(uid)
        if user is None:
            raise ApiError("user_not_found")
        return {"user": dict(user)}, []
