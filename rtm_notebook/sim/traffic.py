"""The simulated people talking: a seeded stream of RTM events.

``Traffic.next()`` makes one event and applies it to the workspace (so the
history, threads, edits and reactions seen through the Web API match what
went over the sockets). Same seed, same sequence of events; only the ``ts``
values depend on the clock.
"""

from __future__ import annotations

import random
from bisect import bisect_right
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
    """Seeded generator of workspace activity.

    This is the firehose's hot path, so it draws with ``random()`` and
    indexing rather than ``choice``/``choices`` and keeps per-channel lists
    of people ready.
    """

    def __init__(self, workspace: Workspace, seed: int) -> None:
        self.ws = workspace
        self.rng = random.Random(f"rtm-notebook-sim-traffic-{seed}")
        self.rand = self.rng.random
        self.hook_bot_id = "B" + "".join(self.rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(10))
        # Traffic happens where the demo bot can see it, like a real bot's view.
        self.convs = [c for c in workspace.conversations.values()
                      if c.kind != "im" and workspace.bot_user_id in c.members]
        self.people = {c.id: self._people(c) for c in self.convs}
        self.makers = [getattr(self, "_" + kind) for kind, _ in KINDS]
        total = sum(w for _, w in KINDS)
        cum, acc = [], 0
        for _, w in KINDS:
            acc += w
            cum.append(acc / total)
        self.cum = cum
        # Recent top-level messages by people, for replies, edits, deletes, reactions.
        self.recent: deque[tuple[Any, str]] = deque(maxlen=256)

    def _people(self, conv) -> list[str]:
        return sorted(u for u in conv.members if u != self.ws.bot_user_id)

    def _pick(self, seq):
        return seq[int(self.rand() * len(seq))]

    def _text(self, people: list[str]) -> str:
        rand = self.rand
        texts = HELLO_TEXTS if rand() < 0.2 else TEXTS
        template = texts[int(rand() * len(texts))]
        if "{user}" in template:
            return template.replace("{user}", f"<@{people[int(rand() * len(people))]}>")
        return template

    def _recent_message(self) -> tuple[Any, dict[str, Any]] | None:
        """A recent message that still exists (deletes and the history cap remove some).

        A deleted thread parent stays as a tombstone; the people leave it alone.
        """
        recent = self.recent
        while recent:
            item = recent[int(self.rand() * len(recent))]
            msg = item[0].messages.get(item[1])
            if msg is not None and msg.get("subtype") != "tombstone":
                return item[0], msg
            recent.remove(item)
        return None

    def next(self) -> dict[str, Any]:
        """Make the next event and apply it to the workspace."""
        event = self.makers[bisect_right(self.cum, self.rand())]()
        return event if event is not None else self._message()

    def _message(self) -> dict[str, Any]:
        # The commonest event, so it is written out flat.
        rand = self.rand
        convs = self.convs
        conv = convs[int(rand() * len(convs))]
        people = self.people[conv.id]
        user = people[int(rand() * len(people))]
        texts = HELLO_TEXTS if rand() < 0.2 else TEXTS
        text = texts[int(rand() * len(texts))]
        if "{user}" in text:
            text = text.replace("{user}", f"<@{people[int(rand() * len(people))]}>")
        ts = self.ws.clock.next()
        msg = {"type": "message", "user": user, "text": text, "ts": ts, "team": self.ws.team_id}
        conv.add(msg)
        self.recent.append((conv, ts))
        return {**msg, "channel": conv.id, "event_ts": ts}

    def _reply(self) -> dict[str, Any] | None:
        target = self._recent_message()
        if target is None:
            return None
        conv, parent = target
        people = self.people[conv.id]
        ts = self.ws.clock.next()
        msg = self.ws.add_message(conv, self._pick(people), self._text(people), ts, thread_ts=parent["ts"],
                                  parent_user_id=parent["user"])
        return {**msg, "channel": conv.id, "event_ts": ts}

    def _bot_message(self) -> dict[str, Any]:
        ws = self.ws
        conv = self._pick(self.convs)
        ts = ws.clock.next()
        text = self._pick(["deploy #%d finished" % int(self.rand() * 10_000), "build passed", "new issue opened"])
        msg = {"type": "message", "subtype": "bot_message", "text": text, "ts": ts, "team": ws.team_id,
               "bot_id": self.hook_bot_id, "username": self._pick(BOT_NAMES)}
        conv.add(msg)
        return {**msg, "channel": conv.id, "event_ts": ts}

    def _edit(self) -> dict[str, Any] | None:
        target = self._recent_message()
        if target is None:
            return None
        conv, msg = target
        ts = self.ws.clock.next()
        previous = {"type": "message", "user": msg["user"], "text": msg["text"], "ts": msg["ts"]}
        msg["text"] = msg["text"] + (" (edited)" if self.rand() < 0.5 else " :pencil2:")
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
        return self.ws.delete_message(conv, msg)

    def _reaction(self) -> dict[str, Any] | None:
        target = self._recent_message()
        if target is None:
            return None
        conv, msg = target
        user = self._pick(self.people[conv.id])
        name = self._pick(REACTIONS)
        add_reaction(msg, name, user)
        return {
            "type": "reaction_added", "user": user, "reaction": name, "item_user": msg["user"],
            "item": {"type": "message", "channel": conv.id, "ts": msg["ts"]},
            "event_ts": self.ws.clock.next(),
        }

    def _typing(self) -> dict[str, Any]:
        conv = self._pick(self.convs)
        return {"type": "user_typing", "channel": conv.id, "user": self._pick(self.people[conv.id])}

    def _presence(self) -> dict[str, Any]:
        user = self._pick(self.ws.humans)
        presence = "away" if self.ws.presence[user] == "active" else "active"
        self.ws.presence[user] = presence
        return {"type": "presence_change", "user": user, "presence": presence}

    def _join(self) -> dict[str, Any] | None:
        conv = self._pick(self.convs)
        outside = [u for u in self.ws.humans if u not in conv.members]
        if not outside:
            return None
        user = self._pick(outside)
        conv.members.add(user)
        self.people[conv.id] = self._people(conv)
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
