"""Recordings as a Parquet dataset: written by the client, safe against SIGKILL, read by
EventFrame.read (columns and time range pushed down), DuckDB and Spark in place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rtm_notebook import datasets
from rtm_notebook.events import EventFrame

from rtm_support import GUARD, client_for, general, human, until

SIM_SEED = 9
DAY = 86_400.0
T0 = 1_764_547_200.0  # 2025-12-01 00:00:00 UTC


def journals(root) -> list[str]:
    return [n for n in os.listdir(os.path.join(root, datasets.JOURNAL)) if n.endswith(".jsonl")]


def synthetic(root, n: int = 3000, per_day: int = 1000) -> EventFrame:
    """n messages over n // per_day days in three channels, recorded to root."""
    frame = EventFrame(record_to=root)
    for i in range(n):
        event = {"type": "message", "channel": f"C{i % 3}", "user": f"U{i % 7}", "text": f"m{i}",
                 "ts": f"{T0 + i:.6f}"}
        frame.append(event, orjson.dumps(event), received_at=T0 + (i // per_day) * DAY + i)
    frame.close()
    return frame


def test_a_client_records_a_dataset_that_reads_back_the_same(sim, tmp_path):
    async def run():
        rtm = client_for(sim, record_to=str(tmp_path / "events") + "/")
        await rtm.connect()
        sim.burst(3000)
        for i in range(5):
            sim.post_message(human(sim), general(sim), f"hello {i}")
        await until(lambda: (rtm.events["text"] == "hello 4").any(), "the messages")
        await rtm.async_stop()
        return rtm.events

    import asyncio

    live = asyncio.run(run())
    assert not journals(tmp_path / "events")  # the open part was written on stop
    back = EventFrame.read(tmp_path / "events").to_pandas()
    pd.testing.assert_frame_equal(back.drop(columns=["raw"]), live.drop(columns=["raw"]), check_dtype=False)
    assert back["raw"].tolist() == live["raw"].tolist()


def test_rows_roll_into_parts_by_day_and_count(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "ROLL_ROWS", 500)
    synthetic(str(tmp_path / "events") + "/")
    days = sorted(os.listdir(tmp_path / "events"))
    assert days == ["_journal", "date=2025-12-01", "date=2025-12-02", "date=2025-12-03"]
    parts = sorted(os.listdir(tmp_path / "events" / "date=2025-12-02"))
    assert len(parts) == 2 and all(p.endswith(".parquet") for p in parts)
    assert len(EventFrame.read(tmp_path / "events")) == 3000


def test_columns_and_time_range_are_pushed_down(tmp_path):
    root = tmp_path / "events"
    synthetic(str(root) + "/")
    # A day outside the range that cannot be read: a pushed-down read never opens it.
    (bad,) = os.listdir(root / "date=2025-12-03")
    (root / "date=2025-12-03" / bad).write_bytes(b"PAR1 not really parquet")
    frame = EventFrame.read(root, columns=["channel"], start=T0 + DAY, end="2025-12-03T00:00:00+00:00")
    df = frame.to_pandas()
    assert len(df) == 1000 and df["seq"].tolist() == list(range(1000, 2000))
    assert df["channel"].notna().all() and df["text"].isna().all() and df["raw"].isna().all()
    counts = df.groupby("channel").size().to_dict()
    assert counts == {"C0": 333, "C1": 334, "C2": 333}  # seq 1000 to 1999


def test_json_lines_recordings_take_the_same_selection(tmp_path):
    path = tmp_path / "events.jsonl"
    synthetic(path)
    df = EventFrame.read(path, columns=["user"], start=T0 + DAY, end=T0 + 2 * DAY).to_pandas()
    assert len(df) == 1000 and df["user"].notna().all() and df["channel"].isna().all()


def test_duckdb_queries_the_dataset_in_place(tmp_path):
    import duckdb

    root = tmp_path / "events"
    synthetic(str(root) + "/")
    rows = duckdb.sql(f"select channel, count(*) from read_parquet('{root}/**/*.parquet', hive_partitioning=true) "
                      "group by channel order by channel").fetchall()
    assert rows == [("C0", 1000), ("C1", 1000), ("C2", 1000)]
    day = duckdb.sql(f"select count(*) from read_parquet('{root}/**/*.parquet', hive_partitioning=true) "
                     "where date = '2025-12-02'").fetchall()
    assert day == [(1000,)]


@pytest.mark.timeout(300)
def test_spark_reads_the_dataset_as_it_is(tmp_path):
    root = tmp_path / "events"
    synthetic(str(root) + "/")
    script = textwrap.dedent(f"""
        from pyspark.sql import SparkSession
        spark = (SparkSession.builder.master("local[1]").appName("rtm-notebook-test")
                 .config("spark.ui.enabled", "false").config("spark.sql.session.timeZone", "UTC").getOrCreate())
        df = spark.read.parquet({str(root)!r})
        print(sorted((r["channel"], r["count"]) for r in df.groupBy("channel").count().collect()))
        print(df.filter(df.date == "2025-12-02").count(), dict(df.dtypes)["received_at"])
        spark.stop()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "[('C0', 1000), ('C1', 1000), ('C2', 1000)]"
    assert lines[-1] == "1000 timestamp"


def test_a_dataset_of_another_schema_is_refused_saying_what_differs(tmp_path):
    root = tmp_path / "foreign"
    (root / "date=2025-12-01").mkdir(parents=True)
    pq.write_table(pa.table({"received_at": pa.array([1.0]), "msg": pa.array(["x"])}),
                   root / "date=2025-12-01" / "part-0.parquet")
    with pytest.raises(ValueError, match=r"lacks type, subtype.*has msg besides.*received_at is double"):
        EventFrame.read(root)
    with pytest.raises(ValueError, match="not an rtm_notebook dataset"):
        EventFrame(record_to=str(root) + "/")


# -- a kernel killed by SIGKILL loses nothing a handler had seen --------------------------

CHILD = """
import asyncio, os, sys
from rtm_notebook import RTMClient

async def main():
    rtm = RTMClient(token=sys.argv[1], base_url=sys.argv[2], record_to=sys.argv[3])
    seen = os.open(sys.argv[4], os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    @rtm.on("message")
    async def saw(client, event):
        os.write(seen, (event["event_ts"] + "\\n").encode())

    await rtm.connect()
    os.write(seen, b"ready\\n")
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_sigkill_loses_no_event_a_handler_had_seen(sim, tmp_path):
    root = str(tmp_path / "events") + "/"
    seen_path = tmp_path / "seen.txt"
    child = subprocess.Popen([sys.executable, "-c", CHILD, sim.token, sim.base_url, root, str(seen_path)])
    try:
        deadline = time.monotonic() + GUARD
        while not (seen_path.exists() and b"ready" in seen_path.read_bytes()):
            assert time.monotonic() < deadline and child.poll() is None, "the child never connected"
            time.sleep(0.05)
        sim.set_rate(2000)
        while seen_path.read_bytes().count(b"\n") < 500:
            assert time.monotonic() < deadline, "the child saw too few messages"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(GUARD)
    finally:
        sim.set_rate(0)
        if child.poll() is None:
            child.kill()
    seen = {line for line in seen_path.read_text().split("\n")[1:] if line}
    assert len(seen) >= 500
    # Reading includes the journal the dead process left, without changing it ...
    recorded = set(EventFrame.read(root).to_pandas()["event_ts"].dropna())
    assert seen <= recorded
    assert journals(root)
    # ... and the next recorder folds it into Parquet, numbering on after it.
    frame = EventFrame(record_to=root)
    assert not journals(root)
    before = len(EventFrame.read(root))
    frame.append({"type": "note"})
    frame.close()
    after = EventFrame.read(root).to_pandas()
    assert len(after) == before + 1 and after["seq"].is_unique and after["seq"].iloc[-1] == before
    assert seen <= set(after["event_ts"].dropna())


def test_one_writer_per_dataset(tmp_path):
    root = str(tmp_path / "events") + "/"
    first = EventFrame(record_to=root)
    with pytest.raises(ValueError, match="another EventFrame is recording"):
        EventFrame(record_to=root)
    first.close()
    EventFrame(record_to=root).close()  # free again once the first has closed


def test_a_read_while_recording_sees_every_row_written_before_it(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(datasets, "ROLL_ROWS", 50)
    root = str(tmp_path / "events") + "/"
    frame = EventFrame(record_to=root)
    written = [0]
    stop = threading.Event()

    def write():
        while not stop.is_set() and written[0] < 3000:
            frame.append({"type": "message", "text": f"m{written[0]}"}, received_at=T0 + written[0])
            written[0] += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(20):
            before = written[0]
            seqs = EventFrame.read(root).to_pandas()["seq"].tolist()
            assert seqs == list(range(len(seqs))) and len(seqs) >= before  # no gap, nothing twice
    finally:
        stop.set()
        writer.join()
        frame.close()


def test_a_column_selection_keeps_direction(tmp_path):
    root = str(tmp_path / "events") + "/"
    frame = EventFrame(record_to=root)
    frame.append({"type": "message", "channel": "C1", "text": "in"}, received_at=T0)
    frame.append({"type": "message", "channel": "C1", "text": "out"}, direction="out", received_at=T0 + 1)
    frame.close()
    df = EventFrame.read(root, columns=["channel"]).to_pandas()
    assert df["direction"].tolist() == ["in", "out"]


ENVELOPES = [
    {"type": "hello", "num_connections": 1},
    {"envelope_id": "e1", "type": "events_api", "retry_attempt": 0, "retry_reason": "",
     "payload": {"type": "event_callback", "event_id": "Ev1",
                 "event": {"type": "message", "channel": "C1", "user": "U1", "text": "hi", "ts": "1.000100"}}},
    {"envelope_id": "e2", "type": "events_api", "retry_attempt": 1, "retry_reason": "timeout",
     "payload": {"type": "event_callback", "event_id": "Ev1",
                 "event": {"type": "message", "channel": "C1", "user": "U1", "text": "hi", "ts": "1.000100"}}},
    {"envelope_id": "e3", "type": "slash_commands",
     "payload": {"command": "/go", "text": "now", "user_id": "U2", "channel_id": "C2"}},
    {"envelope_id": "e4", "type": "interactive",
     "payload": {"type": "block_actions", "user": {"id": "U3"}, "channel": {"id": "C3", "name": "x"},
                 "container": {"channel_id": "C3", "message_ts": "2.000200"}}},
]


def test_a_dataset_keeps_transport_envelopes_and_duplicates(tmp_path):
    root = str(tmp_path / "events") + "/"
    frame = EventFrame(record_to=root)
    frame.transport = "socket_mode"
    frame.extend([orjson.dumps(e) for e in ENVELOPES], T0, connection=1, events=ENVELOPES, duplicates=[2])
    frame.append({"type": "message", "channel": "C1", "text": "old", "ts": "0.1"}, direction="history",
                 received_at=T0 - DAY)
    frame.close()
    live = frame.to_pandas()
    back = EventFrame.read(root).to_pandas()
    pd.testing.assert_frame_equal(back.drop(columns="raw"), live.drop(columns="raw"))
    assert back["transport"].tolist() == ["socket_mode"] * 5 + [pd.NA]
    assert back["duplicate"].tolist() == [pd.NA, False, True, False, False, pd.NA]
    assert back["retry_attempt"].tolist() == [pd.NA, 0, 1, pd.NA, pd.NA, pd.NA]
    assert back["type"].tolist() == ["hello", "message", "message", "slash_command", "block_actions", "message"]
    assert back["channel"].tolist() == [pd.NA, "C1", "C1", "C2", "C3", "C1"]
    schema = pq.read_schema(next((tmp_path / "events").glob("date=*/*.parquet")))
    assert schema.remove_metadata().equals(datasets.DATASET_SCHEMA)
    picked = EventFrame.read(root, columns=["event_id"]).to_pandas()
    assert picked["event_id"].tolist() == [pd.NA, "Ev1", "Ev1", pd.NA, pd.NA, pd.NA]
    assert picked["duplicate"].isna().all() and picked["channel"].isna().all()


def test_a_dataset_written_before_the_socket_mode_columns_still_reads(tmp_path):
    root = tmp_path / "events"
    (root / "date=2025-12-01").mkdir(parents=True)
    (root / datasets.JOURNAL).mkdir()
    old = datasets.LEGACY_SCHEMA
    assert old.names == [c for c in datasets.COLUMNS if c not in (
        "transport", "envelope_type", "envelope_id", "event_id", "retry_attempt", "duplicate")]

    def old_row(i: int) -> dict:
        event = {"type": "message", "channel": "C1", "user": "U1", "text": f"m{i}", "ts": f"{T0 + i:.6f}"}
        return {"received_at": T0 + i, "type": "message", "subtype": None, "channel": "C1", "user": "U1",
                "text": f"m{i}", "ts": event["ts"], "thread_ts": None, "event_ts": None, "reply_to": None,
                "direction": "in", "connection": 1, "seq": i, "raw": orjson.dumps(event).decode()}

    rows = [old_row(i) for i in range(3)]
    table = pa.Table.from_pylist([{**r, "received_at": pd.Timestamp(r["received_at"], unit="s", tz="UTC")}
                                  for r in rows], schema=old)
    pq.write_table(table, root / "date=2025-12-01" / f"part-{0:020d}-{2:020d}.parquet")
    # and a journal an old writer left behind, its lines without the new keys
    (root / datasets.JOURNAL / f"{1:020d}.jsonl").write_bytes(b"".join(orjson.dumps(old_row(i)) + b"\n"
                                                                       for i in range(3, 5)))
    df = EventFrame.read(root).to_pandas()
    assert df["text"].tolist() == [f"m{i}" for i in range(5)] and df["seq"].tolist() == list(range(5))
    for name in ("transport", "envelope_type", "envelope_id", "event_id", "retry_attempt", "duplicate"):
        assert df[name].isna().all(), name
    assert df["retry_attempt"].dtype == pd.Int64Dtype() and df["duplicate"].dtype == pd.BooleanDtype()
    assert EventFrame.read(root, columns=["transport", "text"]).to_pandas()["text"].tolist()[-1] == "m4"
    # Recording on folds the old journal and adds parts with the new columns; both read.
    frame = EventFrame(record_to=str(root) + "/")
    frame.transport = "rtm"
    assert frame.append({"type": "message", "text": "new"}, received_at=T0 + 5) == 5
    frame.close()
    df = EventFrame.read(root).to_pandas()
    assert df["text"].tolist() == [f"m{i}" for i in range(5)] + ["new"]
    assert df["transport"].tolist() == [pd.NA] * 5 + ["rtm"]
