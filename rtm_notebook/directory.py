"""Who and where: the user and channel names a client has learnt, for ``messages()``.

Names arrive in connect answers (``rtm.start``'s snapshot), in events that
name a user or a channel, and from ``users.list`` / ``conversations.list``.
Only lists of objects carry names; anything else Slack (or a proxy) might
put in those fields is skipped, not trusted.
"""

from __future__ import annotations

import logging
from typing import Any

from rtm_notebook.errors import SlackClientError

__all__ = ["Directory", "NAMING_EVENTS"]

log = logging.getLogger(__name__)

#: event types that name a user or a channel
NAMING_EVENTS = frozenset(("channel_created", "channel_joined", "channel_rename", "group_joined", "group_rename",
                           "team_join", "user_change"))


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


class Directory:
    """id → name of users (:attr:`users`) and channels (:attr:`channels`)."""

    def __init__(self) -> None:
        self.users: dict[str, str] = {}
        self.channels: dict[str, str] = {}
        self.fetched = False

    def learn(self, data: dict) -> None:
        """Take the names in a Slack answer (``users``, ``channels``, ``groups``, ``mpims``, ``self``)."""
        for u in _list(data.get("users")) + _list(data.get("members")):
            if isinstance(u, dict) and isinstance(u.get("id"), str):
                self.users[u["id"]] = u.get("name") or u.get("real_name") or u["id"]
        for key in ("channels", "groups", "mpims"):
            for c in _list(data.get(key)):
                if isinstance(c, dict) and isinstance(c.get("id"), str) and c.get("name"):
                    self.channels[c["id"]] = c["name"]
        me = data.get("self")
        if isinstance(me, dict) and isinstance(me.get("id"), str) and me.get("name"):
            self.users[me["id"]] = me["name"]

    def learn_event(self, event_type: str, event: dict) -> None:
        """Take the name in one of the :data:`NAMING_EVENTS`."""
        if event_type in ("team_join", "user_change"):
            self.learn({"users": [event.get("user")]})
        else:
            self.learn({"channels": [event.get("channel")]})

    async def fetch(self, web: Any) -> None:
        """Page through ``users.list`` and ``conversations.list`` (once per client)."""
        self.fetched = True
        try:
            async for page in web.paginate("users.list", limit=200):
                self.learn(page.data)
            async for page in web.paginate("conversations.list", limit=200, types="public_channel,private_channel"):
                self.learn(page.data)
        except SlackClientError as exc:
            # Names are a convenience for messages(); the session does not need them.
            log.info("could not fetch user and channel names: %s", exc)
