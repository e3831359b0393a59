"""SocketModeClient over real sockets against the simulated workspace's Socket Mode server.

What each test checks is in the workspace's own records (which envelope was
acked, when, with what payload; what was posted to a response_url; which
connections were open) and in what handlers got, never in timings.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import pytest

from rtm_notebook import SlackApiError, SlackClientError, SocketModeClient
from rtm_notebook.socketmode import connection
from rtm_notebook.socketmode.protocol import ANSWER_DEADLINE, SocketModeConnectError, SocketModeDisabled

from rtm_support import general, human, until

SIM_SEED = 11


def client_for(sim, **options) -> SocketModeClient:
    return SocketModeClient(app_token=sim.app_token, token=sim.token, base_url=sim.base_url, **options)


def envelope_of(sim, sim_seq: int) -> dict:
    return next(e for e in sim.envelopes_sent if e["sim_seq"] == sim_seq)


async def ack_of(sim, envelope_id: str) -> dict:
    return await asyncio.to_thread(sim.wait_for_ack, envelope_id, 10.0)


async def test_handlers_get_the_inner_event_as_rtm_shapes_it(sim):
    client = client_for(sim)
    got: list[dict] = []

    @client.on("message")
    async def collect(c, event):
        got.append(event)

    await client.connect()
    assert client.state == "connected"
    posted = sim.post_message(human(sim), "general", "hello over socket mode")
    await until(lambda: got, "the message")
    event = got[0]
    # The shape of the RTM event: a handler written for RTM runs unchanged.
    assert (event["type"], event["channel"], event["user"], event["text"], event["ts"]) == (
        "message", general(sim), human(sim), "hello over socket mode", posted["ts"])
    assert event["channel_type"] == "channel"
    assert client.event_frame.transport == "socket_mode"
    ack = await ack_of(sim, envelope_of(sim, event["sim_seq"])["envelope_id"])
    assert ack["payload"] is None and not ack["late"]
    await client.async_stop()
    assert client.state == "stopped"


async def test_acks_do_not_wait_for_handlers(sim):
    """A handler that waits for its own envelope's ack would wait for ever if acks came after handlers."""
    client = client_for(sim)
    seen_acked: list[bool] = []

    @client.on("message")
    def wait_for_my_ack(c, event):  # a sync handler, on its own thread
        envelope_id = envelope_of(sim, event["sim_seq"])["envelope_id"]
        seen_acked.append(sim.wait_for_ack(envelope_id, 10.0)["envelope_id"] == envelope_id)
        time.sleep(0.2)  # slow: the next events queue behind it, their acks do not

    await client.connect()
    for i in range(5):
        sim.post_message(human(sim), "general", f"m{i}")
    await until(lambda: len(seen_acked) == 5, "five handler calls")
    assert seen_acked == [True] * 5
    assert len(sim.acks) == 5 and not sim.redelivered
    await client.async_stop()


async def test_a_slash_command_is_answered_by_its_handlers_return_value(sim):
    client = client_for(sim)

    @client.on("/deploy")
    def deploy(c, event):
        return f"deploying {event['text']} to {event['channel_id']}"

    @client.on("/other")
    async def other(c, event):
        return {"text": "other", "response_type": "in_channel"}

    await client.connect()
    envelope_id = sim.slash_command("/deploy", "v2", channel="general")
    ack = await ack_of(sim, envelope_id)
    assert ack["payload"] == {"text": f"deploying v2 to {general(sim)}"} and not ack["late"]
    assert [a["text"] for a in sim.command_answers] == [f"deploying v2 to {general(sim)}"]
    assert deploy.__name__ in client.handlers and client.handlers["other"].calls == 0
    await client.async_stop()


async def test_a_late_answer_goes_to_the_response_url_after_an_empty_ack(sim):
    client = client_for(sim)
    released = threading.Event()

    @client.on("/slow")
    def slow(c, event):
        released.wait(10.0)
        return "finally"

    await client.connect()
    envelope_id = sim.slash_command("/slow", "")
    ack = await ack_of(sim, envelope_id)
    assert ack["payload"] is None and not ack["late"]
    # Acked at the deadline (not before: the handler was still busy), within Slack's 3 s (not late).
    assert ack["acked_at"] - ack["sent_at"] >= ANSWER_DEADLINE
    released.set()
    await until(lambda: sim.responses, "the response_url post")
    assert sim.responses[0]["envelope_id"] == envelope_id and sim.responses[0]["body"] == {"text": "finally"}
    assert not sim.slash_timeouts
    await until(lambda: (client.events["type"] == "response").any(), "the answer's record")
    await client.async_stop()


