"""Recordings as a Parquet dataset that pandas, DuckDB and Spark read in place.

Layout of ``record_to="events/"``::

    events/
      date=2026-12-01/part-00000000000000000000-00000000000000099999.parquet
      date=2026-12-02/part-…                    (hive partitioning by UTC day)
      _journal/00000000000000100000.jsonl       (the open part; "_" hides it from Spark)

One Parquet file per day per part, named by its first and last ``seq``, with
the EventFrame's columns (``DATASET_SCHEMA``; the day is the directory's).
The part being filled lives in a journal: every batch of rows is appended
to it with one ``write`` before its events reach any handler, so a process
that dies, even by SIGKILL, loses nothing a handler had seen (the OS keeps
what was written; only a machine crash could lose the last writes). A
background thread turns each full part (``ROLL_ROWS`` rows or
``ROLL_SECONDS`` old) into Parquet files and removes its journal; whoever
opens the dataset next folds any journal left behind into Parquet first.
Every Parquet file is written under a hidden name and renamed into place,
and folding skips the days already written, so it is safe to repeat.
A dataset written before the Socket Mode columns existed (``transport`` to
``duplicate``, ``LEGACY_SCHEMA``) reads with those columns null, journals
left by such a writer fold the same way, and recording on adds parts that
have them.

Nothing here knows the EventFrame: what comes in are journal lines (one
JSON object per row with every column, the format of a JSON-lines
recording, made by events.py), read back by pyarrow's JSON reader; ``parse``
(events.py's, one line to a row tuple in ``COLUMNS`` order) reads the lines
that reader refuses.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import queue
import re
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.json as pa_json
import pyarrow.parquet as pq

__all__ = ["ADDED_COLUMNS", "DATASET_SCHEMA", "LEGACY_SCHEMA", "DatasetRecorder", "as_utc", "check_columns",
           "is_dataset_path", "read_dataset"]

ROLL_ROWS = 100_000
ROLL_SECONDS = 60.0
JOURNAL = "_journal"
_PART = re.compile(r"part-(\d{20})-(\d{20})\.parquet")

DATASET_SCHEMA = pa.schema([
    ("received_at", pa.timestamp("us", tz="UTC")),
    *[(name, pa.string()) for name in ("type", "subtype", "channel", "user", "text", "ts", "thread_ts", "event_ts")],
    ("reply_to", pa.int64()), ("direction", pa.string()), ("connection", pa.int64()), ("seq", pa.int64()),
    *[(name, pa.string()) for name in ("transport", "envelope_type", "envelope_id", "event_id")],
    ("retry_attempt", pa.int64()), ("duplicate", pa.bool_()),
    ("raw", pa.string()),
])
COLUMNS = DATASET_SCHEMA.names
#: The columns added for Socket Mode: a recording made before has none of them (they read as nulls).
ADDED_COLUMNS = ("transport", "envelope_type", "envelope_id", "event_id", "retry_attempt", "duplicate")
#: What datasets written before the Socket Mode columns hold.
LEGACY_SCHEMA = pa.schema([f for f in DATASET_SCHEMA if f.name not in ADDED_COLUMNS])
#: read whatever columns are asked for: a row without them means little
ALWAYS_READ = ("received_at", "direction", "seq")


def is_dataset_path(path: str | os.PathLike) -> bool:
    """A Parquet dataset is asked for with a directory: an existing one, or a path ending in a separator."""
    text = os.fspath(path)
    return text.endswith(("/", os.sep)) or os.path.isdir(text)


_JSON_OPTIONS = pa_json.ParseOptions(explicit_schema=pa.schema(
    [("received_at", pa.float64())] + [(f.name, f.type) for f in DATASET_SCHEMA][1:]),
    unexpected_field_behavior="ignore")


def _table(lines: list[bytes], parse: Callable[[bytes], tuple | None]) -> pa.Table:
    """Journal lines as a table; lines pyarrow's reader refuses go through ``parse``
    (and are dropped when that fails too: a line cut short by a crash)."""
    try:
        table = pa_json.read_json(pa.BufferReader(b"".join(lines)), parse_options=_JSON_OPTIONS,
                                  read_options=pa_json.ReadOptions(use_threads=False, block_size=1 << 26))
        if table.num_rows != len(lines):
            raise ValueError("row count")
        seconds = table.column("received_at")
    except (pa.ArrowException, ValueError):
        rows = [row for row in map(parse, lines) if row is not None]
        cols = list(zip(*rows)) if rows else [()] * len(COLUMNS)
        table = pa.Table.from_arrays([pa.array(c, type=f.type if i else pa.float64())
                                      for i, (c, f) in enumerate(zip(cols, DATASET_SCHEMA))], schema=_JSON_OPTIONS.explicit_schema)
        seconds = table.column("received_at")
    micros = pc.cast(pc.round(pc.multiply(seconds, 1e6)), pa.int64())
    return table.set_column(0, DATASET_SCHEMA.field(0), pc.cast(micros, DATASET_SCHEMA.field(0).type))


def _write_part(root: str, table: pa.Table) -> None:
    """Write rows as one Parquet file per day (skipping days already written), atomically."""
    if not table.num_rows:
        return
    seqs = table.column("seq")
    name = f"part-{pc.min(seqs).as_py():020d}-{pc.max(seqs).as_py():020d}.parquet"
    days = pc.strftime(table.column("received_at"), format="%Y-%m-%d").to_numpy(zero_copy_only=False)
    for day in sorted(set(days)):
        folder = os.path.join(root, f"date={day}")
        target = os.path.join(folder, name)
        if os.path.exists(target):
            continue
        os.makedirs(folder, exist_ok=True)
        hidden = os.path.join(folder, f".{name}.tmp")
        pq.write_table(table.filter(pa.array(days == day)), hidden, compression="zstd")
        os.replace(hidden, target)


def fold_journals(root: str, parse: Callable[[bytes], tuple | None]) -> int:
    """Turn journals left by a process that died into Parquet; return the rows folded.
    (The recorder's, at open, holding the dataset's lock: one writer per dataset.)"""
    folded = 0
    for path, lines in _journals(root):
        table = _table(lines, parse)
        _write_part(root, table)
        folded += table.num_rows
        os.remove(path)
    return folded


def last_seq(root: str) -> int | None:
    """The last ``seq`` written to the dataset (from the part names)."""
    best = None
    for _dirpath, _dirs, files in os.walk(root):
        for name in files:
            m = _PART.fullmatch(name)
            if m:
                best = max(best or 0, int(m.group(2)))
    return best


def check_schema(root: str) -> None:
    """Refuse a dataset whose first file holds other columns or types, saying what
    differs. (Only the first: a read pushed down to some days opens no other.)
    A dataset written before the Socket Mode columns (LEGACY_SCHEMA) is fine:
    its files read with those columns null, and new parts have them."""
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".parquet") and not name.startswith("."):
                schema = pq.read_schema(os.path.join(dirpath, name))
                schema = schema.remove_metadata()
                if schema.equals(DATASET_SCHEMA) or schema.equals(LEGACY_SCHEMA):
                    return
                raise ValueError(f"{root} is not an rtm_notebook dataset: {os.path.join(dirpath, name)} "
                                 f"{_schema_difference(schema)}")


def _schema_difference(schema: pa.Schema) -> str:
    want = {f.name: f.type for f in DATASET_SCHEMA}
    have = {f.name: f.type for f in schema}
    parts = []
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    changed = [f"{n} is {have[n]}, not {want[n]}" for n in want if n in have and have[n] != want[n]]
    if missing:
        parts.append("lacks " + ", ".join(missing))
    if extra:
        parts.append("has " + ", ".join(extra) + " besides")
    parts += changed
    return "; ".join(parts) or "has its columns in another order"


class DatasetRecorder:
    """The writer side (``EventFrame(record_to="events/")``); see the module docs.

    ``put(lines)`` is called on the appending thread, once per batch of
    rows: it journals the lines at once (one ``write``) and hands them to the
    background thread. ``parse`` reads a line pyarrow's reader refuses.
    """

    _STOP = object()

    def __init__(self, path: str | os.PathLike, parse: Callable[[bytes], tuple | None]) -> None:
        self.path = os.fspath(path).rstrip("/" + os.sep) or os.fspath(path)
        os.makedirs(os.path.join(self.path, JOURNAL), exist_ok=True)
        check_schema(self.path)
        # One writer per dataset: a second would fold the first one's live journal.
        self._lock = os.open(os.path.join(self.path, JOURNAL, ".lock"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise ValueError(f"another EventFrame is recording to {self.path} (one writer per dataset): "
                             "record to another directory, or close that one first") from None
        fold_journals(self.path, parse)
        self.last_seq = last_seq(self.path)
        self._fd: int | None = None
        self._parse = parse
        self._part_started = 0.0
        self._part: list[bytes] = []
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error_reported = False
        self._thread = threading.Thread(target=self._run, name="rtm-dataset-writer", daemon=True)
        self._thread.start()
        self._closed = False

    def put(self, lines: list[bytes]) -> None:
        if self._fd is None:
            self._open_part()
        try:
            os.write(self._fd, b"".join(lines))
        except OSError as exc:
            self._report(f"could not write the journal ({exc})")
        self._part.extend(lines)
        if len(self._part) >= ROLL_ROWS or time.monotonic() - self._part_started >= ROLL_SECONDS:
            self._roll()

    def _open_part(self) -> None:
        self._journal_path = os.path.join(self.path, JOURNAL, f"{time.time_ns():020d}.jsonl")
        self._fd = os.open(self._journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._part_started = time.monotonic()

    def _roll(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            self._queue.put((self._part, self._journal_path))
        self._part = []

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            lines, journal = item
            try:
                _write_part(self.path, _table(lines, self._parse))
                os.remove(journal)  # after the Parquet: a reader between the two finds both, and dedupes
            except Exception as exc:  # the journal stays: the next open folds it
                self._report(f"could not write a Parquet part ({exc!r}); its journal is kept")

    def _report(self, problem: str) -> None:
        if not self._error_reported:
            self._error_reported = True
            warnings.warn(f"EventFrame recording to {self.path!r}: {problem}. Events are still kept in memory; "
                          "further problems are not reported.", RuntimeWarning, stacklevel=1)

    def close(self) -> None:
        """Write the open part as Parquet and stop the writer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._roll()
        self._queue.put(self._STOP)
        self._thread.join()
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        os.close(self._lock)


