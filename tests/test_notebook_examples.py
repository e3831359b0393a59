"""The notebooks' example handlers show what a reader expects, for every shape of event they get.

Issue 14 item 12: 02-prototyping-handlers' ``general_watch`` printed
``#general  None: None`` for edits and deletions (they carry no top-level
``user`` or ``text``), and its ``reactions`` example looked up "the newest
message at or before the reacted one", which is another message when the
reacted one is gone. The cells are taken from the notebook as committed and
run as %%rtm_on runs them (compile_handler).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

from rtm_notebook.notebook.magics import compile_handler
from rtm_notebook.sim import SimWorkspace
from rtm_notebook.web import AsyncWebClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02-prototyping-handlers.ipynb"


def handler_cell(name: str, client, web=None):
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells
                  if c["cell_type"] == "code" and f"--name {name}" in "".join(c["source"]).split("\n", 1)[0])
    body = source.split("\n", 1)[1]
    return compile_handler(body, filename=f"<{name}>", namespace={}, web=lambda _client: web,
                           say=lambda _client, _event: None)


def printed(handler, client, event) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        handler(client, event)
    return out.getvalue().strip()


def test_general_watch_shows_who_and_what_for_every_kind_of_message():
    client = SimpleNamespace(user_names={"U1": "ada", "U2": "grace"})
    watch = handler_cell("general_watch", client)
    new = {"type": "message", "channel": "C1", "user": "U1", "text": "standup in 5", "ts": "1.000001"}
    edit = {"type": "message", "subtype": "message_changed", "hidden": True, "channel": "C1", "ts": "1.000002",
            "message": {"type": "message", "user": "U1", "text": "standup in 10", "ts": "1.000001",
                        "edited": {"user": "U1", "ts": "1.000002"}},
            "previous_message": {"type": "message", "user": "U1", "text": "standup in 5", "ts": "1.000001"}}
    deletion = {"type": "message", "subtype": "message_deleted", "hidden": True, "channel": "C1", "ts": "1.000003",
                "deleted_ts": "1.000001", "previous_message": {"type": "message", "user": "U1", "text": "standup in 10"}}
    tombstone = {"type": "message", "subtype": "message_changed", "hidden": True, "channel": "C1", "ts": "1.000004",
                 "message": {"type": "message", "subtype": "tombstone", "user": "USLACKBOT",
                             "text": "This message was deleted.", "ts": "1.000001", "thread_ts": "1.000001"},
                 "previous_message": {"type": "message", "user": "U2", "text": "who owns billing?"}}
    bot = {"type": "message", "subtype": "bot_message", "channel": "C1", "bot_id": "B1", "username": "deploy-bot",
           "text": "build passed", "ts": "1.000005"}
    lines = {kind: printed(watch, client, event)
             for kind, event in [("new", new), ("edit", edit), ("deletion", deletion), ("tombstone", tombstone), ("bot", bot)]}
    for kind, line in lines.items():
        assert "None" not in line, f"{kind}: {line}"
    assert lines["new"] == "#general  ada: standup in 5"
    assert "ada" in lines["edit"] and "edited" in lines["edit"] and "standup in 10" in lines["edit"], lines["edit"]
    assert "deleted" in lines["deletion"] and "standup in 10" in lines["deletion"], lines["deletion"]
    assert "deleted" in lines["tombstone"] and "USLACKBOT" not in lines["tombstone"], lines["tombstone"]
    assert lines["bot"] == "#general  deploy-bot: build passed"


def test_reactions_example_names_the_reacted_message_or_says_it_is_gone():
    with SimWorkspace(seed=2) as sim:
        general = next(c["id"] for c in sim.channels if c["name"] == "general")
        human = next(u["id"] for u in sim.users if not u.get("is_bot"))
        earlier = sim.post_message(human, general, "an earlier message")
        reacted = sim.post_message(sim.bot_user_id, general, "the reacted message")

        async def run() -> tuple[str, str]:
            web = AsyncWebClient(sim.token, base_url=sim.base_url)
            try:
                client = SimpleNamespace(user_names={})
                handler = handler_cell("reactions", client, web)

                async def call(event) -> str:
                    out = io.StringIO()
                    with contextlib.redirect_stdout(out):
                        await handler(client, event)
                    return out.getvalue().strip()

                event = {"type": "reaction_added", "user": human, "reaction": "tada",
                         "item": {"type": "message", "channel": general, "ts": reacted["ts"]}}
                present = await call(event)
                await web.api_call("chat.delete", params={"channel": general, "ts": reacted["ts"]})
                gone = await call(event)
                return present, gone
            finally:
                await web.aclose()

        present, gone = asyncio.run(run())
    assert present == ":tada: on 'the reacted message'"
    assert earlier["text"] not in gone and "not in the channel's history" in gone, gone