async def test_without_handlers_or_answer_the_ack_is_empty_and_at_once(sim, monkeypatch):
    # A deadline past Slack's 3 s: an ack that waited for it would be late.
    monkeypatch.setattr(connection, "ANSWER_DEADLINE", 30.0)
    client = client_for(sim)

    @client.on("/quiet")
    def quiet(c, event):
        return None

    @client.on("/wrong")
    def wrong(c, event):
        return 42

    await client.connect()
    for command in ("/nobody", "/quiet", "/wrong"):
        ack = await ack_of(sim, sim.slash_command(command, ""))
        assert ack["payload"] is None and not ack["late"]
    assert not sim.slash_timeouts
    await until(lambda: client.counts["error"], "the bad answer's error event")
    error = next(r for r in client.events["raw"] if "bad_answer" in r)
    assert "/wrong" not in error or "not int" in error
    assert "a str or a dict" in error
    await client.async_stop()


async def test_block_actions_and_view_submissions(sim):
    client = client_for(sim)

    @client.on("block_actions")
    def clicked(c, event):
        return {"text": f"you pressed {event['actions'][0]['action_id']}", "response_type": "in_channel"}

    shown: list[tuple[str, str]] = []

    @client.on("message")
    async def seen(c, event):
        shown.append((event["text"], event["channel"]))

    @client.on("view_submission")
    def submitted(c, event):
        return {"response_action": "errors", "errors": {"name": "too short"}}

    await client.connect()
    message = sim.post_message(human(sim), "general", "press the button")
    envelope_id = sim.block_action("approve", value="yes", channel="general", message_ts=message["ts"])
    ack = await ack_of(sim, envelope_id)
    assert ack["payload"] is None  # a block action takes no answer in its ack: it goes to the response_url
    await until(lambda: sim.responses, "the block action's answer")
    assert sim.responses[0]["body"]["text"] == "you pressed approve"
    # In the channel of the message whose button was pressed, as Slack shows it.
    await until(lambda: ("you pressed approve", general(sim)) in shown, "the answer in the channel")
    envelope_id = sim.view_submission("signup", {"name": {"value": "x"}})
    ack = await ack_of(sim, envelope_id)
    assert ack["payload"] == {"response_action": "errors", "errors": {"name": "too short"}}
    await client.async_stop()


async def test_a_refresh_opens_the_next_socket_before_the_old_one_closes(sim):
    client = client_for(sim)
    texts: list[str] = []

    @client.on("message")
    async def collect(c, event):
        texts.append(event["text"])

    await client.connect()
    changes = client.counts["state_change"]
    sim.post_message(human(sim), "general", "before")
    await until(lambda: texts == ["before"], "the first message")
    assert sim.socket_mode_disconnect("refresh_requested") == 1
    await until(lambda: client.connection_number == 2 and sim.socket_mode_connections == 1, "the move to #2")
    sim.post_message(human(sim), "general", "after")
    await until(lambda: texts == ["before", "after"], "the second message")
    frame = client.events
    order = [(t, c) for t, c in zip(frame["type"], frame["connection"]) if t in ("hello", "open", "close")]
    # #2 said hello before #1 was closed; the client never left "connected".
    assert order == [("open", 1), ("hello", 1), ("open", 2), ("hello", 2), ("close", 1)]
    assert client.counts["state_change"] == changes and client.state == "connected"
    assert not sim.undelivered and not sim.redelivered
    await client.async_stop()


async def test_a_redelivery_is_recorded_and_not_run_again(sim):
    calls: Counter = Counter()
    client = client_for(sim)

    @client.on("message")
    async def count(c, event):
        calls[event["sim_seq"]] += 1

    await client.connect()
    sim.ack_timeout = 1e-6  # every envelope is redelivered before its ack can arrive
    sim.post_message(human(sim), "general", "twice on the wire")
    # Slack's three retries, each an envelope the client had already: recorded, marked, not run.
    await until(lambda: client.duplicates == 3 and calls, "the three redeliveries")
    sim.ack_timeout = 3.0
    assert list(calls.values()) == [1]
    assert [r["retry_attempt"] for r in sim.redelivered] == [1, 2, 3]
    rows = client.events
    rows = rows[rows["type"] == "message"]
    assert list(rows["retry_attempt"]) == [0, 1, 2, 3] and list(rows["duplicate"]) == [False, True, True, True]
    assert rows["event_id"].nunique() == 1 and set(rows["transport"]) == {"socket_mode"}
    assert len(client.messages()) == 1  # the DataFrame of messages counts it once
    await client.async_stop()