def read_dataset(path: str | os.PathLike, parse: Callable[[bytes], tuple | None], *,
                 columns: list[str] | None = None, start: Any = None, end: Any = None) -> pa.Table:
    """The dataset's rows as a table in ``DATASET_SCHEMA`` order (``columns``
    only, the others null), ``start <= received_at < end``, both pushed down
    (days outside the range are not opened), in ``seq`` order. Rows still in
    a journal (a recording under way, or left by a process that died) are
    included; reading changes no file (folding is the recorder's)."""
    root = os.fspath(path)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no dataset at {root}")
    check_schema(root)
    check_columns(columns)
    wanted = list(COLUMNS) if columns is None else [c for c in COLUMNS if c in columns or c in ALWAYS_READ]
    # Journals before Parquet files: a part written between the two listings is
    # then in both (and deduplicated), never in neither.
    journals = _journals(root)
    partitioning = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
    dataset = ds.dataset(root, format="parquet", partitioning=partitioning, ignore_prefixes=[".", "_"],
                         schema=pa.schema([*DATASET_SCHEMA, pa.field("date", pa.string())]))
    condition = None
    at = ds.field("received_at")
    day = ds.field("date")
    for bound, op, day_op, last_in in ((start, at.__ge__, day.__ge__, 0), (end, at.__lt__, day.__le__, 1)):
        if bound is None:
            continue
        stamp = as_utc(bound)
        # The partition test prunes whole days; the end is exclusive, so its own day
        # counts only if anything of it is before the end.
        first_day = (stamp - dt.timedelta(microseconds=last_in)).strftime("%Y-%m-%d")
        part = op(pa.scalar(stamp, type=DATASET_SCHEMA.field(0).type)) & day_op(first_day)
        condition = part if condition is None else condition & part
    tables = [dataset.to_table(columns=wanted, filter=condition)]
    for _path, journal in journals:
        part = _table(journal, parse)
        if condition is not None:
            part = part.filter(_bounds(part, start, end))
        tables.append(part.select(wanted))
    table = pa.concat_tables(tables).sort_by("seq")
    if table.num_rows:  # a journal also written as Parquet (by a writer meanwhile, or before its process died)
        seqs = table.column("seq").to_numpy()
        keep = np.ones(len(seqs), dtype=bool)
        keep[1:] = seqs[1:] != seqs[:-1]
        table = table.filter(pa.array(keep))
    arrays = [table.column(name) if name in table.column_names else pa.nulls(len(table), field.type)
              for name, field in zip(COLUMNS, DATASET_SCHEMA)]
    return pa.Table.from_arrays(arrays, schema=DATASET_SCHEMA)


