"""History backfill: what happened before the socket opened, into the same EventFrame.

``await client.backfill(channels=..., oldest=..., latest=..., threads=True)``
pages through ``conversations.history`` (and ``conversations.replies`` for
each thread) and records every message as a row with direction
``"history"``: recorded, never dispatched to handlers or shown in the live
log. ``messages()`` counts a message seen live and in history once.

Slack's limits: both methods are Tier 3 (about 50 calls a minute per
workspace, bursts allowed), so every backfill of a client shares one token
bucket (a minute's 50 calls at once, then 50 a minute), and an HTTP 429 waits the ``Retry-After`` Slack sends (the Web API
client does that). A backfill interrupted (a cell stopped, a network error)
resumes where it stopped when called again with the same arguments: each
channel's cursor and the threads still to fetch are kept on the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rtm_notebook.datasets import as_utc
from rtm_notebook.errors import SlackClientError
from rtm_notebook.fields import ts_seconds

__all__ = ["Backfill", "Progress", "TIER3_PER_MINUTE"]

log = logging.getLogger(__name__)

TIER3_PER_MINUTE = 50
BURST = 50
PAGE = 200


@dataclass
class Progress:
    """Where a backfill stands; handed to the ``progress`` callback after every call."""

    channels: int = 0
    channels_done: int = 0
    calls: int = 0
    messages: int = 0
    channel: str | None = None
    done: bool = False


@dataclass
class _Channel:
    cursor: str | None = None
    history_done: bool = False
    threads: list[str] = field(default_factory=list)  # parent ts still to fetch
    threads_seen: set[str] = field(default_factory=set)
    thread_cursor: str | None = None  # within threads[0]


class _Bucket:
    """Calls per minute with a burst, in the event loop's time."""

    def __init__(self, per_minute: float, burst: float) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.tokens = self.burst
        self.at = time.monotonic()

    async def take(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            await asyncio.sleep((1 - self.tokens) / self.rate)
            self.tokens, self.at = 1.0, time.monotonic()
        self.tokens -= 1


def _bound(value: Any) -> str | None:
    """An ``oldest``/``latest`` bound as Slack's ts string: ts strings pass, the rest via as_utc."""
    if value is None:
        return None
    if isinstance(value, str) and value.replace(".", "", 1).isdigit():
        return value
    return f"{as_utc(value).timestamp():.6f}"


class Backfill:
    """One client's backfills, resumable per (channel, oldest, latest, threads)."""

    def __init__(self, record: Callable[[dict, float], None]) -> None:
        self._record = record
        self._state: dict[tuple, _Channel] = {}
        # One bucket for every backfill of the client: Slack's limit is per
        # method per workspace, not per call of backfill().
        self._bucket = _Bucket(TIER3_PER_MINUTE, BURST)

    async def run(self, web: Any, channels: Iterable[str], *, oldest: Any = None, latest: Any = None,
                  threads: bool = True, per_minute: float = TIER3_PER_MINUTE,
                  progress: Callable[[Progress], None] | None = None) -> Progress:
        channels = list(channels)
        oldest, latest = _bound(oldest), _bound(latest)
        bucket = self._bucket if per_minute == TIER3_PER_MINUTE else _Bucket(per_minute, BURST)
        status = Progress(channels=len(channels))
        for channel in channels:
            status.channel = channel
            state = self._state.setdefault((channel, oldest, latest, threads), _Channel())
            while not state.history_done:
                await bucket.take()
                args: dict[str, Any] = {"channel": channel, "limit": PAGE}
                for key, value in (("oldest", oldest), ("latest", latest), ("cursor", state.cursor)):
                    if value is not None:
                        args[key] = value
                page = await web.api_call("conversations.history", params=args, http_verb="GET")
                status.calls += 1
                for message in page.get("messages") or []:
                    if isinstance(message, dict) and isinstance(message.get("ts"), str):
                        self._record({**message, "channel": channel}, ts_seconds(message["ts"]))
                        status.messages += 1
                        if threads and message.get("reply_count") and message.get("thread_ts") == message["ts"] \
                                and message["ts"] not in state.threads_seen:
                            state.threads.append(message["ts"])
                            state.threads_seen.add(message["ts"])
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                state.cursor = cursor or None
                state.history_done = not (page.get("has_more") and cursor)
                _tell(progress, status)
            while state.threads:
                parent = state.threads[0]
                while True:
                    await bucket.take()
                    args = {"channel": channel, "ts": parent, "limit": PAGE}
                    if state.thread_cursor:
                        args["cursor"] = state.thread_cursor
                    page = await web.api_call("conversations.replies", params=args, http_verb="GET")
                    status.calls += 1
                    for message in page.get("messages") or []:
                        # Slack repeats the parent at the top of every page: it was recorded with the history.
                        if isinstance(message, dict) and isinstance(message.get("ts"), str) and message["ts"] != parent:
                            self._record({**message, "channel": channel}, ts_seconds(message["ts"]))
                            status.messages += 1
                    _tell(progress, status)
                    cursor = (page.get("response_metadata") or {}).get("next_cursor")
                    state.thread_cursor = cursor if page.get("has_more") and cursor else None
                    if state.thread_cursor is None:
                        break
                state.threads.pop(0)
            status.channels_done += 1
        status.done = True
        _tell(progress, status)
        return status


def _tell(progress: Callable[[Progress], None] | None, status: Progress) -> None:
    if progress is None:
        return
    try:
        progress(status)
    except Exception:  # a broken progress view must not stop the backfill
        log.exception("the backfill's progress callback raised")


async def channel_ids(web: Any, wanted: Iterable[str] | str | None, known: dict[str, str]) -> list[str]:
    """Channel ids for ``wanted``: ids as they are, ``#name``/``name`` looked up;
    None: every conversation the bot is a member of."""
    if isinstance(wanted, str):
        wanted = [wanted]
    ids, names = [], []
    for item in wanted or ():
        bare = item.lstrip("#")
        if item.startswith("#") or bare[:1] not in ("C", "G", "D") or not bare[1:].isalnum() or not bare.isupper():
            names.append(bare)
        else:
            ids.append(bare)
    if wanted is not None and not names:
        return ids
    by_name = {name: cid for cid, name in known.items()}
    member: list[str] = []
    async for page in web.paginate("conversations.list", limit=200, types="public_channel,private_channel"):
        for conv in page.get("channels") or []:
            if isinstance(conv, dict) and isinstance(conv.get("id"), str):
                if conv.get("name"):
                    by_name[conv["name"]] = conv["id"]
                    known[conv["id"]] = conv["name"]
                if conv.get("is_member"):
                    member.append(conv["id"])
    if wanted is None:
        return member
    missing = [n for n in names if n not in by_name]
    if missing:
        raise SlackClientError(f"no channel named {', '.join('#' + n for n in missing)} in this workspace "
                               "(channel ids like C0123 work too)")
    return ids + [by_name[n] for n in names]