async def test_link_disabled_stops_with_what_to_do(sim):
    client = client_for(sim)
    await client.connect()
    calls = len(sim.connections_open_calls)
    sim.socket_mode_disconnect("link_disabled")
    await until(lambda: client.state == "stopped", "the stop")
    assert isinstance(client.last_error, SocketModeDisabled)
    assert "Settings > Socket Mode" in str(client.last_error)
    await asyncio.sleep(0.5)
    assert len(sim.connections_open_calls) == calls  # no retry against a switched-off app
    await client.async_stop()


@pytest.mark.parametrize("which, code", [("wrong", "invalid_auth"), ("bot", "not_allowed_token_type")])
async def test_a_refused_app_token_stops_at_once(sim, which, code):
    app_token = "xapp-1-A0-1-" + "0" * 64 if which == "wrong" else sim.token
    client = SocketModeClient(app_token=app_token, token=sim.token, base_url=sim.base_url)
    with pytest.raises(SocketModeConnectError) as caught:
        await client.connect()
    assert caught.value.error == code and isinstance(caught.value, SlackApiError)
    assert "xapp-" in str(caught.value) or "app-level token" in str(caught.value)
    assert app_token not in str(caught.value) and app_token not in repr(client)
    assert client.state == "stopped" and len(sim.connections_open_calls) == 1


async def test_rate_limited_connections_open_waits_retry_after(sim):
    sim.rate_limit_connections_open(1, retry_after=1)
    client = client_for(sim)
    await client.connect()
    calls = sim.connections_open_calls
    assert len(calls) == 2 and calls[1] - calls[0] >= 1.0
    errors = [e for e in client.events["raw"] if '"connect_failed"' in e]
    assert errors and "429" in errors[0]
    await client.async_stop()


async def test_the_app_token_is_in_no_repr_and_no_row(sim):
    client = client_for(sim)
    await client.connect()
    sim.post_message(human(sim), "general", "x")
    await client.wait_for("message", timeout=5)
    await client.async_stop()
    shown = repr(client) + client.events.to_csv()
    assert sim.app_token not in shown and sim.token not in shown
    assert "app_token=xapp-" in repr(client)


async def test_a_star_handler_neither_answers_nor_hurries_the_ack(sim):
    client = client_for(sim)
    seen: list[str] = []

    @client.on("*")
    async def everything(c, event):
        seen.append(event["type"])
        return "not an answer"

    @client.on("/deploy")
    async def deploy(c, event):
        await asyncio.sleep(0.3)  # slower than the star handler
        return "deploying"

    await client.connect()
    ack = await ack_of(sim, sim.slash_command("/deploy", ""))
    assert ack["payload"] == {"text": "deploying"} and "slash_command" in seen
    assert not sim.responses
    await client.async_stop()


async def test_a_bot_token_that_cannot_be_sent_is_said_once_and_events_still_arrive(sim):
    client = SocketModeClient(app_token=sim.app_token, token="xoxb-1 2", base_url=sim.base_url)
    got: list[dict] = []

    @client.on("message")
    async def collect(c, event):
        got.append(event)

    await client.connect()
    sim.post_message(human(sim), "general", "still here")
    await until(lambda: got, "the message")
    assert client.connection_number == 1 and client.state == "connected"
    assert client.counts["error"] == 1 and "xoxb-1 2" not in client.events.to_csv()
    await client.async_stop()


async def test_an_app_token_that_cannot_be_sent_stops_at_once(sim):
    client = SocketModeClient(app_token="xapp-1 2", token=sim.token, base_url=sim.base_url)
    with pytest.raises(SlackClientError) as caught:
        async with asyncio.timeout(10):
            await client.connect()
    assert "app-level token" in str(caught.value) and "xapp-1 2" not in str(caught.value)
    assert client.state == "stopped" and not sim.connections_open_calls
