"""Replay: a recording played into a client as its transport, handlers and all, sending nothing."""

from __future__ import annotations

import asyncio
import time

import pytest

from rtm_notebook import RTMClient, replay

from rtm_support import GUARD, client_for, general, human, until

SIM_SEED = 8


async def record(sim, path, n: int = 40) -> list[str]:
    """A live session recorded to ``path``: n messages, and what the bot said."""
    rtm = client_for(sim, record_to=str(path))
    await rtm.connect()
    texts = [f"recorded {i}" for i in range(n)]
    for text in texts:
        sim.post_message(human(sim), general(sim), text)
    await until(lambda: (rtm.events["text"] == texts[-1]).any(), "the messages")
    await rtm.send_message(general(sim), "the bot's own reply")
    await rtm.async_stop()
    return texts


@pytest.mark.parametrize("kind", ["jsonl", "dataset"])
async def test_a_recording_plays_into_handlers_as_a_live_session_would(sim, tmp_path, kind):
    path = tmp_path / "events.jsonl" if kind == "jsonl" else f"{tmp_path / 'events'}/"
    texts = await record(sim, path)
    posted_before = len(sim.posted)
    client = replay(path, speed=None)
    seen, said = [], []

    @client.on("message", match="^recorded ")
    async def answer(c, event):
        seen.append(event["text"])
        said.append(await say_in(c, event))
        await c.web_client.chat_postMessage(channel=event["channel"], text="via the Web API")

    done = asyncio.ensure_future(client.wait_for("replay_end"))  # the event, for handlers and wait_for
    await asyncio.wait_for(client.finished(), GUARD)
    await asyncio.wait_for(done, GUARD)
    await until(lambda: len(said) == len(texts), "every handler call")
    await client.async_stop()
    assert seen == texts  # in order, once each; the client's own rows were not replayed
    assert all(r["ok"] and r["text"].startswith("hi ") for r in said)
    df = client.events
    out = df[df["direction"] == "out"]
    assert (out["type"] == "message").sum() == len(texts)  # what say() would have sent, recorded
    assert (out["type"] == "api_call").sum() == len(texts)  # and the Web API calls
    assert len(sim.posted) == posted_before  # nothing reached any workspace
    assert (df["type"] == "replay_end").sum() == 1


async def say_in(client, event):
    return await client.send_message(event["channel"], f"hi {event['text']}")


async def test_speed_paces_the_replay_by_the_recorded_gaps(sim, tmp_path):
    path = tmp_path / "slow.jsonl"
    rtm = client_for(sim, record_to=str(path))
    await rtm.connect()
    sim.post_message(human(sim), general(sim), "first")
    await until(lambda: (rtm.events["text"] == "first").any(), "first")
    await asyncio.sleep(1.0)
    sim.post_message(human(sim), general(sim), "second")
    await until(lambda: (rtm.events["text"] == "second").any(), "second")
    await rtm.async_stop()
    arrivals = {}
    client = replay(path, speed=4.0)
    client.on("message")(lambda c, e: arrivals.setdefault(e["text"], time.monotonic()))
    await client.connect()
    await until(lambda: "second" in arrivals, "the second message", guard=GUARD)
    await client.async_stop()
    gap = arrivals["second"] - arrivals["first"]
    assert 0.1 < gap < 1.0  # about 1 s recorded, played at 4x: a hang guard, not a timing assert


async def test_a_slack_export_replays_its_messages(sim, tmp_path):
    path = sim.export(tmp_path / "export.zip")
    client = replay(path, speed=None)
    seen = []
    client.on("message")(lambda c, e: seen.append((e["channel"], e["ts"])))
    await asyncio.wait_for(client.finished(), GUARD)
    await until(lambda: len(seen) > 100, "the export's messages")
    await client.async_stop()
    assert [ts for _, ts in seen] == sorted(ts for _, ts in seen)
    assert client.channel_names  # names come from the export


def test_bad_speed_and_missing_recordings_say_so(tmp_path):
    with pytest.raises(ValueError, match="speed must be a positive factor"):
        replay(tmp_path / "x.jsonl", speed=0)
    with pytest.raises(FileNotFoundError):
        replay(tmp_path / "missing.jsonl")
    assert RTMClient  # the seed client is untouched by replay


