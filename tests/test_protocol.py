"""The sans-I/O RTM session: decoding, numbering, replies, keepalive, pacing.

No sockets here: protocol.py is pure, so it is tested (and fuzzed) directly.
"""

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtm_notebook.errors import MessageTooLargeError, SlackClientError
from rtm_notebook.outbox import Pacer
from rtm_notebook.rtm.protocol import (
    MAX_FRAME_BYTES,
    MAX_TEXT_CHARS,
    Keepalive,
    Protocol,
    decode,
)


def test_decode_event_and_reply():
    assert decode('{"type":"hello"}') == {"type": "hello"}
    reply = decode('{"ok":true,"reply_to":3,"ts":"1355517523.000005","text":"Hi"}')
    assert reply["reply_to"] == 3 and reply["ts"] == "1355517523.000005"


@pytest.mark.parametrize(
    "frame, code",
    [
        ("not json at all", "not_json"),
        ('{"type": "message"', "not_json"),
        ("[1, 2, 3]", "not_object"),
        ('"hello"', "not_object"),
        ("null", "not_object"),
        ('{"channel": "C1", "text": "no type"}', "no_type"),
        ("[" * 5000 + "]" * 5000, "not_json"),
        ("", "not_json"),
    ],
)
def test_decode_malformed_text_becomes_error_event(frame, code):
    event = decode(frame)
    assert event["type"] == "error"
    assert event["error"]["code"] == code
    assert event["error"]["msg"]
    assert event["raw"] == frame


def test_decode_bytes():
    assert decode(b'{"type":"hello"}') == {"type": "hello"}
    bad = decode(b'{"type":"message","text":"\xff\xfe"}')
    assert bad["type"] == "error" and bad["error"]["code"] == "bad_utf8"
    assert bad["raw"].startswith('{"type":"message"') and "\ufffd" in bad["raw"]
    junk = decode(b"\x00\x01\x02")
    assert junk["type"] == "error" and junk["error"]["code"] == "not_json"
    assert decode(12)["error"]["code"] == "not_text"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_decode_never_raises(frame):
    event = decode(frame)
    assert isinstance(event, dict)
    assert "type" in event or "reply_to" in event
    if event.get("type") == "error" and "raw" in event and isinstance(frame, str):
        # A frame that was turned into an error keeps its text, unless it
        # was itself a valid error event from the server.
        assert event["raw"] == frame or json.loads(frame) == event


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_decode_any_json(value):
    frame = json.dumps(value)
    event = decode(frame)
    if isinstance(value, dict) and ("type" in value or "reply_to" in value):
        assert event == value
    else:
        assert event["type"] == "error" and event["raw"] == frame


def test_ids_positive_unique_and_increasing():
    p = Protocol()
    ids = [p.prepare({"type": "typing", "channel": "C1"})[0] for _ in range(50)]
    assert ids == list(range(1, 51))
    # a caller-chosen id is kept, and never handed out again
    mid, text = p.prepare({"type": "message", "id": 60, "channel": "C1", "text": "x"})
    assert mid == 60 and orjson.loads(text)["id"] == 60
    more = [p.prepare({"type": "typing", "channel": "C1"})[0] for _ in range(20)]
    assert 60 not in more and len(set(more)) == 20 and min(more) > 50


@pytest.mark.parametrize("bad", [0, -1, "3", 2.0, True])
def test_bad_ids_rejected(bad):
    with pytest.raises(SlackClientError, match="positive integer"):
        Protocol().prepare({"type": "message", "id": bad, "channel": "C1", "text": "x"})


def test_duplicate_id_rejected():
    p = Protocol()
    p.prepare({"type": "message", "id": 5, "channel": "C1", "text": "x"})
    with pytest.raises(SlackClientError, match="already used"):
        p.prepare({"type": "message", "id": 5, "channel": "C1", "text": "y"})


def test_prepare_leaves_message_untouched_and_encodes_text():
    p = Protocol()
    msg = {"type": "message", "channel": "C1", "text": "héllo ✓"}
    mid, text = p.prepare(msg)
    assert "id" not in msg
    assert isinstance(text, str) and orjson.loads(text) == {**msg, "id": mid}


@pytest.mark.parametrize("msg", [None, [], {"channel": "C1"}, {"type": ""}, {"type": 3}])
def test_prepare_rejects_non_messages(msg):
    with pytest.raises(SlackClientError):
        Protocol().prepare(msg)


def test_prepare_rejects_unencodable():
    p = Protocol()
    with pytest.raises(SlackClientError, match="JSON"):
        p.prepare({"type": "message", "channel": "C1", "text": "x", "obj": object()})
    # the failed message did not burn its id into the pending table
    assert p.pending == {}


