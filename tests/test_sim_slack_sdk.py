"""slack_sdk's own clients, unmodified but for base_url, against the simulated workspace."""

from __future__ import annotations

import asyncio
import queue
import threading

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.rtm import RTMClient as RTMClientV1
from slack_sdk.rtm_v2 import RTMClient as RTMClientV2

from sim_support import channel_id, wait_sync

TIMEOUT = 15.0  # hang guard


SIM_SEED = 11


def test_web_client(sim):
    client = WebClient(token=sim.token, base_url=sim.base_url)
    assert client.auth_test()["user_id"] == sim.bot_user_id
    general = channel_id(sim, "general")
    posted = client.chat_postMessage(channel=general, text="from slack_sdk")
    assert posted["message"]["text"] == "from slack_sdk"
    client.reactions_add(channel=general, timestamp=posted["ts"], name="tada")
    client.chat_update(channel=general, ts=posted["ts"], text="edited by slack_sdk")
    replies = client.conversations_replies(channel=general, ts=posted["ts"])
    assert replies["messages"][0]["text"] == "edited by slack_sdk"
    pages = list(client.conversations_list(limit=2))  # slack_sdk follows next_cursor itself
    assert len(pages) > 1 and sum(len(p["channels"]) for p in pages) == len([c for c in sim.channels if c["is_channel"]])
    members = [m for page in client.users_list(limit=4) for m in page["members"]]
    assert len(members) == len(sim.users)
    assert client.users_info(user=sim.bot_user_id)["user"]["is_bot"]
    assert client.conversations_history(channel=general, limit=3)["has_more"]
    client.chat_delete(channel=general, ts=posted["ts"])
    with pytest.raises(SlackApiError) as info:
        client.chat_postMessage(channel="CNOPE", text="x")
    assert info.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as info:
        WebClient(token="xoxb-not-ours", base_url=sim.base_url).auth_test()
    assert info.value.response["error"] == "invalid_auth"


def _human(sim):
    return next(u for u in sim.users if not u["is_bot"])


# slack_sdk's own aiohttp call, not ours.
@pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")
def test_rtm_v1_asyncio_client(sim):
    """slack_sdk.rtm.RTMClient(run_async=True) on its own loop in a thread (its start() wants the main thread's signals otherwise)."""
    general = channel_id(sim, "general")
    got: queue.Queue = queue.Queue()

    async def on_message(**payload):
        data = payload["data"]
        if data.get("text") == "Hello v1":
            got.put(data)
            await payload["web_client"].chat_postMessage(channel=data["channel"], text="Hi from v1", thread_ts=data["ts"])
            payload["rtm_client"].send_over_websocket(payload={"type": "message", "channel": data["channel"], "text": "v1 over RTM"})

    async def on_hello(**payload):
        got.put("hello")

    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        client = RTMClientV1(token=sim.token, base_url=sim.base_url, run_async=True, loop=loop, auto_reconnect=False)
        future = client.start()
        got.put(client)
        got.put(loop)
        try:
            loop.run_until_complete(future)
        except BaseException as exc:  # handed to the test thread
            got.put(exc)
        finally:
            loop.close()

    RTMClientV1.on(event="message", callback=on_message)
    RTMClientV1.on(event="hello", callback=on_hello)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        client = got.get(timeout=TIMEOUT)
        loop = got.get(timeout=TIMEOUT)
        assert got.get(timeout=TIMEOUT) == "hello"
        sim.post_message(_human(sim)["id"], general, "Hello v1")
        event = got.get(timeout=TIMEOUT)
        assert isinstance(event, dict) and event["user"] == _human(sim)["id"]
        deadline_ok = wait_sync(lambda: {"Hi from v1", "v1 over RTM"} <= {m["text"] for m in sim.posted})
        assert deadline_ok, [m["text"] for m in sim.posted[-5:]]
        reply = next(m for m in sim.posted if m["text"] == "Hi from v1")
        assert reply["thread_ts"] == event["ts"]
        asyncio.run_coroutine_threadsafe(client.async_stop(), loop).result(timeout=TIMEOUT)
        thread.join(timeout=TIMEOUT)
        assert not thread.is_alive()
    finally:
        RTMClientV1._callbacks["message"].remove(on_message)
        RTMClientV1._callbacks["hello"].remove(on_hello)


def test_rtm_v2_client(sim):
    general = channel_id(sim, "general")
    got: queue.Queue = queue.Queue()
    client = RTMClientV2(token=sim.token, base_url=sim.base_url)

    @client.on("message")
    def on_message(client, event):
        if event.get("text") == "Hello v2":
            got.put(event)
            client.web_client.chat_postMessage(channel=event["channel"], text="Hi from v2")
            client.send({"id": 1, "type": "message", "channel": event["channel"], "text": "v2 over RTM"})

    client.connect()
    try:
        assert wait_sync(lambda: sim.open_sockets == 1)
        sim.post_message(_human(sim)["id"], general, "Hello v2")
        event = got.get(timeout=TIMEOUT)
        assert event["channel"] == general
        assert wait_sync(lambda: {"Hi from v2", "v2 over RTM"} <= {m["text"] for m in sim.posted})
        assert any(f.get("text") == "v2 over RTM" and f.get("id") == 1 for f in sim.received)
    finally:
        client.close()