def test_rtm_connect_replay_plays_into_cell_handlers(sim, tmp_path, shell, capsys):
    path = tmp_path / "events.jsonl"
    texts = asyncio.run(record(sim, path, n=10))
    posted_before = len(sim.posted)
    result = shell.run_cell(f"%rtm_connect --replay {path} --speed 0")
    assert result.error_in_exec is None, result.error_in_exec
    assert "replaying" in capsys.readouterr().out
    shell.run_cell("%%rtm_on message --match ^recorded\nsay('seen: ' + event['text'])")
    rtm = shell.user_ns["rtm"]
    assert (rtm.events["text"] == texts[0]).sum() == 0  # paused at hello, for the handler cells
    shell.run_cell("rtm.play()")
    deadline = time.monotonic() + GUARD
    while (rtm.events["direction"] == "out").sum() < len(texts):
        assert time.monotonic() < deadline, "the handler never answered every replayed message"
        time.sleep(0.05)
    out = rtm.events[rtm.events["direction"] == "out"]
    assert sorted(out["text"]) == sorted(f"seen: {t}" for t in texts)
    assert len(sim.posted) == posted_before
    bad = shell.run_cell("%rtm_connect --replay /no/such/recording.jsonl")
    assert "no such file" in str(bad.error_in_exec)


async def test_a_backfill_only_recording_replays_oldest_first(sim, tmp_path):
    path = tmp_path / "history.jsonl"
    rtm = client_for(sim, record_to=str(path))
    await rtm.connect()
    await rtm.backfill("#general", threads=False)
    await rtm.async_stop()
    played = []
    past = replay(path, speed=None)
    past.on("message")(lambda c, e: played.append(e["ts"]))
    await asyncio.wait_for(past.finished(), GUARD)
    await past.async_stop()
    assert len(played) > 200 and played == sorted(played)


def socket_mode_recording(path) -> list[dict]:
    """A Socket Mode session's recording, as its client makes one: envelopes as they came
    (one received twice, marked duplicate), its acks, hello and disconnect, its own events."""
    import orjson

    from rtm_notebook.events import EventFrame

    def message(i: int, retry: int = 0) -> dict:
        return {"envelope_id": f"env-{i}-{retry}", "type": "events_api", "accepts_response_payload": False,
                "retry_attempt": retry, "retry_reason": "timeout" if retry else "",
                "payload": {"type": "event_callback", "event_id": f"Ev{i}", "team_id": "T1",
                            "event": {"type": "message", "channel": "C1", "user": "U1", "text": f"sm {i}",
                                      "ts": f"{1700000000 + i}.000100", "channel_type": "channel"}}}

    frames = [{"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}},
              message(1), message(2), message(1, retry=1),
              {"envelope_id": "env-slash", "type": "slash_commands", "accepts_response_payload": True,
               "payload": {"command": "/deploy", "text": "prod", "user_id": "U2", "channel_id": "C2"}},
              {"envelope_id": "env-block", "type": "interactive",
               "payload": {"type": "block_actions", "user": {"id": "U3"}, "channel": {"id": "C3", "name": "ops"},
                           "container": {"channel_id": "C3", "message_ts": "5.000500"},
                           "actions": [{"action_id": "go"}]}},
              {"type": "disconnect", "reason": "warning"}]
    frame = EventFrame(record_to=path)
    frame.transport = "socket_mode"
    frame.append({"type": "state_change", "state": "connecting", "previous": "disconnected"})
    frame.extend([orjson.dumps(f) for f in frames[:3]], time.time(), connection=1, events=frames[:3])
    frame.extend([orjson.dumps(f) for f in frames[3:]], time.time(), connection=1, events=frames[3:], duplicates=[0])
    for f in frames[1:6]:
        frame.append({"envelope_id": f["envelope_id"]}, direction="out", connection=1)  # the acks
    frame.close()
    return frames


@pytest.mark.parametrize("kind", ["jsonl", "dataset"])
async def test_a_socket_mode_recording_replays_inner_events_once(tmp_path, kind):
    path = tmp_path / "sm.jsonl" if kind == "jsonl" else f"{tmp_path / 'sm'}/"
    frames = socket_mode_recording(path)
    client = replay(path, speed=None)
    got = []
    client.on("*")(lambda c, e: got.append(e))
    await asyncio.wait_for(client.finished(), GUARD)
    await client.async_stop()
    played = [e for e in got if e.get("type") not in ("state_change", "open", "hello", "replay_end", "close")]
    assert [e["type"] for e in played] == ["message", "message", "slash_command", "block_actions"]
    assert played[0] == frames[1]["payload"]["event"]  # what the envelope carried, not the envelope
    assert [e.get("text") for e in played[:2]] == ["sm 1", "sm 2"]  # the redelivered sm 1 was not played again
    assert played[2] == {**frames[4]["payload"], "type": "slash_command"}
    assert played[3] == frames[5]["payload"]
    df = client.events
    replayed = df[df["envelope_id"].notna()]
    assert replayed["envelope_id"].tolist() == ["env-1-0", "env-2-0", "env-slash", "env-block"]
    assert replayed["type"].tolist() == ["message", "message", "slash_command", "block_actions"]
    assert not replayed["duplicate"].any() and df["transport"].isna().all()  # a replay is no live session
