"""The simulated workspace's state: team, people, conversations, history.

Everything here is plain data touched only from the workspace's own event
loop, so nothing is locked. The same seed builds the same workspace,
including its past history; only the ``ts`` of live messages depend on the
clock (Slack's ``ts`` is a time).
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# Memory stays bounded under a firehose: the oldest messages of a
# conversation are forgotten past this many (Slack keeps more, but no
# client paginates that deep in a session).
HISTORY_CAP = 5_000

FIRST_NAMES = [
    "ada", "grace", "linus", "margaret", "alan", "barbara", "ken", "radia",
    "dennis", "frances", "guido", "katherine", "tim", "hedy", "edsger", "sophie",
]
LAST_NAMES = [
    "lovelace", "hopper", "torvalds", "hamilton", "turing", "liskov", "thompson",
    "perlman", "ritchie", "allen", "rossum", "johnson", "berners-lee", "lamarr",
    "dijkstra", "wilson",
]
TIME_ZONES = [
    ("America/Los_Angeles", "Pacific Standard Time", -28800),
    ("America/New_York", "Eastern Standard Time", -18000),
    ("Europe/London", "Greenwich Mean Time", 0),
    ("Europe/Berlin", "Central European Time", 3600),
    ("Asia/Kolkata", "India Standard Time", 19800),
    ("Asia/Tokyo", "Japan Standard Time", 32400),
    ("Australia/Sydney", "Australian Eastern Daylight Time", 39600),
]
TITLES = ["Engineer", "Designer", "Support lead", "Data scientist", "Product manager", "SRE", ""]
PUBLIC_CHANNELS = [
    ("general", "Company-wide announcements and work-based matters"),
    ("random", "Non-work banter and water cooler conversation"),
    ("engineering", "Building things"),
    ("design", "Pixels and people"),
    ("support", "Customers need us"),
    ("data", "Notebooks, dashboards and numbers"),
]
# The bot is in "leads" but not in "incident-room", so not_in_channel is reachable.
PRIVATE_CHANNELS = [("leads", "Team leads"), ("incident-room", "Pages and postmortems")]
N_HUMANS = 12
ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
# Who a deleted thread parent's tombstone is by, as in Slack.
TOMBSTONE_USER = "USLACKBOT"


def format_ts(micros: int) -> str:
    """Slack's ``ts``: seconds and microseconds, ``\\d{10}\\.\\d{6}``."""
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def parse_ts(value: str) -> int | None:
    """Microseconds of a ``ts`` string, or None when it is not one."""
    sec, dot, frac = value.partition(".")
    if not (dot and sec.isdigit() and frac.isdigit() and len(frac) == 6 and len(sec) <= 10):
        return None
    return int(sec) * 1_000_000 + int(frac)


class Clock:
    """Hands out ``ts`` values: wall-clock time, strictly increasing.

    One clock serves every conversation, so ``ts`` is unique per channel as
    Slack promises (and in fact unique workspace-wide).
    """

    def __init__(self, floor: int = 0) -> None:
        self._last = floor

    def next(self) -> str:
        now = time.time_ns() // 1000
        last = self._last = now if now > self._last else self._last + 1
        return f"{last // 1_000_000}.{last % 1_000_000:06d}"


@dataclass(eq=False)  # identity: comparing histories field by field is slow and meaningless
class Conversation:
    """A channel, private channel or DM, and its history."""

    id: str
    name: str
    kind: str  # "public" | "private" | "im"
    created: int
    creator: str
    topic: str = ""
    purpose: str = ""
    members: set[str] = field(default_factory=set)
    im_user: str | None = None
    # ts -> message; insertion order is ts order because ts only grows.
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Arrival order for forgetting the oldest: popping a dict's first key
    # again and again rescans the deleted slots, a deque does not.
    order: deque[str] = field(default_factory=deque)

    def to_api(self, viewer: str | None = None) -> dict[str, Any]:
        """The conversation object of conversations.info/list, as seen by ``viewer``."""
        if self.kind == "im":
            return {
                "id": self.id, "created": self.created, "is_im": True, "is_org_shared": False,
                "user": self.im_user if viewer != self.im_user else self.creator,
                "is_user_deleted": False, "priority": 0,
            }
        private = self.kind == "private"
        return {
            "id": self.id, "name": self.name, "name_normalized": self.name,
            "is_channel": not private, "is_group": private, "is_im": False, "is_mpim": False,
            "is_private": private, "created": self.created, "creator": self.creator,
            "is_archived": False, "is_general": self.name == "general", "is_shared": False,
            "is_org_shared": False, "is_member": viewer in self.members,
            "topic": {"value": self.topic, "creator": self.creator if self.topic else "", "last_set": self.created if self.topic else 0},
            "purpose": {"value": self.purpose, "creator": self.creator, "last_set": self.created},
            "num_members": len(self.members),
        }

    def add(self, message: dict[str, Any]) -> None:
        ts = message["ts"]
        self.messages[ts] = message
        self.order.append(ts)
        if len(self.order) > HISTORY_CAP:
            self.messages.pop(self.order.popleft(), None)


