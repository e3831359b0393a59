"""The simulated people talking: a seeded stream of RTM events.

``Traffic.next()`` makes one event and applies it to the workspace (so the
history, threads, edits and reactions seen through the Web API match what
went over the sockets). Same seed, same sequence of events; only the ``ts``
values depend on the clock.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from rtm_notebook.sim.model import Workspace

TEXTS = [
    "has anyone looked at the flaky test in CI?",
    "standup in 5 minutes",
    "I pushed a fix for the login bug, review welcome",
    "lunch? :taco:",
    "{user} can you take a look at this?",
    "the deploy went out, watching the dashboards",
    "thanks {user}!",
    "what's the status of the migration?",
    "I'll be out tomorrow afternoon",
    "new notebook with the weekly numbers is up",
    "does anyone know who owns the billing service?",
    "+1",
    "meeting notes are in the doc",
    "that's a great idea",
    "rebooting the staging box, back in 2",
    "customer reports the export is slow again",
    "LGTM :shipit:",
    "who broke the build? :sweat_smile:",
    "the sim says hi",
    "ok, merging",
]
# The seed's example bot answers messages containing "Hello": at the default
# demo rate of 20 events/s about two of these arrive every second.
HELLO_TEXTS = [
    "Hello",
    "Hello everyone!",
    "Hello {user}, got a minute?",
    "Hello from the other side of the planet",
    "Hello? is this thing on",
]
REACTIONS = ["thumbsup", "eyes", "tada", "white_check_mark", "heart", "joy", "rocket", "pray", "100"]
BOT_NAMES = ["deploy-bot", "pagerbot", "github"]

# (kind, weight)
KINDS = [
    ("message", 40), ("reply", 12), ("bot_message", 3), ("edit", 6), ("delete", 3),
    ("reaction", 12), ("typing", 12), ("presence", 8), ("join", 4),
]


class Traffic:
    """Seeded generator of workspace activity."""

    def __init__(self, workspace: Workspace, seed: int) -> None:
        self.ws = workspace
        self.rng = random.Random(f"rtm-notebook-sim-traffic-{seed}")
        self.hook_bot_id = "B" + "".join(self.rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(10))
        # Traffic happens where the demo bot can see it, like a real bot's view.
        self.convs = [c for c in workspace.conversations.values()
                      if c.kind != "im" and workspace.bot_user_id in c.members]
        self.kinds = [k for k, _ in KINDS]
        cum, total = [], 0
        for _, w in KINDS:
            total += w
            cum.append(total)
        self.cum = cum
        # Recent top-level messages by people, for replies, edits, deletes, reactions.
        self.recent: deque[tuple[str, str]] = deque(maxlen=256)

    def _people(self, conv) -> list[str]:
        return sorted(u for u in conv.members if u != self.ws.bot_user_id)

    def _text(self, people: list[str]) -> str:
        rng = self.rng
        template = rng.choice(HELLO_TEXTS) if rng.random() < 0.2 else rng.choice(TEXTS)
        return template.format(user=f"<@{rng.choice(people)}>")

    def _recent_message(self) -> tuple[Any, dict[str, Any]] | None:
        """A recent message that still exists (deletes and the history cap remove some)."""
        while self.recent:
            cid, ts = self.recent[self.rng.randrange(len(self.recent))]
            conv = self.ws.conversations[cid]
            msg = conv.messages.get(ts)
            if msg is not None:
                return conv, msg
            self.recent.remove((cid, ts))
        return None

    def next(self) -> dict[str, Any]:
        """Make the next event and apply it to the workspace."""
        kind = self.rng.choices(self.kinds, cum_weights=self.cum)[0]
        event = getattr(self, "_" + kind)()
        return event if event is not None else self._message()

    def _message(self, thread: tuple[Any, dict[str, Any]] | None = None) -> dict[str, Any]:
        ws, rng = self.ws, self.rng
        conv = thread[0] if thread else rng.choice(self.convs)
        people = self._people(conv)
        user = rng.choice(people)
        ts = ws.clock.next()
        if thread:
            parent = thread[1]
            msg = ws.add_message(conv, user, self._text(people), ts, thread_ts=parent["ts"],
                                 parent_user_id=parent.get("user", ""))
        else:
            msg = ws.add_message(conv, user, self._text(people), ts)
            self.recent.append((conv.id, ts))
        event = dict(msg)
        event["channel"] = conv.id
        event["event_ts"] = ts
        return event

    def _reply(self) -> dict[str, Any] | None:
        target = self._recent_message()
        return None if target is None else self._message(target)

    def _bot_message(self) -> dict[str, Any]:
        ws, rng = self.ws, self.rng
        conv = rng.choice(self.convs)
        ts = ws.clock.next()
        text = rng.choice(["deploy #%d finished" % rng.randrange(10_000), "build passed", "new issue opened"])
        msg = ws.add_message(conv, None, text, ts, subtype="bot_message", bot_id=self.hook_bot_id,
                             username=rng.choice(BOT_NAMES))
        event = dict(msg)
        event["channel"] = conv.id
        event["event_ts"] = ts
        return event

    def _edit(self) -> dict[str, Any] | None:
        target = self._recent_message()
        if target is None:
            return None
        conv, msg = target
        ts = self.ws.clock.next()
        previous = {"type": "message", "user": msg["user"], "text": msg["text"], "ts": msg["ts"]}
        msg["text"] = msg["text"] + (" (edited)" if self.rng.random() < 0.5 else " :pencil2:")
        msg["edited"] = {"user": msg["user"], "ts": ts}
        return {
            "type": "message", "subtype": "message_changed", "hidden": True, "channel": conv.id,
            "ts": ts, "event_ts": ts,
            "message": {"type": "message", "user": msg["user"], "text": msg["text"], "ts": msg["ts"],
                        "edited": msg["edited"]},
            "previous_message": previous,
        }

    def _delete(self) -> dict[str, Any] | None:
        target = self._recent_message()
        if target is None:
            return None
        conv, msg = target
        del conv.messages[msg["ts"]]
        ts = self.ws.clock.next()
        return {
            "type": "message", "subtype": "message_deleted", "hidden": True, "channel": conv.id,
            "ts": ts, "deleted_ts": msg["ts"], "event_ts": ts,
            "previous_message": {"type": "message", "user": msg["user"], "text": msg["text"], "ts": msg["ts"]},
        }

    def _reaction(self) -> dict[str, Any] | None:
        target = self._recent_message()
        if target is None:
            return None
        conv, msg = target
        user = self.rng.choice(self._people(conv))
        name = self.rng.choice(REACTIONS)
        add_reaction(msg, name, user)
        return {
            "type": "reaction_added", "user": user, "reaction": name, "item_user": msg["user"],
            "item": {"type": "message", "channel": conv.id, "ts": msg["ts"]},
            "event_ts": self.ws.clock.next(),
        }

    def _typing(self) -> dict[str, Any]:
        conv = self.rng.choice(self.convs)
        return {"type": "user_typing", "channel": conv.id, "user": self.rng.choice(self._people(conv))}

    def _presence(self) -> dict[str, Any]:
        user = self.rng.choice(self.ws.humans)
        presence = "away" if self.ws.presence[user] == "active" else "active"
        self.ws.presence[user] = presence
        return {"type": "presence_change", "user": user, "presence": presence}

    def _join(self) -> dict[str, Any] | None:
        conv = self.rng.choice(self.convs)
        outside = [u for u in self.ws.humans if u not in conv.members]
        if not outside:
            return None
        user = self.rng.choice(outside)
        conv.members.add(user)
        return {"type": "member_joined_channel", "user": user, "channel": conv.id,
                "channel_type": "G" if conv.kind == "private" else "C", "team": self.ws.team_id}


def add_reaction(msg: dict[str, Any], name: str, user: str) -> bool:
    """Record ``user`` reacting ``name`` on ``msg``; False if they already had."""
    for reaction in msg.setdefault("reactions", []):
        if reaction["name"] == name:
            if user in reaction["users"]:
                return False
            reaction["users"].append(user)
            reaction["count"] += 1
            return True
    msg["reactions"].append({"name": name, "users": [user], "count": 1})
    return True