def test_size_limits():
    p = Protocol()
    ok_text = "a" * MAX_TEXT_CHARS
    mid, text = p.prepare({"type": "message", "channel": "C1", "text": ok_text})
    assert len(text.encode()) <= MAX_FRAME_BYTES
    with pytest.raises(MessageTooLargeError, match="4000"):
        p.prepare({"type": "message", "channel": "C1", "text": ok_text + "a"})
    # text within 4000 characters, but the frame over 16 KB once UTF-8 encoded
    with pytest.raises(MessageTooLargeError, match="16384"):
        p.prepare({"type": "message", "channel": "C1", "text": "\U0001f600" * 3999, "thread_ts": "1" * 500})
    # a frame made large by other fields
    with pytest.raises(MessageTooLargeError):
        p.prepare({"type": "presence_sub", "ids": ["U%08d" % i for i in range(2000)]})
    assert list(p.pending) == [mid]


def test_reply_matching_out_of_order():
    p = Protocol()
    a, _ = p.prepare({"type": "message", "channel": "C1", "text": "a"})
    b, _ = p.prepare({"type": "message", "channel": "C1", "text": "b"})
    t, _ = p.prepare({"type": "typing", "channel": "C1"})
    assert set(p.pending) == {a, b}  # typing gets no reply, so it is not kept
    assert p.reply({"ok": True, "reply_to": b, "ts": "2.0"})["text"] == "b"
    assert p.reply({"ok": True, "reply_to": b, "ts": "2.0"}) is None  # duplicate
    assert p.reply({"reply_to": "a"}) is None
    assert p.reply({"reply_to": 999}) is None
    assert p.reply({"ok": True, "reply_to": a})["text"] == "a"
    assert p.pending == {}


def test_abandon_hands_back_pending():
    p = Protocol()
    a, _ = p.prepare({"type": "message", "channel": "C1", "text": "a"})
    assert list(p.abandon()) == [a]
    assert p.pending == {}


def test_keepalive_pings_after_silence_and_declares_dead():
    k = Keepalive(interval=10, timeout=5, now=0)
    assert k.tick(5, frames=0) is None
    assert k.tick(9.9, frames=0) is None
    assert k.tick(10, frames=0) == "ping"
    k.sent_ping(7, now=10)
    assert k.tick(14, frames=0) is None
    assert k.next_check(14) == pytest.approx(1)
    assert k.tick(15, frames=0) == "dead"


def test_keepalive_traffic_and_pong_keep_it_alive():
    k = Keepalive(interval=10, timeout=5, now=0)
    assert k.tick(10, frames=3) is None  # frames arrived: not silent
    assert k.tick(19, frames=3) is None
    assert k.tick(20, frames=3) == "ping"
    k.sent_ping(1, now=20)
    assert not k.pong(2, now=21, frames=4)  # not our ping
    assert k.pong(1, now=22, frames=5)
    assert k.tick(27, frames=5) is None
    assert k.tick(32, frames=5) == "ping"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 20), st.booleans()), max_size=40))
def test_keepalive_never_dead_while_pongs_answer(steps):
    now, frames = 0.0, 0
    k = Keepalive(interval=5, timeout=3, now=now)
    for dt, traffic in steps:
        now += min(dt, 2.9)
        frames += traffic
        action = k.tick(now, frames)
        assert action != "dead"
        if action == "ping":
            k.sent_ping(1, now)
            assert k.pong(1, now, frames)


def test_pacer_burst_then_one_per_second():
    p = Pacer(rate=1.0, burst=3, now=0)
    for _ in range(3):
        assert p.delay(0) == 0
        p.take(0)
    assert p.delay(0) == pytest.approx(1.0)
    assert p.delay(0.5) == pytest.approx(0.5)
    p.take(1.0)
    assert p.delay(1.0) == pytest.approx(1.0)
    assert p.delay(100) == 0  # refills, but never beyond the burst
    for _ in range(3):
        p.take(100)
    assert p.delay(100) > 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 3), min_size=1, max_size=60))
def test_pacer_sustained_rate_holds(gaps):
    """However sends are attempted, honouring delay() keeps any window at rate*t + burst."""
    p = Pacer(rate=1.0, burst=2, now=0)
    now, sent = 0.0, []
    for gap in gaps:
        now += gap
        now += p.delay(now)
        p.take(now)
        sent.append(now)
    for i, start in enumerate(sent):
        in_window = [t for t in sent[i:] if t - start <= 10]
        assert len(in_window) <= 10 * 1.0 + 2 + 1e-9
