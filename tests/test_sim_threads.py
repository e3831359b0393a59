"""Threads in the simulated workspace outlive the deletion of their parent, as in Slack.

Slack keeps a deleted thread parent that has replies as a tombstone
("This message was deleted.", subtype ``tombstone``, by USLACKBOT): the
replies stay and the thread still takes new ones. Issue 14 item 5: the sim
dropped the parent instead, so the README's bot (``say(..., thread=True)``
on a "Hello" in a thread) got ``thread_not_found`` at ``--rate 50``.
"""

from __future__ import annotations

import pytest

from rtm_notebook.sim import SimWorkspace
from rtm_notebook.sim.model import Workspace
from rtm_notebook.sim.traffic import Traffic
from rtm_notebook.sim.webapi import ApiError, WebApi

from sim_support import Socket, api, ok


def test_generated_threads_take_replies_after_their_parent_is_deleted():
    ws = Workspace(seed=1)
    traffic, web = Traffic(ws, seed=1), WebApi(ws)
    replies, deleted = [], set()
    for _ in range(20_000):
        event = traffic.next()
        if event.get("type") == "message" and event.get("thread_ts") and event.get("subtype") is None:
            replies.append(event)
        if event.get("subtype") == "message_deleted":
            deleted.add(event["deleted_ts"])
        if event.get("subtype") == "message_changed" and event["message"].get("subtype") == "tombstone":
            deleted.add(event["message"]["ts"])
    assert deleted & {e["thread_ts"] for e in replies}, "no thread parent was deleted: the test proves nothing"
    for event in replies:
        conv = ws.conversations[event["channel"]]
        # What say(text, thread=True) sends for this event: its thread_ts.
        try:
            web.new_message(conv, ws.bot_user_id, "Hi", event["thread_ts"])
        except ApiError as exc:
            pytest.fail(f"a reply in the thread of a message that has replies was refused: {exc.error}")


def test_generated_delete_of_a_parent_with_replies_leaves_a_tombstone():
    ws = Workspace(seed=3)
    traffic = Traffic(ws, seed=3)
    parent = traffic._message()
    reply = traffic._reply()  # the only recent message is the parent
    assert reply["thread_ts"] == parent["ts"]
    event = traffic._delete()
    assert event["subtype"] == "message_changed" and event["hidden"] is True
    stone = event["message"]
    assert stone["subtype"] == "tombstone" and stone["ts"] == stone["thread_ts"] == parent["ts"]
    assert stone["user"] == "USLACKBOT" and stone["text"] == "This message was deleted." and stone["reply_count"] == 1
    assert event["previous_message"]["text"] == parent["text"]
    # A message with no replies is simply gone.
    lone = traffic._message()
    traffic.recent.clear()
    traffic.recent.append((ws.conversations[lone["channel"]], lone["ts"]))
    gone = traffic._delete()
    assert gone["subtype"] == "message_deleted" and gone["deleted_ts"] == lone["ts"]
    assert lone["ts"] not in ws.conversations[lone["channel"]].messages


@pytest.fixture
def sim():
    with SimWorkspace(seed=4) as s:
        yield s


async def test_rtm_reply_in_a_thread_whose_parent_was_deleted(sim):
    general = next(c["id"] for c in sim.channels if c["name"] == "general")
    alice, bob = [u["id"] for u in sim.users if not u.get("is_bot")][:2]
    parent = sim.post_message(alice, general, "Hello, thread")
    sim.post_message(bob, general, "Hello back", thread_ts=parent["ts"])
    sock = await Socket.open(sim)
    try:
        await sock.until(lambda f: f.get("type") == "hello")
        ok(sim, "chat.delete", token=sim.user_token(alice), channel=general, ts=parent["ts"])
        changed = await sock.until(lambda f: f.get("subtype") in ("message_changed", "message_deleted"))
        assert changed["subtype"] == "message_changed" and changed["message"]["subtype"] == "tombstone"
        # The bot answers in the thread over the socket, as say(..., thread=True) does.
        await sock.send({"id": 1, "type": "message", "channel": general, "text": "Hi", "thread_ts": parent["ts"]})
        reply = await sock.until(lambda f: f.get("reply_to") == 1)
        assert reply["ok"] is True, reply
    finally:
        await sock.ws.close()
    thread = ok(sim, "conversations.replies", channel=general, ts=parent["ts"])["messages"]
    assert [m["text"] for m in thread] == ["This message was deleted.", "Hello back", "Hi"]
    assert thread[0]["reply_count"] == 2
    # The tombstone cannot be deleted or edited again, as in Slack.
    assert api(sim, "chat.delete", token=sim.user_token(alice), channel=general, ts=parent["ts"]).json()["error"] == "cant_delete_message"
