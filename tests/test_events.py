"""EventFrame: schema, append-only views, eviction, recording to a file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pandas.testing as pdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtm_notebook.events import CHUNK_ROWS, COLUMNS, EventFrame

STRING_COLUMNS = ["type", "subtype", "channel", "user", "text", "ts", "thread_ts", "event_ts", "direction",
                  "transport", "envelope_type", "envelope_id", "event_id", "raw"]


def message(i: int, channel: str = "C1", user: str = "U1") -> dict:
    return {"type": "message", "channel": channel, "user": user, "text": f"hello {i}",
            "ts": f"{1700000000 + i}.{i % 1000000:06d}"}


def fill(frame: EventFrame, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        frame.append(message(i), received_at=1700000000.0 + i / 1000)


def check_schema(df: pd.DataFrame) -> None:
    assert list(df.columns) == COLUMNS
    assert str(df["received_at"].dtype) == "datetime64[us, UTC]"
    for name in STRING_COLUMNS:
        assert df[name].dtype == pd.StringDtype("pyarrow"), name
    assert df["reply_to"].dtype == pd.Int64Dtype() and df["retry_attempt"].dtype == pd.Int64Dtype()
    assert df["duplicate"].dtype == pd.BooleanDtype()
    assert df["connection"].dtype == np.int64
    assert df["seq"].dtype == np.int64


def test_empty_frame_has_the_schema():
    frame = EventFrame()
    df = frame.to_pandas()
    assert len(frame) == 0 and len(df) == 0
    check_schema(df)


def test_columns_and_dtypes_of_a_message():
    frame = EventFrame()
    event = {"type": "message", "channel": "C024BE91L", "user": "U2147483697", "text": "Hello world",
             "ts": "1355517523.000005", "thread_ts": "1355517500.000001"}
    raw = orjson.dumps(event).decode()
    seq = frame.append(event, raw, received_at=1355517523.5)
    assert seq == 0
    df = frame.to_pandas()
    check_schema(df)
    row = df.iloc[0]
    assert row["received_at"] == pd.Timestamp("2012-12-14 20:38:43.5", tz="UTC")
    assert (row["type"], row["channel"], row["user"], row["text"]) == ("message", "C024BE91L", "U2147483697", "Hello world")
    assert row["ts"] == "1355517523.000005" and row["thread_ts"] == "1355517500.000001"
    assert row["subtype"] is pd.NA and row["event_ts"] is pd.NA and row["reply_to"] is pd.NA
    assert (row["direction"], row["connection"], row["seq"], row["raw"]) == ("in", 0, 0, raw)


def test_raw_is_encoded_when_not_given_and_reply_to_is_an_integer():
    frame = EventFrame()
    frame.append({"type": "message", "ok": True, "reply_to": 7, "ts": "1.000001", "text": "sent"},
                 direction="out", connection=3)
    row = frame.to_pandas().iloc[0]
    assert orjson.loads(row["raw"]) == {"type": "message", "ok": True, "reply_to": 7, "ts": "1.000001", "text": "sent"}
    assert (row["reply_to"], row["direction"], row["connection"]) == (7, "out", 3)


def test_seq_is_global_across_connections_and_starts_at_zero():
    frame = EventFrame()
    seqs = [frame.append(message(i), connection=i % 3) for i in range(10)]
    assert seqs == list(range(10))
    df = frame.to_pandas()
    assert df["seq"].tolist() == seqs and df["connection"].tolist() == [i % 3 for i in range(10)]
    assert df.index.tolist() == seqs


def test_received_at_defaults_to_now():
    import time

    frame = EventFrame()
    before = time.time()
    frame.append(message(0))
    after = time.time()
    at = frame.to_pandas()["received_at"].iloc[0].timestamp()
    assert before - 1e-6 <= at <= after + 1e-6


def test_nested_channel_user_and_message_fields_are_extracted():
    frame = EventFrame()
    events = [
        {"type": "channel_created", "channel": {"id": "C9", "name": "new", "created": 1, "creator": "U1"}},
        {"type": "team_join", "user": {"id": "U7", "name": "ann", "profile": {}}},
        {"type": "im_created", "user": "U3", "channel": {"id": "D4"}},
        {"type": "message", "subtype": "message_changed", "hidden": True, "channel": "C1", "ts": "2.000002",
         "message": {"type": "message", "user": "U5", "text": "edited text", "ts": "1.000001",
                     "thread_ts": "0.000009"}},
        {"type": "reaction_added", "user": "U6", "reaction": "+1", "item_user": "U5",
         "item": {"type": "message", "channel": "C8", "ts": "1.000001"}, "event_ts": "3.000003"},
        {"type": "message", "subtype": "bot_message", "ts": "4.000004", "text": "beep", "bot_id": "B1"},
    ]
    for event in events:
        frame.append(event)
    df = frame.to_pandas()
    assert df["channel"].tolist() == ["C9", pd.NA, "D4", "C1", "C8", pd.NA]
    assert df["user"].tolist() == [pd.NA, "U7", "U3", "U5", "U6", pd.NA]
    assert df["text"].tolist() == [pd.NA, pd.NA, pd.NA, "edited text", pd.NA, "beep"]
    assert df["ts"].tolist() == [pd.NA, pd.NA, pd.NA, "2.000002", pd.NA, "4.000004"]
    assert df["thread_ts"].tolist() == [pd.NA, pd.NA, pd.NA, "0.000009", pd.NA, pd.NA]
    assert df["event_ts"].tolist() == [pd.NA, pd.NA, pd.NA, pd.NA, "3.000003", pd.NA]
    assert df["subtype"].tolist() == [pd.NA, pd.NA, pd.NA, "message_changed", pd.NA, "bot_message"]


def test_odd_values_are_kept_as_json_text_and_never_lost():
    frame = EventFrame()
    frame.append({"type": 5, "channel": ["C1"], "text": True, "reply_to": "12", "user": "\ud800x"})
    frame.append({"type": "pong", "reply_to": 2**70})
    frame.append({"type": "pong", "reply_to": 0.5})
    frame.append({"type": "pong", "reply_to": True})
    df = frame.to_pandas()
    row = df.iloc[0]
    assert (row["type"], row["channel"], row["text"]) == ("5", '["C1"]', "true")
    assert row["user"] == "\\ud800x"
    assert df["reply_to"].isna().all()
    assert json.loads(df["raw"].iloc[1]) == {"type": "pong", "reply_to": 2**70}
    assert "\\ud800" in row["raw"]


def test_events_that_are_no_json_at_all_are_still_recorded(tmp_path):
    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    cyclic: dict = {"type": "message", "text": "loop"}
    cyclic["self"] = cyclic
    path = tmp_path / "events.jsonl"
    with warnings.catch_warnings():  # the writer must not need to report anything
        warnings.simplefilter("error")
        frame = EventFrame(record_to=path)
        frame.append(cyclic)
        frame.append({"type": "message", "text": BadRepr(), "user": {1, 2}})
        frame.append(message(1))
        frame.close()
    df = frame.to_pandas()
    assert df["type"].tolist() == ["message"] * 3
    assert df["text"].tolist()[0::2] == ["loop", "hello 1"]
    assert "BadRepr object whose repr() failed" in df["text"].iloc[1]
    assert "self" in df["raw"].iloc[0]
    pdt.assert_frame_equal(EventFrame.read(path).to_pandas(), df)


def test_error_event_with_raw_text_that_is_not_json_is_recorded(tmp_path):
    path = tmp_path / "events.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the writer must not need to report anything
        frame = EventFrame(record_to=path)
        frame.append({"type": "error", "error": "frame is not JSON"}, raw="{not json at all")
        frame.append({"type": "error", "error": "binary frame"}, raw=b"\xff\x00binary")
        frame.close()
    df = frame.to_pandas()
    assert df["type"].tolist() == ["error", "error"]
    assert df["raw"].iloc[0] == "{not json at all"
    assert df["raw"].iloc[1] == "\\xff\x00binary"
    pdt.assert_frame_equal(EventFrame.read(path).to_pandas(), df)


def test_frames_recorded_as_bytes_keep_their_exact_text_across_chunks():
    # The client records each frame's bytes as received; non-ASCII text
    # must come back exactly, sealed or not, and bytes that are not UTF-8
    # are kept escaped with the columns taken from the event.
    frame = EventFrame()
    n = CHUNK_ROWS + 5
    texts = [f"héllo {i} 👋" if i % 3 else f"hello {i}" for i in range(n)]
    raws = [orjson.dumps({**message(i), "text": texts[i]}) for i in range(n)]
    for raw in raws:
        frame.append(orjson.loads(raw), raw)
    frame.append(message(n), b'{"type":"message","text":"\xff"}')  # not UTF-8
    frame.append({**message(n + 1), "text": "\ud800"}, '{"type":"message","text":"\ud800"}')  # lone surrogate
    df = frame.to_pandas()
    assert df["raw"].iloc[:n].tolist() == [raw.decode() for raw in raws]
    assert df["text"].iloc[:n].tolist() == texts
    assert df["raw"].iloc[n] == '{"type":"message","text":"\\xff"}' and df["text"].iloc[n] == f"hello {n}"
    assert df["type"].iloc[n + 1] == "message" and df["raw"].iloc[n + 1] == '{"type":"message","text":"\\ud800"}'


def test_bad_input_raises_a_clear_error_and_records_nothing():
    frame = EventFrame()
    with pytest.raises(TypeError, match="event as a dict"):
        frame.append(["not", "a", "dict"])
    with pytest.raises(ValueError, match='"in", "out" or "history"'):
        frame.append(message(0), direction="sideways")
    with pytest.raises(TypeError, match="connection must be an int"):
        frame.append(message(0), connection="first")
    with pytest.raises(ValueError, match="non-negative session number"):
        frame.append(message(0), connection=2**64)
    with pytest.raises(ValueError, match=r"time\.time\(\) seconds"):
        frame.append(message(0), received_at=float("nan"))
    with pytest.raises(TypeError, match="received_at"):
        frame.append(message(0), received_at="yesterday")
    with pytest.raises(ValueError, match="max_rows"):
        EventFrame(max_rows=0)
    assert len(frame) == 0
    assert frame.append(message(0), connection=np.int64(2)) == 0
    assert frame.to_pandas()["connection"].tolist() == [2]


def test_returned_frames_never_change_and_new_access_has_old_plus_new():
    frame = EventFrame()
    fill(frame, 10)
    first = frame.to_pandas()
    snapshot = first.copy(deep=True)
    fill(frame, CHUNK_ROWS + 5, start=10)  # crosses a chunk boundary
    second = frame.to_pandas()
    pdt.assert_frame_equal(first, snapshot)
    assert len(second) == CHUNK_ROWS + 15 == len(frame)
    pdt.assert_frame_equal(second.iloc[:10], snapshot)
    assert second["seq"].tolist() == list(range(CHUNK_ROWS + 15))
    assert second["text"].iloc[-1] == f"hello {CHUNK_ROWS + 14}"


def test_frame_is_cached_until_new_rows_arrive():
    frame = EventFrame()
    fill(frame, 3)
    df = frame.to_pandas()
    assert frame.to_pandas() is df
    frame.append(message(99))
    df2 = frame.to_pandas()
    assert df2 is not df and len(df2) == 4
    assert frame.to_pandas() is df2


def test_many_chunks_materialise_in_order():
    frame = EventFrame()
    n = 3 * CHUNK_ROWS + 17
    fill(frame, n)
    df = frame.to_pandas()
    assert len(df) == n
    assert df["seq"].tolist() == list(range(n))
    assert df["ts"].iloc[CHUNK_ROWS] == message(CHUNK_ROWS)["ts"]
    assert (df["received_at"].diff().dropna() > pd.Timedelta(0)).all()


def test_max_rows_evicts_oldest_chunks_and_keeps_counting():
    frame = EventFrame(max_rows=100)
    fill(frame, 50)
    early = frame.to_pandas()
    early_copy = early.copy(deep=True)
    lengths = []
    for i in range(50, 1000):
        frame.append(message(i))
        lengths.append(len(frame))
    assert max(lengths) <= 100
    assert min(lengths[100:]) >= 50
    df = frame.to_pandas()
    assert len(df) == len(frame)
    seqs = df["seq"].tolist()
    assert seqs[-1] == 999 and seqs == list(range(seqs[0], 1000))
    assert df.index.tolist() == list(range(len(df)))
    pdt.assert_frame_equal(early, early_copy)  # evicted rows stay in frames returned earlier


def test_max_rows_of_one_keeps_the_newest_row():
    frame = EventFrame(max_rows=1)
    for i in range(5):
        frame.append(message(i))
        assert len(frame) == 1
    assert frame.to_pandas()["seq"].tolist() == [4]


def test_max_rows_bounds_memory_but_the_recording_keeps_everything(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventFrame(max_rows=10, record_to=path) as frame:
        fill(frame, 100)
    assert len(frame) <= 10
    assert EventFrame.read(path).to_pandas()["seq"].tolist() == list(range(100))


def test_record_to_round_trip(tmp_path):
    path = tmp_path / "events.jsonl"
    frame = EventFrame(record_to=path)
    fill(frame, CHUNK_ROWS + 3)
    frame.append({"type": "error", "error": "not JSON"}, raw="<<garbage")
    frame.append({"type": "channel_created", "channel": {"id": "C5"}}, direction="out", connection=4)
    frame.append({"type": "pong", "reply_to": 3, "x": float("nan")})  # raw (null) differs from the event
    frame.close()
    frame.close()  # idempotent
    loaded = EventFrame.read(path)
    pdt.assert_frame_equal(loaded.to_pandas(), frame.to_pandas())
    assert loaded.append(message(0)) == frame.append(message(0))  # seq continues


async def test_record_to_from_a_running_loop(tmp_path):
    path = tmp_path / "events.jsonl"
    frame = EventFrame(record_to=path)

    async def intake(connection: int) -> None:
        for i in range(200):
            frame.append(message(i, channel=f"C{connection}"), connection=connection)
            if i % 50 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(intake(1), intake(2))
    # Written promptly by the background thread, without close().
    for _ in range(500):
        if path.read_bytes().count(b"\n") == 400:
            break
        await asyncio.sleep(0.01)
    assert path.read_bytes().count(b"\n") == 400
    frame.close()
    loaded = EventFrame.read(path).to_pandas()
    pdt.assert_frame_equal(loaded, frame.to_pandas())
    assert sorted(loaded["seq"]) == list(range(400))


def test_recording_to_an_existing_file_continues_seq(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventFrame(record_to=path) as first:
        fill(first, 5)
    with EventFrame(record_to=path) as second:
        assert second.append(message(100)) == 5
        assert len(second) == 1
    loaded = EventFrame.read(path).to_pandas()
    assert loaded["seq"].tolist() == list(range(6))
    assert loaded["text"].iloc[-1] == "hello 100"


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventFrame(record_to=path) as frame:
        fill(frame, 20)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 30])  # the writer was killed mid-line
    with pytest.warns(RuntimeWarning, match=r"skipped 1 unreadable line\(s\) \(line 20\)"):
        loaded = EventFrame.read(path)
    pdt.assert_frame_equal(loaded.to_pandas(), frame.to_pandas().iloc[:19])

    # Recording again after the crash keeps the cut line apart from new ones.
    with EventFrame(record_to=path) as again:
        assert again.append(message(50)) == 19
    with pytest.warns(RuntimeWarning, match="line 20"):
        reloaded = EventFrame.read(path).to_pandas()
    assert reloaded["seq"].tolist() == list(range(20))
    assert reloaded["text"].iloc[-1] == "hello 50"


def test_unwritable_record_to_fails_at_construction(tmp_path):
    with pytest.raises(OSError):
        EventFrame(record_to=tmp_path / "missing-dir" / "events.jsonl")


def test_recording_is_flushed_at_interpreter_exit(tmp_path):
    path = tmp_path / "events.jsonl"
    script = (
        "from rtm_notebook.events import EventFrame\n"
        f"frame = EventFrame(record_to={str(path)!r})\n"
        "for i in range(3000):\n"
        "    frame.append({'type': 'message', 'text': str(i)})\n"
        # no close(): the interpreter-exit hook must flush
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    loaded = EventFrame.read(path).to_pandas()
    assert loaded["text"].tolist() == [str(i) for i in range(3000)]


def test_reading_while_appending_from_another_thread_gives_consistent_frames():
    frame = EventFrame(max_rows=3 * CHUNK_ROWS)
    total = 5 * CHUNK_ROWS
    done = threading.Event()
    problems: list[str] = []
    frames: list[pd.DataFrame] = []

    def reader() -> None:
        while not done.is_set():
            df = frame.to_pandas()
            seqs = df["seq"].to_numpy()
            if len(seqs) and not (np.diff(seqs) == 1).all():
                problems.append(f"gap in seq: {seqs[:5]}..")
            if not (df["text"].to_numpy() == np.array([f"hello {s}" for s in seqs], dtype=object)).all():
                problems.append("text does not match seq")
            frames.append(df)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        fill(frame, total)
    finally:
        done.set()
        thread.join(timeout=60)
    assert not problems
    assert len(frames) >= 1
    last_seen = [int(df["seq"].iloc[-1]) for df in frames if len(df)]
    assert last_seen == sorted(last_seen)
    assert frame.to_pandas()["seq"].iloc[-1] == total - 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
event_dicts = st.dictionaries(
    st.sampled_from(["type", "subtype", "channel", "user", "text", "ts", "thread_ts", "event_ts", "reply_to",
                     "message", "item"]) | st.text(max_size=8),
    json_values,
    max_size=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event_dicts, max_size=30), pass_raw=st.booleans())
def test_any_json_events_are_all_recorded_and_raw_round_trips(events, pass_raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no line may be unreadable
            frame = EventFrame(record_to=path)
            for event in events:
                frame.append(event, json.dumps(event) if pass_raw else None)
            frame.close()
            df = frame.to_pandas()
            assert len(df) == len(frame) == len(events)
            assert [json.loads(raw) for raw in df["raw"]] == events
            check_schema(df)
            pdt.assert_frame_equal(EventFrame.read(path).to_pandas(), df)
            lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
            assert [list(line) for line in lines] == [COLUMNS] * len(events)
            assert [line["raw"] for line in lines] == df["raw"].tolist()


def test_error_events_say_why_in_text(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventFrame(record_to=path) as frame:
        frame.append({"type": "error", "error": {"code": "not_json", "msg": "frame is not valid JSON"},
                      "raw": "{oops"}, raw="{oops")
        frame.append({"type": "error", "error": {"msg": "no code here"}})
        frame.append({"type": "error", "text": "own text wins", "error": {"code": "x", "msg": "y"}})
        frame.append({"type": "error", "error": "a plain string"})
        frame.append({"type": "message", "error": {"code": "x", "msg": "not an error event"}})
    df = frame.to_pandas()
    assert df["text"].tolist() == ["not_json: frame is not valid JSON", "no code here", "own text wins", pd.NA, pd.NA]
    assert df["raw"].iloc[0] == "{oops"
    pdt.assert_frame_equal(EventFrame.read(path).to_pandas(), df)


def test_odd_rows_among_many_plain_ones_keep_their_values():
    frame = EventFrame()
    n = CHUNK_ROWS + 300
    odd = {
        5: ({"type": "error", "error": {"code": "bad_utf8", "msg": "not UTF-8"}}, b"\xff\xfe"),
        6: ({"type": "error", "error": {"code": "not_json", "msg": "nope"}}, "{not json"),
        700: ({"type": "channel_created", "channel": {"id": "C77", "name": "x"}}, None),
        701: ({"type": "team_join", "user": {"id": "U77"}, "reply_to": 1.5}, None),
        CHUNK_ROWS + 3: ({"type": 7, "text": ["a"], "channel": 3}, None),
    }
    for i in range(n):
        event, raw = odd.get(i, (message(i), None))
        frame.append(event, orjson.dumps(event).decode() if raw is None else raw,
                     direction="out" if i % 500 < 3 else "in", connection=i // 1000)
    df = frame.to_pandas()
    assert df["text"].iloc[5] == "bad_utf8: not UTF-8" and df["raw"].iloc[5] == "\\xff\\xfe"
    assert df["text"].iloc[6] == "not_json: nope" and df["raw"].iloc[6] == "{not json"
    assert (df["channel"].iloc[700], df["user"].iloc[701], df["type"].iloc[701]) == ("C77", "U77", "team_join")
    assert df["reply_to"].iloc[701] is pd.NA
    assert (df["type"].iloc[CHUNK_ROWS + 3], df["text"].iloc[CHUNK_ROWS + 3], df["channel"].iloc[CHUNK_ROWS + 3]) == (
        "7", '["a"]', "3")
    plain = [i for i in range(n) if i not in odd]
    assert df["text"].iloc[plain].tolist() == [f"hello {i}" for i in plain]
    assert df["direction"].tolist() == ["out" if i % 500 < 3 else "in" for i in range(n)]
    assert df["connection"].tolist() == [i // 1000 for i in range(n)]


def test_a_view_of_the_partial_chunk_matches_the_sealed_chunk():
    frame = EventFrame()
    fill(frame, 100)
    created = {"type": "channel_created", "channel": {"id": "C5"}}
    frame.append(created, orjson.dumps(created).decode())
    early = frame.to_pandas()
    fill(frame, CHUNK_ROWS, start=101)
    pdt.assert_frame_equal(frame.to_pandas().iloc[:101], early)
    assert early["channel"].iloc[100] == "C5"


ids = st.text(alphabet="CUDG0123456789", min_size=1, max_size=6)
int64s = st.integers(-(2**63), 2**63 - 1)  # wider ints do not survive the client's orjson.loads
odd_scalars = (st.none() | st.booleans() | int64s | st.floats(allow_nan=False, allow_infinity=False)
               | st.text(max_size=6) | st.lists(int64s, max_size=2))
id_like = ids | st.fixed_dictionaries({"id": ids | odd_scalars}, optional={"name": st.text(max_size=4)}) | odd_scalars
shaped_events = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "reaction_added", "channel_created", "team_join", "error"]) | odd_scalars},
    optional={
        "subtype": st.sampled_from(["message_changed", "bot_message"]) | odd_scalars,
        "channel": id_like, "user": id_like, "text": st.text(max_size=12) | odd_scalars,
        "ts": st.text("0123456789.", max_size=8) | odd_scalars, "thread_ts": st.text(max_size=4) | odd_scalars,
        "event_ts": st.text(max_size=4) | odd_scalars,
        "reply_to": int64s | odd_scalars,
        "item": st.fixed_dictionaries({}, optional={"channel": id_like, "ts": st.text(max_size=4)}) | odd_scalars,
        "message": st.fixed_dictionaries({}, optional={"user": id_like, "text": st.text(max_size=8) | odd_scalars,
                                                       "thread_ts": st.text(max_size=4) | odd_scalars,
                                                       "edited": st.dictionaries(st.text(max_size=3), odd_scalars)})
        | odd_scalars,
        "error": st.fixed_dictionaries({}, optional={"code": st.text(max_size=4) | odd_scalars,
                                                     "msg": st.text(max_size=6) | odd_scalars}) | odd_scalars,
        "channel_id": ids | odd_scalars, "user_id": ids | odd_scalars,
        "container": st.fixed_dictionaries({}, optional={
            "channel_id": ids | odd_scalars, "message_ts": st.text("0123456789.", max_size=8) | odd_scalars})
        | odd_scalars,
    },
)
# Socket Mode envelopes around such events: the payload is an event (slash
# commands, interactive) or holds one (events_api), with the envelope's own
# fields in any shape too.
payloads = st.builds(lambda event, extra: {**event, **extra}, shaped_events, st.fixed_dictionaries(
    {}, optional={"event_id": st.text("Ev0123", max_size=5) | odd_scalars, "event": shaped_events | odd_scalars}))
envelopes = st.fixed_dictionaries(
    {"envelope_id": st.text("0123abc", max_size=6),
     "type": st.sampled_from(["events_api", "slash_commands", "interactive", "hello"]) | odd_scalars,
     "payload": payloads | odd_scalars},
    optional={"retry_attempt": int64s | odd_scalars, "retry_reason": st.text(max_size=4),
              "accepts_response_payload": st.booleans(), "reply_to": int64s | odd_scalars,
              "channel": id_like})
EXTRACTED = ["type", "subtype", "channel", "user", "text", "ts", "thread_ts", "event_ts", "reply_to",
             "envelope_type", "envelope_id", "event_id", "retry_attempt", "duplicate"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(shaped_events | envelopes, max_size=40), plain=st.integers(0, 60), ascii_json=st.booleans())
def test_columns_derived_from_raw_equal_those_extracted_from_the_event(events, plain, ascii_json):
    # Plain messages around the generated events make blocks that pyarrow's
    # reader takes, so both extraction paths (and the split between them) run.
    events = [message(i) for i in range(plain)] + events + [message(i) for i in range(plain)]
    lazy, eager = EventFrame(), EventFrame()
    for event in events:
        # bytes, as the client passes a frame: its columns are derived from it later
        lazy.append(event, json.dumps(event).encode() if ascii_json else orjson.dumps(event))
        eager.append(event)  # raw=None: extracted from the event dict at append time
    pdt.assert_frame_equal(lazy.to_pandas()[EXTRACTED], eager.to_pandas()[EXTRACTED])


def test_chunks_derived_in_the_background_match_and_eviction_keeps_up(monkeypatch):
    from rtm_notebook import events as events_module

    monkeypatch.setattr(events_module, "_LAZY_CHUNKS", 1)  # every chunk but the newest goes to the background
    frame = EventFrame(max_rows=3 * CHUNK_ROWS)
    n = 6 * CHUNK_ROWS + 10
    for i in range(n):
        event = {"type": "channel_created", "channel": {"id": f"C{i}"}} if i % 1000 == 7 else message(i)
        frame.append(event, orjson.dumps(event).decode())
    df = frame.to_pandas()
    seqs = df["seq"].tolist()
    assert seqs == list(range(seqs[0], n)) and len(seqs) <= 3 * CHUNK_ROWS
    assert df["channel"].tolist() == [f"C{s}" if s % 1000 == 7 else "C1" for s in seqs]
    assert df["text"].tolist() == [pd.NA if s % 1000 == 7 else f"hello {s}" for s in seqs]


def test_a_null_reply_to_is_no_reply_on_both_paths(tmp_path):
    event = {"reply_to": None, "ok": True}
    frame = EventFrame(record_to=tmp_path / "e.jsonl")
    frame.append(event, orjson.dumps(event))
    frame.append({"reply_to": 3, "ok": True}, b'{"reply_to":3,"ok":true}')
    frame.close()
    for df in (frame.to_pandas(), EventFrame.read(tmp_path / "e.jsonl").to_pandas()):
        assert df["type"].isna().tolist() == [True, False] and df["type"][1] == "reply"


# -- Socket Mode envelopes, transport, duplicates -------------------------------------------

def events_api(i: int, event: dict | None = None, retry: int = 0) -> dict:
    event = event or {"type": "message", "channel": "C1", "user": "U1", "text": f"hi {i}", "ts": f"{i}.000200",
                      "event_ts": f"{i}.000200", "channel_type": "channel"}
    return {"envelope_id": f"env-{i}-{retry}", "type": "events_api",
            "payload": {"token": "x", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
                        "event_id": f"Ev{i}", "event_time": 1, "authorizations": [{"user_id": "U0"}], "event": event},
            "accepts_response_payload": False, "retry_attempt": retry, "retry_reason": "timeout" if retry else ""}


SLASH = {"envelope_id": "env-slash", "type": "slash_commands", "accepts_response_payload": True,
         "payload": {"command": "/deploy", "text": "prod now", "user_id": "U2", "user_name": "ann",
                     "channel_id": "C2", "channel_name": "general", "team_id": "T1", "response_url": "https://r",
                     "trigger_id": "tr1", "api_app_id": "A1"}}
BLOCK_ACTION = {"envelope_id": "env-block", "type": "interactive", "accepts_response_payload": False,
                "payload": {"type": "block_actions", "user": {"id": "U3", "username": "bo", "team_id": "T1"},
                            "api_app_id": "A1", "trigger_id": "tr2", "team": {"id": "T1"},
                            "container": {"type": "message", "message_ts": "5.000500", "channel_id": "C3",
                                          "is_ephemeral": False},
                            "channel": {"id": "C3", "name": "ops"},
                            "message": {"type": "message", "user": "U0", "text": "Deploy?", "ts": "5.000500",
                                        "thread_ts": "4.000400"},
                            "response_url": "https://r2", "actions": [{"action_id": "go", "value": "1"}]}}
VIEW_SUBMISSION = {"envelope_id": "env-view", "type": "interactive", "accepts_response_payload": True,
                   "payload": {"type": "view_submission", "user": {"id": "U4", "name": "cy"}, "team": {"id": "T1"},
                               "trigger_id": "tr3", "view": {"id": "V1", "callback_id": "form",
                                                             "state": {"values": {}}}}}
HELLO = {"type": "hello", "num_connections": 1, "debug_info": {"host": "applink-1"},
         "connection_info": {"app_id": "A1"}}
DISCONNECT = {"type": "disconnect", "reason": "warning", "debug_info": {"host": "applink-1"}}
SOCKET_MODE = [HELLO, events_api(1), SLASH, BLOCK_ACTION, VIEW_SUBMISSION, DISCONNECT]
ENVELOPE_COLUMNS = ["type", "subtype", "channel", "user", "text", "ts", "thread_ts", "event_ts",
                    "envelope_type", "envelope_id", "event_id", "retry_attempt", "duplicate"]


def socket_mode_frame(events: list[dict], **kwargs) -> tuple[EventFrame, EventFrame]:
    """The events recorded as the Socket Mode client records them (bytes, derived
    later: the Arrow path, or the Python rules where it refuses a block) and
    appended without raw (extracted at append time: the Python rules)."""
    lazy, eager = EventFrame(), EventFrame()
    lazy.extend([orjson.dumps(e) for e in events], 1700000000.0, connection=1, **kwargs)
    for event in events:
        eager.append(event, connection=1, received_at=1700000000.0)
    return lazy, eager


def test_envelope_rows_take_their_inner_events_columns():
    lazy, eager = socket_mode_frame(SOCKET_MODE)
    df = lazy.to_pandas()
    check_schema(df)
    pdt.assert_frame_equal(df[ENVELOPE_COLUMNS], eager.to_pandas()[ENVELOPE_COLUMNS])
    rows = df[ENVELOPE_COLUMNS].astype(object).where(df[ENVELOPE_COLUMNS].notna(), None).to_dict("records")
    nothing = dict.fromkeys(ENVELOPE_COLUMNS)
    assert rows[0] == {**nothing, "type": "hello"}
    assert rows[1] == {**nothing, "type": "message", "channel": "C1", "user": "U1", "text": "hi 1", "ts": "1.000200",
                       "event_ts": "1.000200", "envelope_type": "events_api", "envelope_id": "env-1-0",
                       "event_id": "Ev1", "retry_attempt": 0, "duplicate": False}
    assert rows[2] == {**nothing, "type": "slash_command", "channel": "C2", "user": "U2", "text": "prod now",
                       "envelope_type": "slash_commands", "envelope_id": "env-slash", "duplicate": False}
    assert rows[3] == {**nothing, "type": "block_actions", "channel": "C3", "user": "U3", "text": "Deploy?",
                       "ts": "5.000500", "thread_ts": "4.000400", "envelope_type": "interactive",
                       "envelope_id": "env-block", "duplicate": False}
    assert rows[4] == {**nothing, "type": "view_submission", "user": "U4", "envelope_type": "interactive",
                       "envelope_id": "env-view", "duplicate": False}
    assert rows[5] == {**nothing, "type": "disconnect"}
    assert df["reply_to"].isna().all() and df["transport"].isna().all()


def test_events_api_and_slash_command_blocks_are_read_by_arrow_not_the_python_rules(monkeypatch):
    from rtm_notebook import events as events_module

    python_rows = []
    fields_of_raw = events_module._fields_of_raw
    monkeypatch.setattr(events_module, "_fields_of_raw", lambda raw: python_rows.append(raw) or fields_of_raw(raw))
    shaped = [events_api(2, {"type": "message", "subtype": "message_changed", "channel": "C1", "ts": "3.0",
                             "message": {"user": "U9", "text": "edited", "thread_ts": "2.0"}}),
              events_api(3, {"type": "reaction_added", "user": "U8", "reaction": "eyes", "event_ts": "3.5",
                             "item": {"type": "message", "channel": "C7", "ts": "3.0"}}),
              {"envelope_id": "env-4", "type": "events_api", "payload": {"type": "app_rate_limited", "team_id": "T"}},
              {"envelope_id": "env-5", "type": "custom_kind", "payload": {"text": "t", "channel_id": "C5"}},
              {"envelope_id": "env-6", "type": "events_api", "payload": "not an object?"},
              {"envelope_id": "ack-only"}]  # an acknowledgement: no payload, so no envelope
    events = [HELLO] + [events_api(i) for i in range(40)] + [SLASH] + shaped[:4] + [DISCONNECT, shaped[5]]
    lazy, eager = socket_mode_frame(events + [message(i) for i in range(40)])
    df = lazy.to_pandas()
    assert python_rows == []
    pdt.assert_frame_equal(df[ENVELOPE_COLUMNS], eager.to_pandas()[ENVELOPE_COLUMNS])
    edit, reaction, limited, custom = (df.iloc[42 + i] for i in range(4))
    assert (edit["user"], edit["text"], edit["thread_ts"]) == ("U9", "edited", "2.0")
    assert edit["subtype"] == "message_changed"
    assert (reaction["channel"], reaction["user"], reaction["event_ts"]) == ("C7", "U8", "3.5")
    assert (limited["type"], limited["envelope_type"], limited["event_id"]) == ("app_rate_limited", "events_api", pd.NA)
    assert (custom["type"], custom["channel"], custom["text"]) == ("custom_kind", "C5", "t")
    assert df["envelope_id"].iloc[47] is pd.NA and df["duplicate"].iloc[47] is pd.NA  # the ack
    # A payload that is no object: the reader refuses it, the Python rules take it.
    lazy, eager = socket_mode_frame([shaped[4]])
    assert lazy.to_pandas()["type"].tolist() == ["events_api"] == eager.to_pandas()["type"].tolist()


def test_a_null_payload_is_an_envelope_on_both_paths():
    events = [events_api(i) for i in range(30)] + [{"envelope_id": "e-null", "type": "events_api", "payload": None},
                                                   {"envelope_id": "e-none", "type": "events_api"}]
    lazy, eager = socket_mode_frame(events)
    df = lazy.to_pandas()
    pdt.assert_frame_equal(df[ENVELOPE_COLUMNS], eager.to_pandas()[ENVELOPE_COLUMNS])
    assert df["envelope_id"].tolist()[-2:] == ["e-null", pd.NA]
    assert df["type"].tolist()[-2:] == ["events_api", "events_api"]


def test_inner_event_is_what_each_envelope_carries():
    from rtm_notebook.fields import channel_of, inner_event, is_envelope, user_of

    envelope = events_api(1)
    assert inner_event(envelope) is envelope["payload"]["event"]  # the same object: nothing copied for the common case
    slash = inner_event(SLASH)
    assert slash == {**SLASH["payload"], "type": "slash_command"} and "type" not in SLASH["payload"]
    assert inner_event(BLOCK_ACTION) is BLOCK_ACTION["payload"]
    assert inner_event({"envelope_id": "e", "type": "new_kind", "payload": {"a": 1}}) == {"a": 1, "type": "new_kind"}
    assert inner_event({"envelope_id": "e", "type": "interactive", "payload": [1]}) == {"type": "interactive"}
    assert inner_event({"envelope_id": "e", "type": "events_api", "payload": None}) == {"type": "events_api"}
    assert inner_event(HELLO) is HELLO and not is_envelope(HELLO) and is_envelope(SLASH)
    assert not is_envelope({"envelope_id": 5, "payload": {}}) and not is_envelope({"envelope_id": "ack"})
    assert (channel_of(slash), user_of(slash)) == ("C2", "U2")
    block = inner_event(BLOCK_ACTION)
    assert (channel_of(block), user_of(block)) == ("C3", "U3")
    assert channel_of({"container": {"channel_id": "C9"}}) == "C9"
    assert user_of(inner_event(VIEW_SUBMISSION)) == "U4" and channel_of(inner_event(VIEW_SUBMISSION)) is None


def test_transport_is_kept_as_runs_and_history_rows_have_none():
    frame = EventFrame()
    assert frame.transport is None
    frame.append(message(0))  # a bare frame: no transport
    frame.transport = "rtm"
    fill(frame, 3, start=1)
    frame.append(message(4), direction="history")
    frame.append(message(5), direction="out")
    frame.transport = "socket_mode"
    frame.extend([orjson.dumps(events_api(i)) for i in range(CHUNK_ROWS)], 1700000001.0, connection=2)
    frame.append(message(6), direction="history")
    frame.transport = None
    frame.append(message(7))
    df = frame.to_pandas()
    check_schema(df)
    expected = [pd.NA, "rtm", "rtm", "rtm", pd.NA, "rtm"] + ["socket_mode"] * CHUNK_ROWS + [pd.NA, pd.NA]
    assert df["transport"].tolist() == expected
    assert frame._chunks[0].n == CHUNK_ROWS  # the change mid-chunk, then a sealed chunk of runs
    with pytest.raises(ValueError, match="transport must be"):
        frame.transport = "carrier pigeon"
    assert frame.transport is None


def test_duplicates_are_marked_across_chunks_and_recorded(tmp_path):
    frame = EventFrame(record_to=tmp_path / "events.jsonl")
    frame.transport = "socket_mode"
    fill(frame, CHUNK_ROWS - 2)
    envelopes = [events_api(i, retry=i % 2) for i in range(6)]
    frame.extend([orjson.dumps(e) for e in envelopes], 1700000005.0, connection=1, events=envelopes,
                 duplicates={1, 4})
    frame.close()
    plain = EventFrame()  # the intake path without a recorder
    plain.transport = "socket_mode"
    fill(plain, CHUNK_ROWS - 2)
    plain.extend([orjson.dumps(e) for e in envelopes], 1700000005.0, connection=1, duplicates=[1, 4])
    for df in (frame.to_pandas(), plain.to_pandas(), EventFrame.read(tmp_path / "events.jsonl").to_pandas()):
        tail = df.iloc[CHUNK_ROWS - 2:]
        assert tail["duplicate"].tolist() == [False, True, False, False, True, False]
        assert tail["retry_attempt"].tolist() == [0, 1, 0, 1, 0, 1]
        assert tail["event_id"].tolist() == [f"Ev{i}" for i in range(6)]
        assert df["duplicate"].iloc[:CHUNK_ROWS - 2].isna().all()
    pdt.assert_frame_equal(EventFrame.read(tmp_path / "events.jsonl").to_pandas(), frame.to_pandas())
    pdt.assert_frame_equal(plain.to_pandas().drop(columns="received_at"), frame.to_pandas().drop(columns="received_at"))
    # messages() shows a message received twice once
    assert plain.messages()["text"].tolist().count("hi 1") == 0 and plain.messages()["text"].tolist().count("hi 0") == 1


def test_a_recording_with_envelopes_round_trips(tmp_path):
    path = tmp_path / "events.jsonl"
    frame = EventFrame(record_to=path)
    frame.transport = "socket_mode"
    frame.append({"type": "state_change", "state": "connecting", "previous": "disconnected"})
    frame.extend([orjson.dumps(e) for e in SOCKET_MODE], 1700000000.0, connection=1, events=SOCKET_MODE,
                 duplicates=[1])
    frame.append({"envelope_id": "env-slash", "payload": {"text": "done"}}, direction="out", connection=1)
    frame.append(message(1), direction="history")
    frame.close()
    df = frame.to_pandas()
    check_schema(df)
    pdt.assert_frame_equal(EventFrame.read(path).to_pandas(), df)
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [list(line) for line in lines] == [COLUMNS] * len(df)
    assert [line["transport"] for line in lines] == ["socket_mode"] * 8 + [None]
    assert [line["duplicate"] for line in lines] == [None, None, True, False, False, False, None, False, None]
    picked = EventFrame.read(path, columns=["envelope_id"]).to_pandas()
    assert picked["envelope_id"].tolist() == df["envelope_id"].tolist() and picked["transport"].isna().all()


def test_an_old_recording_without_the_socket_mode_columns_reads_with_nulls(tmp_path):
    path = tmp_path / "old.jsonl"
    old_columns = [c for c in COLUMNS if c not in ("transport", "envelope_type", "envelope_id", "event_id",
                                                   "retry_attempt", "duplicate")]
    with path.open("wb") as f:
        for i in range(3):
            event = message(i)
            row = {"received_at": 1700000000.0 + i, **{c: event.get(c) for c in old_columns[1:10]},
                   "direction": "in", "connection": 1, "seq": i, "raw": orjson.dumps(event).decode()}
            assert list(row) == old_columns
            f.write(orjson.dumps(row) + b"\n")
    df = EventFrame.read(path).to_pandas()
    check_schema(df)
    assert df["text"].tolist() == ["hello 0", "hello 1", "hello 2"]
    for name in ("transport", "envelope_type", "envelope_id", "event_id", "retry_attempt", "duplicate"):
        assert df[name].isna().all(), name
    assert EventFrame.read(path, columns=["user"]).to_pandas()["user"].tolist() == ["U1"] * 3
    with EventFrame(record_to=path) as more:  # recording on continues it, with the new columns
        more.transport = "rtm"
        assert more.append(message(3)) == 3
    assert EventFrame.read(path).to_pandas()["transport"].tolist() == [pd.NA, pd.NA, pd.NA, "rtm"]


strings = st.text(max_size=6)
well_shaped_event = st.fixed_dictionaries({}, optional={
    **{name: strings for name in ("type", "subtype", "channel", "user", "text", "ts", "thread_ts", "event_ts",
                                  "channel_id", "user_id")},
    "item": st.fixed_dictionaries({}, optional={"channel": strings}),
    "message": st.fixed_dictionaries({}, optional={"user": strings, "text": strings, "thread_ts": strings}),
    "container": st.fixed_dictionaries({}, optional={"channel_id": strings, "message_ts": strings}),
})
well_shaped_envelopes = st.fixed_dictionaries(
    {"envelope_id": strings,
     "type": st.sampled_from(["events_api", "slash_commands", "interactive", "other"]),
     "payload": st.builds(lambda event, extra: {**event, **extra}, well_shaped_event, st.fixed_dictionaries(
         {}, optional={"event_id": strings, "event": well_shaped_event}))},
    optional={"retry_attempt": st.integers(0, 3), "reply_to": st.integers(0, 9)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(well_shaped_envelopes | well_shaped_event, min_size=1, max_size=60))
def test_well_shaped_envelopes_are_derived_by_arrow_as_by_the_python_rules(events):
    from rtm_notebook import events as events_module

    lazy, eager = socket_mode_frame(events)
    chunk = events_module._Chunk.from_runs(lazy._times, events_module._held(lazy._texts), {}, lazy._runs, 0)
    arrow = events_module._read_json(chunk.raw, True)  # raises if the reader refused any row: none may be
    assert len(arrow[0]) == len(events)
    pdt.assert_frame_equal(lazy.to_pandas()[EXTRACTED], eager.to_pandas()[EXTRACTED])