def check_columns(columns: list[str] | None) -> None:
    """Refuse a column selection that names columns a recording does not have."""
    unknown = sorted(set(columns or ()) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; the columns are {COLUMNS}")


def _journals(root: str) -> list[tuple[str, list[bytes]]]:
    """(path, lines) of every journal, oldest first; one removed meanwhile is
    skipped (its rows are in Parquet by then)."""
    folder = os.path.join(root, JOURNAL)
    out = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        if name.endswith(".jsonl"):
            path = os.path.join(folder, name)
            try:
                with open(path, "rb") as f:
                    lines = [line if line.endswith(b"\n") else line + b"\n" for line in f if line.strip()]
            except FileNotFoundError:
                continue
            out.append((path, lines))
    return out


def _bounds(table: pa.Table, start: Any, end: Any) -> pa.Array:
    at = table.column("received_at")
    mask = pa.array(np.ones(table.num_rows, dtype=bool))
    if start is not None:
        mask = pc.and_(mask, pc.greater_equal(at, pa.scalar(as_utc(start), type=at.type)))
    if end is not None:
        mask = pc.and_(mask, pc.less(at, pa.scalar(as_utc(end), type=at.type)))
    return mask


def as_utc(value: Any) -> dt.datetime:
    """A bound as an aware UTC datetime: datetime, pandas Timestamp, ISO string or epoch seconds."""
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if not isinstance(value, dt.datetime):
        raise TypeError(f"a time bound must be a datetime, an ISO string or epoch seconds, not {value!r}")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