class Workspace:
    """Team, users (humans and one bot) and conversations built from ``seed``."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"rtm-notebook-sim-workspace-{seed}")
        self.seed = seed
        self._rng = rng
        self.team_id = self._new_id("T")
        domain = f"sim-{seed}"
        self.team = {
            "id": self.team_id, "name": f"Sim Workspace {seed}", "domain": domain,
            "email_domain": "sim.example", "url": f"https://{domain}.slack.com/",
            "icon": {"image_default": True}, "msg_edit_window_mins": -1,
            "over_storage_limit": False, "prefs": {}, "plan": "std",
        }
        base = 1_600_000_000 + rng.randrange(10_000_000)
        self.created = base
        self.users: dict[str, dict[str, Any]] = {}
        self.humans: list[str] = []
        names = rng.sample(range(len(FIRST_NAMES)), N_HUMANS)
        for i, n in enumerate(names):
            first, last = FIRST_NAMES[n], rng.choice(LAST_NAMES)
            uid = self._new_id("U")
            self.users[uid] = self._user(uid, first, f"{first.title()} {last.title()}", base + i * 86_400, admin=i == 0)
            self.humans.append(uid)
        self.bot_user_id = self._new_id("U")
        self.bot_id = self._new_id("B")
        self.app_id = self._new_id("A")
        bot = self._user(self.bot_user_id, "rtmbot", "RTM Bot", base + 3600, admin=False)
        bot.update(is_bot=True, tz="America/Los_Angeles", tz_label="Pacific Standard Time", tz_offset=-28800)
        bot["profile"].update(bot_id=self.bot_id, api_app_id=self.app_id, always_active=True, title="")
        self.users[self.bot_user_id] = bot
        self.bots = [{"id": self.bot_id, "deleted": False, "name": "rtmbot", "app_id": self.app_id,
                      "user_id": self.bot_user_id, "updated": base + 3600, "icons": {}}]
        self.presence = {uid: rng.choice(["active", "away"]) for uid in self.humans}
        self.presence[self.bot_user_id] = "active"

        self.conversations: dict[str, Conversation] = {}
        owner = self.humans[0]
        for name, purpose in PUBLIC_CHANNELS:
            members = set(self.humans) if name == "general" else set(rng.sample(self.humans, rng.randint(4, 9)))
            members.add(self.bot_user_id)
            self._add_conv(Conversation(self._new_id("C"), name, "public", base + 100, owner,
                                        topic=purpose if name != "random" else "", purpose=purpose, members=members))
        for name, purpose in PRIVATE_CHANNELS:
            members = set(rng.sample(self.humans, 4)) | {owner}
            if name == "leads":
                members.add(self.bot_user_id)
            self._add_conv(Conversation(self._new_id("G"), name, "private", base + 200, owner, purpose=purpose, members=members))
        for uid in self.humans:
            self._add_conv(Conversation(self._new_id("D"), "", "im", base + 300, self.bot_user_id,
                                        members={uid, self.bot_user_id}, im_user=uid))
        self.by_name = {c.name: c for c in self.conversations.values() if c.kind != "im"}
        self._seed_history(rng, base + 1000)
        self.clock = Clock(floor=(base + 10_000_000) * 1_000_000)

    def _new_id(self, prefix: str) -> str:
        return prefix + "".join(self._rng.choice(ID_ALPHABET) for _ in range(10))

    def _add_conv(self, conv: Conversation) -> None:
        self.conversations[conv.id] = conv

    def _user(self, uid: str, name: str, real_name: str, updated: int, *, admin: bool) -> dict[str, Any]:
        tz, tz_label, tz_offset = self._rng.choice(TIME_ZONES)
        avatar = f"{self._rng.getrandbits(48):012x}"
        return {
            "id": uid, "team_id": self.team_id, "name": name, "deleted": False,
            "color": f"{self._rng.getrandbits(24):06x}", "real_name": real_name,
            "tz": tz, "tz_label": tz_label, "tz_offset": tz_offset,
            "profile": {
                "title": self._rng.choice(TITLES), "phone": "", "skype": "",
                "real_name": real_name, "real_name_normalized": real_name,
                "display_name": name, "display_name_normalized": name,
                "status_text": "", "status_emoji": "", "avatar_hash": avatar,
                "email": f"{name}@sim.example",
                "image_48": f"https://avatars.sim.example/{avatar}_48.png",
                "image_72": f"https://avatars.sim.example/{avatar}_72.png",
                "team": self.team_id,
            },
            "is_admin": admin, "is_owner": admin, "is_primary_owner": admin,
            "is_restricted": False, "is_ultra_restricted": False, "is_bot": False,
            "is_app_user": False, "updated": updated,
        }

    def _seed_history(self, rng: random.Random, start: int) -> None:
        """Some past conversation in every channel, so history and pagination have material."""
        from rtm_notebook.sim.traffic import TEXTS

        t = start
        for conv in self.conversations.values():
            if conv.kind == "im":
                continue
            people = sorted(u for u in conv.members if u != self.bot_user_id)
            parents: list[str] = []
            # #general has more than a page of history (a backfill pages through it).
            for _ in range(rng.randint(25, 60) + (240 if conv.name == "general" else 0)):
                t += rng.randint(30, 4000)
                ts = format_ts(t * 1_000_000 + rng.randrange(1_000_000))
                user = rng.choice(people)
                thread_ts = rng.choice(parents) if parents and rng.random() < 0.2 else None
                self.add_message(conv, user, rng.choice(TEXTS).format(user=f"<@{rng.choice(people)}>"), ts, thread_ts=thread_ts)
                if thread_ts is None:
                    parents.append(ts)

    # -- messages ------------------------------------------------------

    def add_message(self, conv: Conversation, user: str, text: str, ts: str, *,
                    thread_ts: str | None = None, **extra: Any) -> dict[str, Any]:
        """Store a new message by ``user`` (a reply also updates its parent) and return it."""
        msg: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": ts, "team": self.team_id}
        if user == self.bot_user_id:
            msg["bot_id"] = self.bot_id
            msg["app_id"] = self.app_id
        if thread_ts is not None:
            msg["thread_ts"] = thread_ts
        msg.update(extra)
        if thread_ts is not None:
            parent = conv.messages.get(thread_ts)
            if parent is not None:
                parent.setdefault("thread_ts", thread_ts)
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                users = parent.setdefault("reply_users", [])
                if user not in users:
                    users.append(user)
                parent["reply_users_count"] = len(users)
                parent["latest_reply"] = ts
        conv.add(msg)
        return msg

    def delete_message(self, conv: Conversation, msg: dict[str, Any]) -> dict[str, Any]:
        """Delete ``msg`` from ``conv`` as Slack does and return the RTM event.

        A message without replies is gone (``message_deleted``). A thread
        parent with replies is not: Slack leaves a tombstone ("This message
        was deleted.", by USLACKBOT, subtype ``tombstone``) that keeps the
        thread, so its replies stay readable and new replies are still
        accepted; the event is a ``message_changed`` whose ``message`` is
        the tombstone.
        """
        ts = self.clock.next()
        previous = {k: msg[k] for k in ("type", "user", "text", "ts") if k in msg}
        if not msg.get("reply_count"):
            conv.messages.pop(msg["ts"], None)
            return {"type": "message", "subtype": "message_deleted", "hidden": True, "channel": conv.id,
                    "ts": ts, "deleted_ts": msg["ts"], "event_ts": ts, "previous_message": previous}
        tombstone = {"type": "message", "subtype": "tombstone", "text": "This message was deleted.",
                     "user": TOMBSTONE_USER, "hidden": True, "ts": msg["ts"], "thread_ts": msg["ts"],
                     "parent_user_id": TOMBSTONE_USER}
        tombstone.update({k: msg[k] for k in ("reply_count", "reply_users", "reply_users_count", "latest_reply")
                          if k in msg})
        msg.clear()
        msg.update(tombstone)  # in place: the dict is the one stored in conv.messages
        return {"type": "message", "subtype": "message_changed", "hidden": True, "channel": conv.id,
                "ts": ts, "event_ts": ts, "message": dict(tombstone), "previous_message": previous}

    def conversation(self, key: str) -> Conversation | None:
        """By id, or by name with or without ``#`` (chat.postMessage accepts both)."""
        conv = self.conversations.get(key)
        if conv is None:
            conv = self.by_name.get(key[1:] if key.startswith("#") else key)
        if conv is None and key in self.users:
            conv = self.im_with(key)
        return conv

    def im_with(self, user: str) -> Conversation | None:
        for conv in self.conversations.values():
            if conv.kind == "im" and conv.im_user == user:
                return conv
        return None

    def visible(self, conv: Conversation, viewer: str) -> bool:
        return conv.kind == "public" or viewer in conv.members

    def user_id(self, key: str) -> str | None:
        """By id or by name."""
        if key in self.users:
            return key
        for uid, user in self.users.items():
            if user["name"] == key:
                return uid
        return None
