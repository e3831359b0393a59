"""EventFrame: every event (RTM or Socket Mode), recorded once, readable as a pandas DataFrame.

The client records every event it receives and every frame it sends. That is
the intake hot path, so only what cannot be derived later is kept: the
arrival time and the frame's text (``raw``: the bytes object the frame
arrived in, kept as it is). The connection's read loop records the frames
of each wake-up with one :meth:`EventFrame.extend` call; everything else
goes through ``_add``, :meth:`EventFrame.append` without the argument
checks. Direction, connection and transport change rarely and are kept as
runs.

Rows are kept in chunks. The other columns are derived from ``raw`` by
pyarrow's JSON reader (C++, without the GIL) the first time a DataFrame
needs them, or on a background thread once a chunk is old, so a burst
costs the intake little and a first DataFrame never waits for more than
the newest chunks (docs/benchmarks.md has the figures).
:meth:`EventFrame.to_pandas` builds the DataFrame from the chunks (strings
are shared, not copied) and caches it until a new row arrives.

Schema (``COLUMNS``, always in this order, always these dtypes):

=============  =======================  ==========================================
column         dtype                    content
=============  =======================  ==========================================
received_at    datetime64[us, UTC]      when the event arrived (or was sent)
type           string (pyarrow)         ``event["type"]``
subtype        string                   ``event["subtype"]``
channel        string                   channel id (see extraction rules)
user           string                   user id (see extraction rules)
text           string                   message text (see extraction rules)
ts             string                   Slack ``ts``, kept as the string Slack sent
thread_ts      string                   thread parent ``ts``
event_ts       string                   ``event_ts``
reply_to       Int64                    ``reply_to`` of a reply to a sent message
direction      string                   ``"in"`` (received), ``"out"`` (sent) or ``"history"`` (fetched afterwards)
connection     int64                    which session (socket) it came over
seq            int64                    arrival order, global across connections
transport      string                   ``"rtm"`` or ``"socket_mode"``: the live session's
                                        (:attr:`EventFrame.transport` when the row was added);
                                        null on history rows and where none was set
envelope_type  string                   a Socket Mode envelope's ``type`` (``events_api``,
                                        ``slash_commands``, ``interactive``, ...)
envelope_id    string                   its ``envelope_id``
event_id       string                   ``payload["event_id"]`` of an ``events_api`` envelope
retry_attempt  Int64                    the envelope's ``retry_attempt`` (``events_api`` only)
duplicate      boolean                  True: an envelope the client had received before (same
                                        ``event_id``) and did not dispatch again; False: any
                                        other envelope; null on rows that are no envelope
raw            string                   the whole event as JSON text
=============  =======================  ==========================================

Missing values are ``<NA>``. ``seq`` starts at 0 for a new frame, so without
eviction ``df.index`` equals ``df.seq``; when ``record_to`` names an existing
recording, numbering continues after the file's last ``seq``. The index is a
plain ``RangeIndex`` over the rows currently held.

The id/text columns follow the rules of :mod:`rtm_notebook.fields` (the one
place they are written); a reply to a sent message has type ``reply``. A
Socket Mode envelope's row is its inner event's
(:func:`~rtm_notebook.fields.inner_event`: ``type`` is ``message``,
``slash_command``, ``block_actions``, ...), with the envelope columns set;
those are null on every other row (RTM frames, ``hello``, ``disconnect``,
the client's own events).

These columns are derived from ``raw`` when it was given, so ``raw`` must be
the text the event was decoded from. The exceptions, whose columns are
extracted from the event itself at append time: no ``raw``, a ``raw`` str
for an event with an ``error`` key (a malformed frame's text), and bytes
that are not UTF-8.
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import math
import operator
import os
import queue
import threading
import time
import warnings
import weakref
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from rtm_notebook.datasets import (
    ADDED_COLUMNS,
    ALWAYS_READ,
    DatasetRecorder,
    as_utc,
    check_columns,
    is_dataset_path,
    read_dataset,
)
from rtm_notebook.exports import read_export
from rtm_notebook.fields import (
    ARROW_PARSE_OPTIONS,
    ARROW_PLAIN_OPTIONS,
    FIELDS,
    NeedsEnvelopes,
    derive_arrow,
    extract,
    nulls,
    ts_seconds,
)

__all__ = ["COLUMNS", "EventFrame"]

COLUMNS = ["received_at", "type", "subtype", "channel", "user", "text", "ts",
           "thread_ts", "event_ts", "reply_to", "direction", "connection", "seq",
           "transport", "envelope_type", "envelope_id", "event_id", "retry_attempt", "duplicate", "raw"]
#: The transports a live session records (``EventFrame.transport``).
TRANSPORTS = ("rtm", "socket_mode")

# Rows per chunk: small enough that sealing one never pauses the intake
# noticeably, large enough that per-chunk overhead does not count.
CHUNK_ROWS = 2048

# The C allocator, not pyarrow's default (mimalloc), which keeps the
# builders' freed scratch buffers mapped (a third more memory at 1M events).
_POOL = pa.system_memory_pool()
_LS = pa.large_string()

# Positions in a row tuple (COLUMNS order; rows are tuples only in read()
# and in the recorder's lines, never on the intake path).
_RECEIVED_AT, _REPLY_TO, _DIRECTION, _CONNECTION, _SEQ, _TRANSPORT, _RETRY, _DUPLICATE, _RAW = (
    0, 9, 10, 11, 12, 13, 17, 18, 19)
_INT64_MAX = 2**63 - 1
_NO_FIELDS = (None,) * len(FIELDS)
# Positions in a fields tuple (fields.FIELDS) of the non-string values.
_F_REPLY_TO, _F_ENVELOPE_ID, _F_RETRY = 8, 10, 12
# Where the fields tuple's values go in a row (COLUMNS order).
_FIELD_COLUMNS = [COLUMNS.index(name) for name in FIELDS]

# A failing block is split in halves until it parses; blocks this small go
# to the Python rules directly (bisecting further costs more than it saves).
_SMALL_BLOCK = 16


def _fields_of_raw(raw: str) -> tuple:
    """The extracted values of an event known only by its JSON text."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses (ints past 64 bits, lone surrogates) json may read
            event = json.loads(raw)
        except (ValueError, RecursionError):
            return _NO_FIELDS
    return extract(event) if isinstance(event, dict) else _NO_FIELDS


def _encode(event: Any) -> bytes:
    """The event as JSON. Events orjson refuses (huge ints, lone surrogates,
    non-JSON values) still get a faithful text; one that is no JSON at all
    (a reference cycle) gets its repr. Never raises: a bad event must not
    stop the recording."""
    try:
        return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        pass
    try:
        return json.dumps(event, default=_repr).encode()
    except (TypeError, ValueError, RecursionError):
        return _repr(event).encode("utf-8", "backslashreplace")


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} object whose repr() failed>"


def _as_text(value: Any) -> str | None:
    """Normalise one value of a string column."""
    if value is None or value.__class__ is str and value.isascii():
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:  # lone surrogates: keep them visible as escapes
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return _encode(value).decode("utf-8", "backslashreplace")


def _as_int(value: Any) -> int | None:
    """Normalise one value of an Int64 column (reply_to, retry_attempt): an int, else null."""
    if value.__class__ is int and -_INT64_MAX - 1 <= value <= _INT64_MAX:
        return value
    return None


def _as_bool(value: Any) -> bool | None:
    return value if value.__class__ is bool else None


def _string_array(values) -> pa.Array:
    if not any(v is not None for v in values):  # all null (the envelope columns of RTM rows): shared, no memory
        return nulls(len(values))
    try:
        return pa.array(values, type=_LS, memory_pool=_POOL)
    except (pa.ArrowException, UnicodeEncodeError):
        return pa.array([_as_text(v) for v in values], type=_LS, memory_pool=_POOL)


def _held(texts: list[bytes]) -> np.ndarray:
    """Bytes objects held for a sealed chunk, in a numpy object array: the
    cyclic GC does not traverse it (bytes cannot form cycles), where it
    would touch every item of a tuple or list on each young collection."""
    return np.array(texts, dtype=object)


def _texts(texts: Sequence[bytes]) -> pa.Array:
    """A string array of UTF-8 texts, with one copy of them."""
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)), out=offsets[1:])
    return pa.LargeStringArray.from_buffers(len(texts), pa.py_buffer(offsets), pa.py_buffer(b"".join(texts)))


def _int_array(values) -> pa.Array:
    if not any(v is not None for v in values):
        return nulls(len(values), pa.int64())
    return pa.array([_as_int(v) for v in values], type=pa.int64(), memory_pool=_POOL)


def _bool_array(values) -> pa.Array:
    if not any(v is not None for v in values):
        return nulls(len(values), pa.bool_())
    return pa.array([_as_bool(v) for v in values], type=pa.bool_(), memory_pool=_POOL)


def _columns(rows: list[tuple]) -> list[pa.Array]:
    """Fields tuples (as fields.extract returns them) as the arrays of FIELDS."""
    return _field_arrays(list(zip(*rows)) if rows else [()] * len(FIELDS))


def _field_arrays(cols: list[Sequence]) -> list[pa.Array]:
    """The values of each of FIELDS as its array: strings, reply_to and retry_attempt int64."""
    return [_int_array(col) if i in (_F_REPLY_TO, _F_RETRY) else _string_array(col) for i, col in enumerate(cols)]


def _clean(raw: pa.Array, odd: dict[int, tuple]) -> pa.Array:
    """``raw`` with the odd rows (extracted at append time: their raw may not
    be the event's JSON) replaced by ``{}`` for the JSON reader."""
    if not odd:
        return raw
    return pc.replace_with_mask(raw, _odd_mask(odd, len(raw)), pa.array(["{}"] * len(odd), _LS), memory_pool=_POOL)


def _odd_mask(odd: dict[int, tuple], n: int) -> pa.Array:
    mask = np.zeros(n, dtype=bool)
    mask[list(odd)] = True
    return pa.array(mask)


def _with_odd(cols: list[pa.Array], odd: dict[int, tuple]) -> list[pa.Array]:
    """Put the odd rows' values (extracted at append time) into the columns."""
    if not odd:
        return cols
    mask = _odd_mask(odd, len(cols[0]))
    values = _columns([odd[i] for i in sorted(odd)])
    return [pc.replace_with_mask(col, mask, value, memory_pool=_POOL) for col, value in zip(cols, values)]


def _parse(raw: pa.Array, envelopes: bool = False) -> list[pa.Array]:
    """The extraction rules run by pyarrow's JSON reader (no GIL) over raw
    texts; blocks it cannot read take the Python rules. ``envelopes``: the
    texts may hold Socket Mode envelopes (read them with their fields at once)."""
    n = len(raw)
    try:
        return _read_json(raw, envelopes)
    except NeedsEnvelopes:
        return _parse(raw, True)
    except (pa.ArrowException, ValueError):
        pass
    if n <= _SMALL_BLOCK:
        return _columns([_fields_of_raw(text) for text in raw.to_pylist()])
    half = n // 2
    return [pa.concat_arrays(pair, memory_pool=_POOL)
            for pair in zip(_parse(raw[:half], envelopes), _parse(raw[half:], envelopes))]


def _read_json(raw: pa.Array, envelopes: bool = False) -> list[pa.Array]:
    """The columns of FIELDS by pyarrow's reader; without ``envelopes`` it
    reads no envelope's fields, and raises NeedsEnvelopes if a row is one."""
    n = len(raw)
    if not n:  # no data buffer to read from
        return _columns([])
    lines = pc.binary_join_element_wise(raw, pa.scalar("", _LS), pa.scalar("\n", _LS), memory_pool=_POOL)
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + n])
    table = pa_json.read_json(pa.BufferReader(lines.buffers()[2][start:end]),
                              parse_options=ARROW_PARSE_OPTIONS if envelopes else ARROW_PLAIN_OPTIONS,
                              read_options=pa_json.ReadOptions(use_threads=False, block_size=end - start + 1))
    if table.num_rows != n:  # raw texts that are not one JSON object each
        raise ValueError("row count")
    col = {}
    for name in table.column_names:
        column = table.column(name)
        col[name] = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks(memory_pool=_POOL)
    return derive_arrow(col, n, _POOL, raw)


class _Chunk:
    """A run of rows in compact columnar form; immutable once built.

    ``raw`` is the texts' string array (:attr:`raw`), or the bytes objects
    to build it from the first time it is needed, in a numpy object array
    (:func:`_held`). ``connection`` may be one number for every row,
    ``transport`` one value (or None), and ``seq`` the first of consecutive
    numbers: the arrays are made when a DataFrame is, not kept twice.
    ``duplicates`` are the rows marked duplicate (the others derive it from
    ``envelope_id``), or the whole column as a boolean array. The extracted
    columns (fields.FIELDS: type .. retry_attempt) are derived from ``raw``
    the first time a DataFrame needs them, then kept (:meth:`fields`).
    """

    __slots__ = ("n", "received_us", "direction", "_connection", "_transport", "_seq", "_raw", "_texts", "odd",
                 "duplicates", "_fields", "__weakref__")

    def __init__(self, received_at, raw: pa.Array | np.ndarray, direction: pa.Array,
                 connection: np.ndarray | int, seq: np.ndarray | int, odd: dict[int, tuple] | None = None,
                 fields: list[pa.Array] | None = None, transport: pa.Array | str | None = None,
                 duplicates: tuple[int, ...] | pa.Array = ()) -> None:
        self.n = len(received_at)
        self.received_us = np.rint(np.fromiter(received_at, np.float64, self.n) * 1e6).astype(np.int64)
        if isinstance(raw, np.ndarray):
            self._raw, self._texts = None, raw
        else:
            self._raw, self._texts = raw, None
        self.direction = direction
        self._connection = connection
        self._transport = transport
        self._seq = seq
        self.odd = odd or {}
        self.duplicates = duplicates
        self._fields = fields

    @property
    def connection(self) -> np.ndarray:
        c = self._connection
        return c if isinstance(c, np.ndarray) else np.full(self.n, c, dtype=np.int64)

    @property
    def transport(self) -> pa.Array:
        t = self._transport
        if t is None:
            return nulls(self.n)
        return _constant_string(t, self.n) if t.__class__ is str else t

    @property
    def envelopes(self) -> bool:
        """Whether rows may be Socket Mode envelopes (the reader then reads their fields at once)."""
        t = self._transport
        if t is None or t.__class__ is str:
            return t == "socket_mode"
        return bool(pc.any(pc.equal(t, pa.scalar("socket_mode", _LS))).as_py())

    @property
    def seq(self) -> np.ndarray:
        s = self._seq
        return s if isinstance(s, np.ndarray) else np.arange(s, s + self.n, dtype=np.int64)

    @property
    def raw(self) -> pa.Array:
        """The raw texts as a string array. Built on first use, not at seal:
        the intake then only keeps each frame, and a burst nobody looks at
        never pays the copy. Two threads may build it at once; both get the
        same values."""
        texts = self._texts  # read before _raw, which is set before _texts is dropped
        raw = self._raw
        if raw is None:
            self._raw = raw = _texts(texts)
            self._texts = None
        return raw

    @classmethod
    def from_runs(cls, times: list[float], texts: np.ndarray, odd: dict, runs: list,
                  first_seq: int, duplicates: tuple[int, ...] = ()) -> _Chunk:
        """A chunk of appended rows, raw texts as UTF-8 bytes (_held);
        direction/connection/transport given as runs ``(first row, direction,
        connection, transport)``."""
        n = len(times)
        if len(runs) == 1:  # the usual case: one socket, one direction
            direction = _constant_string(runs[0][1], n)
            connection = runs[0][2]
            transport = runs[0][3]
        else:
            spans = np.diff(np.array([run[0] for run in runs] + [n], dtype=np.int64))
            connection = np.repeat(np.array([run[2] for run in runs], dtype=np.int64), spans)
            codes = np.repeat(np.array([DIRECTIONS.index(run[1]) for run in runs], dtype=np.int8), spans)
            direction = _DIRECTIONS.take(pa.array(codes))
            if len({run[3] for run in runs}) == 1:
                transport = runs[0][3]
            else:
                codes = np.repeat(np.array([-1 if run[3] is None else TRANSPORTS.index(run[3]) for run in runs],
                                           dtype=np.int8), spans)
                transport = _TRANSPORTS.take(pa.array(codes, mask=codes < 0))
        return cls(times, texts, direction, connection, first_seq, odd, transport=transport, duplicates=duplicates)

    @classmethod
    def from_table(cls, table: pa.Table) -> _Chunk:
        """A chunk of a dataset's rows (datasets.DATASET_SCHEMA), columns derived already."""
        def col(name: str) -> pa.Array:
            return table.column(name).combine_chunks()

        def strings(name: str) -> pa.Array:
            return col(name).cast(_LS)

        chunk = cls.__new__(cls)
        chunk.n = table.num_rows
        chunk.received_us = col("received_at").cast(pa.int64()).to_numpy(zero_copy_only=False)
        chunk._raw, chunk._texts = strings("raw"), None
        chunk.direction = pc.fill_null(strings("direction"), pa.scalar("in", _LS))
        chunk._connection = pc.fill_null(col("connection"), 0).to_numpy(zero_copy_only=False)
        chunk._transport = strings("transport")
        chunk._seq = col("seq").to_numpy(zero_copy_only=False)
        chunk.odd = {}
        chunk.duplicates = col("duplicate")
        chunk._fields = [col(name) if name in ("reply_to", "retry_attempt") else strings(name) for name in FIELDS]
        return chunk

    @classmethod
    def from_rows(cls, rows: list[tuple]) -> _Chunk:
        """A chunk of complete row tuples (COLUMNS order), as read() has them."""
        cols = list(zip(*rows)) if rows else [()] * len(COLUMNS)
        fields = _field_arrays([cols[i] for i in _FIELD_COLUMNS])
        return cls(cols[_RECEIVED_AT], _string_array(cols[_RAW]),
                   pa.array(cols[_DIRECTION], type=_LS, memory_pool=_POOL),
                   np.array(cols[_CONNECTION], dtype=np.int64), np.array(cols[_SEQ], dtype=np.int64), fields=fields,
                   transport=_string_array(cols[_TRANSPORT]),
                   duplicates=_bool_array(cols[_DUPLICATE]))

    def fields(self) -> list[pa.Array]:
        """The arrays of fields.FIELDS (strings; reply_to and retry_attempt
        int64), derived once. Two threads may derive at once; both get the
        same values."""
        if self._fields is None:
            self._fields = _with_odd(_parse(_clean(self.raw, self.odd), self.envelopes), self.odd)
        return self._fields


#: "in": received live; "out": sent; "history": fetched or read afterwards (backfill, a Slack export)
DIRECTIONS = ("in", "out", "history")
_DIRECTIONS = pa.array(DIRECTIONS, type=_LS)
_TRANSPORTS = pa.array(TRANSPORTS, type=_LS)


@functools.lru_cache(maxsize=16)
def _constant_string(value: str, n: int) -> pa.Array:
    # Arrays are immutable: full chunks of one direction (or transport) all share one.
    return pa.array([value] * n, type=_LS, memory_pool=_POOL)


# Chunks parsed together: each reader call is a GIL round trip that may wait
# a switch interval behind the intake; few enough that a batch's shared
# buffers do not outlive max_rows eviction by much.
_BATCH = 8


def _derive_many(chunks: list[_Chunk]) -> None:
    """Derive the columns of up to _BATCH chunks with one parse."""
    todo = [c for c in chunks if c._fields is None]
    if len(todo) > 1:
        raw = pa.concat_arrays([_clean(c.raw, c.odd) for c in todo], memory_pool=_POOL)
        envelopes = any(c.envelopes for c in todo)
        try:
            try:
                cols = _read_json(raw, envelopes)
            except NeedsEnvelopes:
                cols = _read_json(raw, True)
        except (pa.ArrowException, ValueError):
            pass  # each chunk on its own below, bisecting the ones that fail
        else:
            start = 0
            for c in todo:
                c._fields = _with_odd([col.slice(start, c.n) for col in cols], c.odd)
                start += c.n
    for c in todo:
        c.fields()


# Sealed chunks whose columns wait for a DataFrame to need them (~260k
# rows); older ones are derived in the background, so a first to_pandas()
# never derives more than these itself.
_LAZY_CHUNKS = 128


class _Deriver:
    """One background thread that derives the columns of chunks beyond the
    newest _LAZY_CHUNKS of a frame. The parsing runs in C++ without the
    GIL, on another core than the intake."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, item: weakref.ref | tuple) -> None:
        """Derive a chunk, held weakly: one evicted by max_rows, or of a frame
        dropped, before its turn is not parsed at all."""
        self._queue.put(item)
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="rtm-eventframe-derive", daemon=True)
                    self._thread.start()

    def help(self, batches: list[list[_Chunk]]) -> threading.Event:
        """Derive these batches now (for a to_pandas() deriving the others);
        the returned event is set when done."""
        done = threading.Event()
        self.submit((batches, done))
        return done

    def _run(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            if item.__class__ is tuple:
                batches, done = item
                for batch in batches:
                    self._derive(batch)
                done.set()
                continue
            refs = [item]
            while len(refs) < _BATCH and not q.empty():
                item = q.get()
                if item.__class__ is tuple:
                    q.put(item)  # after this batch: it only waits a little longer
                    break
                refs.append(item)
            self._derive([c for c in (ref() for ref in refs) if c is not None])

    @staticmethod
    def _derive(batch: list[_Chunk]) -> None:
        try:
            _derive_many(batch)
        except Exception:  # to_pandas() derives them again and reports the problem
            pass


_deriver = _Deriver()


def _derive_all(chunks: list[_Chunk]) -> None:
    """Derive the chunks' columns not derived yet, half of them on the
    background thread: the JSON reader runs without the GIL, so the two
    halves run in parallel. (Not a thread pool: each new thread's malloc
    arena would keep its parsing scratch.)"""
    todo = [c for c in chunks if c._fields is None]
    batches = [todo[i:i + _BATCH] for i in range(0, len(todo), _BATCH)]
    done = _deriver.help(batches[1::2]) if len(batches) > 1 and (os.cpu_count() or 1) > 1 else None
    for batch in batches[0::2] if done is not None else batches:
        _derive_many(batch)
    if done is not None:
        done.wait()


def _nullable(arrays: list[pa.Array], dtype: type, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Values and missing-mask (pandas' masked arrays) of int64 or bool arrays.
    The values start as np.zeros, whose pages stay untouched (and cost no
    memory) where a chunk is all null: the envelope columns of RTM chunks."""
    values = np.zeros(total, dtype=dtype)
    mask = np.ones(total, dtype=bool)
    at = 0
    for a in arrays:
        k = len(a)
        if a.null_count < k:
            mask[at:at + k] = pc.is_null(a).to_numpy(zero_copy_only=False)
            values[at:at + k] = pc.fill_null(a, dtype(0)).to_numpy(zero_copy_only=False)
        at += k
    return values, mask


def _duplicates(chunks: list[_Chunk], fields: list[list[pa.Array]], total: int) -> pd.arrays.BooleanArray:
    """The duplicate column: True on the rows marked, False on other envelope rows, else null."""
    values, mask = _nullable([c.duplicates if isinstance(c.duplicates, pa.Array) else nulls(c.n, pa.bool_())
                              for c in chunks], bool, total)
    at = 0
    for c, f in zip(chunks, fields):
        if not isinstance(c.duplicates, pa.Array):
            envelope_id = f[_F_ENVELOPE_ID]
            if envelope_id.null_count < c.n:
                mask[at:at + c.n] = pc.is_null(envelope_id).to_numpy(zero_copy_only=False)
            if c.duplicates:
                rows = at + np.fromiter(c.duplicates, np.int64, len(c.duplicates))
                values[rows] = True
                mask[rows] = False
        at += c.n
    return pd.arrays.BooleanArray(values, mask)


def _frame(chunks: list[_Chunk]) -> pd.DataFrame:
    """Assemble the DataFrame; string columns share the chunks' buffers."""
    _derive_all(chunks)
    fields = [c.fields() for c in chunks]
    total = sum(c.n for c in chunks)

    def strings(arrays) -> pd.arrays.ArrowStringArray:
        return pd.arrays.ArrowStringArray(pa.chunked_array(arrays, type=_LS))

    def ints(get) -> np.ndarray:
        return np.concatenate([get(c) for c in chunks]) if chunks else np.empty(0, dtype=np.int64)

    received = pd.DatetimeIndex(ints(lambda c: c.received_us).view("datetime64[us]")).tz_localize("UTC")
    data: dict[str, Any] = {"received_at": received.array}
    for i, name in enumerate(FIELDS):
        if i in (_F_REPLY_TO, _F_RETRY):
            data[name] = pd.arrays.IntegerArray(*_nullable([f[i] for f in fields], np.int64, total))
        else:
            data[name] = strings([f[i] for f in fields])
    data["direction"] = strings([c.direction for c in chunks])
    data["connection"] = ints(lambda c: c.connection)
    data["seq"] = ints(lambda c: c.seq)
    data["transport"] = strings([c.transport for c in chunks])
    data["duplicate"] = _duplicates(chunks, fields, total)
    data["raw"] = strings([c.raw for c in chunks])
    return pd.DataFrame(data, columns=COLUMNS, copy=False)


class _Recorder:
    """Appends rows to a JSON-lines file from a background thread.

    Each line is one row: a JSON object with every column of ``COLUMNS``
    (``received_at`` as epoch seconds), so ``read()`` needs no re-parsing of
    ``raw``, and ``pd.read_json(path, lines=True, dtype=False)`` can read it
    too (``EventFrame.read`` restores the exact dtypes). A line is
    written and flushed to the OS as soon as the thread gets to it, so a
    kernel restart loses at most the last few milliseconds (there is no
    fsync: a machine crash may lose what the OS had not written yet).
    """

    _STOP = object()

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.last_seq = _last_seq(self.path)
        self._file = open(self.path, "ab")
        if self._file.tell() and not _ends_with_newline(self.path):
            # A truncated last line from a crash: isolate it so read() skips
            # only that line instead of merging it with the next one.
            self._file.write(b"\n")
            self._file.flush()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.put = self._queue.put
        self._error_reported = False
        self._thread = threading.Thread(target=self._run, name="rtm-eventframe-writer", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self) -> None:
        q = self._queue
        stop = self._STOP
        while True:
            batch = [q.get()]
            # Bounded: when the writer lags, one huge join would touch fresh
            # memory for every line (page faults cost more than the lines).
            try:
                while len(batch) < 1024:
                    batch.append(q.get_nowait())
            except queue.Empty:
                pass
            done = False
            lines = []
            for row in batch:
                if row is stop:
                    done = True  # rows after it come from a racing append() after close()
                    continue
                try:
                    lines.append(_line(row))
                except Exception as exc:  # the thread must survive any one event
                    self._report(f"could not write event seq {row[3]} ({exc!r})")
            if lines:
                try:
                    self._file.write(b"".join(lines))
                    self._file.flush()
                except OSError as exc:
                    self._report(f"could not write to the file ({exc})")
            if done:
                return

    def _report(self, problem: str) -> None:
        if not self._error_reported:
            self._error_reported = True
            warnings.warn(f"EventFrame recording to {self.path!r}: {problem}. Events are still kept in memory, "
                          "but the file is incomplete; further problems are not reported.",
                          RuntimeWarning, stacklevel=1)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(self._STOP)
        self._thread.join()
        self._file.close()


def _line(item: tuple) -> bytes:
    """One appended event as a JSON line: an object with every column, in
    COLUMNS order, each value as the frame shows it (so read() rebuilds the
    same frame)."""
    received_at, direction, connection, seq, raw, fields, transport, duplicate = item
    if raw.__class__ is bytes:  # a frame as received
        raw = raw.decode("utf-8", "backslashreplace")
    (type_, subtype, channel, user, text, ts, thread_ts, event_ts, reply_to,
     envelope_type, envelope_id, event_id, retry_attempt) = fields
    if not duplicate:
        duplicate = None if envelope_id is None else False
    record = {"received_at": received_at, "type": type_, "subtype": subtype, "channel": channel, "user": user,
              "text": text, "ts": ts, "thread_ts": thread_ts, "event_ts": event_ts, "reply_to": reply_to,
              "direction": direction, "connection": connection, "seq": seq, "transport": transport,
              "envelope_type": envelope_type, "envelope_id": envelope_id, "event_id": event_id,
              "retry_attempt": retry_attempt, "duplicate": duplicate, "raw": raw}
    if ({type_.__class__, subtype.__class__, channel.__class__, user.__class__, text.__class__, ts.__class__,
         thread_ts.__class__, event_ts.__class__, envelope_type.__class__, envelope_id.__class__,
         event_id.__class__} <= _PLAIN and (reply_to is None or reply_to.__class__ is int)
            and (retry_attempt is None or retry_attempt.__class__ is int)):
        try:
            return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:  # lone surrogates, ints past 64 bits
            pass
    for name, value in zip(FIELDS, fields):
        record[name] = _as_int(value) if name in ("reply_to", "retry_attempt") else _as_text(value)
    record["raw"] = _as_text(raw)
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


_PLAIN = {str, type(None)}


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _last_seq(path: str) -> int | None:
    """The ``seq`` of the last readable line of an existing recording."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        end = f.seek(0, os.SEEK_END)
        tail = b""
        pos = end
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            lines = tail.split(b"\n")
            # The first piece may be a partial line unless we reached the start.
            candidates = lines if pos == 0 else lines[1:]
            for line in reversed(candidates):
                record = _parse_line(line)
                if record is not None:
                    return record[_SEQ]
            tail = lines[0] if pos else b""
    return None


# The columns every recording's lines have; those added since (ADDED_COLUMNS) may be missing.
_row_of = operator.itemgetter(*(name for name in COLUMNS if name not in ADDED_COLUMNS))


def _parse_line(line: bytes) -> tuple | None:
    """One line of a recording back into a row tuple, or None if unreadable.
    A line written before the Socket Mode columns existed has them null."""
    try:
        record = orjson.loads(line)
        row = _row_of(record)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    received_at, connection, seq, raw = row[_RECEIVED_AT], row[_CONNECTION], row[_SEQ], row[-1]
    if (not isinstance(received_at, (int, float)) or not -1e11 < received_at < 1e11
            or connection.__class__ is not int or seq.__class__ is not int
            or row[_DIRECTION] not in DIRECTIONS or not isinstance(raw, str)):
        return None
    get = record.get
    transport, envelope_type, envelope_id, event_id = (
        get("transport"), get("envelope_type"), get("envelope_id"), get("event_id"))
    return (float(received_at), *row[1:-1],
            transport if transport.__class__ is str else None,
            envelope_type if envelope_type.__class__ is str else None,
            envelope_id if envelope_id.__class__ is str else None,
            event_id if event_id.__class__ is str else None,
            _as_int(get("retry_attempt")), _as_bool(get("duplicate")), raw)


class EventFrame:
    """Append-only record of events (RTM and Socket Mode), viewed as a pandas DataFrame.

    ``max_rows``: keep at most this many rows; the oldest are evicted a
    chunk at a time (so after an eviction the frame holds at least about
    half of ``max_rows``). ``seq`` keeps counting, and DataFrames returned
    earlier are unaffected: they keep the rows they had.

    ``record_to``: path of a JSON-lines file that every event is appended
    to as it arrives (by a background thread; the caller never waits on
    disk). An existing file is appended to and ``seq`` continues from it.
    ``max_rows`` bounds memory only: the file keeps every event. :meth:`read`
    loads a recording back; :meth:`close` (also run at interpreter exit)
    flushes it.

    ``transport``: ``"rtm"`` or ``"socket_mode"``, the value of the
    ``transport`` column for the rows added from then on (None: null, the
    default); the client sets it. History rows always have null.

    Threads: ``append`` is meant for one thread (the client's loop);
    ``to_pandas`` and ``len()`` may be called from any thread.
    """

    def __init__(self, *, max_rows: int | None = None, record_to: str | os.PathLike | None = None) -> None:
        if max_rows is not None:
            if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
                raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}")
            self._chunk_rows = min(CHUNK_ROWS, max(1, max_rows // 4))
        else:
            self._chunk_rows = CHUNK_ROWS
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._chunks: collections.deque[_Chunk] = collections.deque()
        self._chunk_total = 0      # rows held in self._chunks
        self._lazy: collections.deque[weakref.ref] = collections.deque()  # newest chunks, maybe not derived
        self._sealed = 0           # rows ever moved into chunks (evicted ones included)
        # The chunk being filled. Its seq values are first_seq, first_seq + 1, ...
        self._times: list[float] = []       # received_at
        # The raw texts as UTF-8 bytes: received frames as they arrived. Kept
        # as objects until a DataFrame needs them (_Chunk.raw): copying each
        # frame into one buffer, and that buffer into a chunk, cost the intake
        # more than the rest of recording.
        self._texts: list[bytes] = []
        self._odd: dict[int, tuple] = {}    # row -> fields extracted at append time
        self._duplicates: list[int] = []    # rows marked duplicate
        self._runs: list[tuple] = []        # (first row, direction, connection, transport)
        self._first_seq = 0
        # The run the next row continues without a check of its own (None:
        # the next append starts a run).
        self._direction: Any = None
        self._connection: Any = None
        self._transport: str | None = None
        self._run_transport: str | None = None  # the transport of the current run's rows
        self._cache: pd.DataFrame | None = None
        self._cache_key = -1
        #: id -> name, for messages(): the client keeps its own; an export brings its own
        self.user_names: dict[str, str] = {}
        self.channel_names: dict[str, str] = {}
        self._recorder: _Recorder | DatasetRecorder | None = None
        self._record = None
        self._finalizer = None
        if record_to is not None:
            if is_dataset_path(record_to):
                self._recorder = DatasetRecorder(record_to, _parse_line)
                self._record = self._journal_one
            else:
                self._recorder = _Recorder(record_to)
                self._record = self._recorder.put
            if self._recorder.last_seq is not None:
                self._first_seq = self._recorder.last_seq + 1
            self._finalizer = weakref.finalize(self, self._recorder.close)

    @property
    def transport(self) -> str | None:
        """The ``transport`` of the rows added from now on: ``"rtm"``, ``"socket_mode"`` or None."""
        return self._transport

    @transport.setter
    def transport(self, value: str | None) -> None:
        if value is not None and value not in TRANSPORTS:
            raise ValueError(f'transport must be "rtm", "socket_mode" or None, got {value!r}')
        self._transport = None if value is None else TRANSPORTS[TRANSPORTS.index(value)]
        self._direction = None  # the next row starts a run of its own: no check per row

    def append(self, event: dict, raw: str | bytes | None = None, *, direction: str = "in",
               connection: int = 0, received_at: float | None = None) -> int:
        """Record one event and return its ``seq``.

        ``raw`` is the JSON text ``event`` was decoded from, as str or as
        UTF-8 bytes (pass it: it saves encoding the event again, and the
        extracted columns are derived from it when the DataFrame is first
        built). When None the event is encoded with orjson. For an event
        with an ``error`` key it may be any text (an error event about a
        malformed frame): it is kept as is, and the columns come from
        ``event``. Bytes that are not UTF-8 are kept with ``\\x..``
        escapes. ``received_at`` is ``time.time()`` seconds, now when None.

        Raises TypeError/ValueError, recording nothing, when ``event`` is
        not a dict, ``direction`` is not "in"/"out"/"history", or ``connection`` or
        ``received_at`` is not a number of the right kind.
        """
        if not isinstance(event, dict):
            raise TypeError(f"EventFrame.append needs the event as a dict, got {type(event).__name__}; "
                            "pass the undecodable text as raw= with an error event dict")
        if direction not in DIRECTIONS:
            raise ValueError(f'direction must be "in", "out" or "history", got {direction!r}')
        if connection.__class__ is not int or not 0 <= connection <= _INT64_MAX:
            connection = _connection_number(connection)
        if received_at is None:
            received_at = time.time()
        elif received_at.__class__ is not float or not -1e11 < received_at < 1e11:
            received_at = _seconds(received_at)
        if raw.__class__ is bytes:
            try:
                raw.decode()  # _add takes bytes to be UTF-8 JSON text, like a decoded frame's
            except UnicodeDecodeError:
                raw = bytearray(raw)  # any other raw: kept escaped, the columns extracted from event
            else:
                # A copy: the row keeps the object, and a bytes object can
                # hold more memory than its length (orjson.dumps' do).
                raw = bytes(memoryview(raw))
        seq = self._first_seq + len(self._times)  # the same after a seal: first_seq then grows by the rows sealed
        self._add(event, raw, DIRECTIONS[DIRECTIONS.index(direction)], connection, received_at)
        return seq

    def _add(self, event: dict, raw: bytes | str | None, direction: str, connection: int,
             received_at: float, duplicate: bool = False) -> None:
        """append() for arguments known to be valid, raw bytes known to be
        UTF-8 JSON (a frame orjson decoded). Anything that can be derived
        from raw later is (see _Chunk.fields)."""
        times = self._times
        n = len(times)
        if n >= self._chunk_rows:
            self._seal()
            n = 0
        if direction is not self._direction or connection is not self._connection:
            self._run_for(direction, connection, n)
        if raw.__class__ is not bytes:
            raw = self._odd_row(event, raw, n)
        if duplicate:
            self._duplicates.append(n)
        self._texts.append(raw)
        times.append(received_at)  # last: to_pandas() reads len(times) rows
        if self._record is not None:
            # Each line carries every column, now: the writer thread would
            # hold the GIL longer parsing raw again than this takes.
            self._record((received_at, direction, connection, self._first_seq + n, raw,
                          self._odd.get(n) or extract(event), self._run_transport, duplicate))

    def extend(self, frames: Sequence[bytes], received_at: float, *, connection: int,
               events: Sequence[dict] | None = None, duplicates: Collection[int] | None = None) -> None:
        """Record many received frames at once, all stamped ``received_at``:
        the client's read loop calls this once per wake-up.

        ``frames`` are bytes objects holding UTF-8 JSON event objects (RTM
        events, Socket Mode envelopes), as they arrived (kept as they are,
        not copied: the call per frame, or a copy, cost more than the rest
        of recording). ``events`` are the same frames decoded; only a
        ``record_to`` file needs them (its lines carry the columns), and
        without them the frames are parsed again. ``duplicates`` are the
        indices into ``frames`` of envelopes the client had received before
        and does not dispatch again: their rows have ``duplicate`` True.
        Anything else goes through :meth:`append`.
        """
        if connection.__class__ is not int or not 0 <= connection <= _INT64_MAX:
            connection = _connection_number(connection)
        if received_at.__class__ is not float or not -1e11 < received_at < 1e11:
            received_at = _seconds(received_at)
        if self._record is not None:
            dataset = self._recorder if isinstance(self._recorder, DatasetRecorder) else None
            if dataset is not None:  # one journal write for the batch, before the events are dispatched
                batch: list[tuple] = []
                record, self._record = self._record, batch.append
            marked = duplicates or ()
            try:
                for i, raw in enumerate(frames):
                    event = events[i] if events is not None else orjson.loads(raw)
                    self._add(event, raw, "in", connection, received_at, i in marked)
            finally:
                if dataset is not None:
                    self._record = record
                    dataset.put([_line(item) for item in batch])
            return
        times, texts, limit = self._times, self._texts, self._chunk_rows
        done, total = 0, len(frames)
        while done < total:
            n = len(times)
            if n >= limit:
                self._seal()
                n = 0
            if self._direction != "in" or self._connection != connection:
                self._run_for("in", connection, n)
            take = min(limit - n, total - done)
            if duplicates:  # rare: after a dropped socket or a late ack
                self._duplicates.extend(n + i - done for i in sorted(duplicates) if done <= i < done + take)
            texts.extend(frames if take == total else frames[done:done + take])
            times.extend(itertools.repeat(received_at, take))  # last: to_pandas() reads len(times) rows
            done += take

    def _journal_one(self, item: tuple) -> None:
        self._recorder.put([_line(item)])

    def _run_for(self, direction: str, connection: int, n: int) -> None:
        """Put row n in a run (direction, connection, transport)."""
        transport = None if direction == "history" else self._transport
        runs = self._runs
        if runs and runs[-1][0] == n:  # left empty by the row before
            runs.pop()
        if not runs or runs[-1][1:] != (direction, connection, transport):
            runs.append((n, direction, connection, transport))
        self._direction, self._connection, self._run_transport = direction, connection, transport

    def _odd_row(self, event: dict, raw: Any, n: int) -> bytes:
        """raw as UTF-8 bytes, for a row that is not a frame as received.
        Unless raw is the event's JSON as str, the columns are extracted
        from the event now (an error event's raw is the malformed frame; an
        event without raw is encoded)."""
        if raw.__class__ is str and "error" not in event:
            try:
                return raw.encode()
            except UnicodeEncodeError:  # lone surrogates: what is kept is not quite that JSON
                pass
        self._odd[n] = extract(event)
        if raw is None:
            raw = _encode(event)
        return _as_text(raw).encode()

    def _seal(self) -> None:
        # Only the appending thread changes the open chunk, and this runs
        # on it: reading it needs no lock.
        runs = self._runs
        chunk = _Chunk.from_runs(self._times, _held(self._texts), self._odd, runs, self._first_seq,
                                 tuple(self._duplicates))
        lazy = self._lazy
        lazy.append(weakref.ref(chunk))
        if len(lazy) > _LAZY_CHUNKS:
            _deriver.submit(lazy.popleft())
        with self._lock:
            self._chunks.append(chunk)
            self._chunk_total += chunk.n
            self._sealed += chunk.n
            self._times.clear()
            self._texts.clear()
            self._odd = {}
            self._duplicates = []
            self._runs = [(0, *runs[-1][1:])]
            self._first_seq += chunk.n
            if self.max_rows is not None:
                # Leave room for the chunk that starts filling now.
                while self._chunks and self._chunk_total + self._chunk_rows > self.max_rows:
                    self._chunk_total -= self._chunks.popleft().n

    def _push_chunk(self, rows: list[tuple]) -> None:
        """Add complete rows as a chunk (used by read())."""
        chunk = _Chunk.from_rows(rows)
        self._chunks.append(chunk)
        self._chunk_total += chunk.n
        self._sealed += chunk.n

    def to_pandas(self) -> pd.DataFrame:
        """The recorded events as a DataFrame (schema in the module docstring).

        The same object is returned until a new row arrives; after that a
        new DataFrame holds the old rows plus the new ones. Returned frames
        never change.
        """
        with self._lock:
            times = self._times
            n = len(times)
            key = self._sealed + n
            if self._cache is not None and key == self._cache_key:
                return self._cache
            chunks = list(self._chunks)
            # Copied under the lock: a seal clears the open chunk. Rows
            # appended meanwhile (times last) lie beyond the first n.
            if n:
                part = (times[:n], _held(self._texts[:n]), self._odd.copy(), self._runs[:], self._duplicates[:])
            first = self._first_seq
        if n:
            times, texts, odd, runs, duplicates = part
            odd = {i: fields for i, fields in odd.items() if i < n}
            runs = [run for run in runs if run[0] < n]
            chunks.append(_Chunk.from_runs(times, texts, odd, runs, first, tuple(i for i in duplicates if i < n)))
        df = _frame(chunks)
        with self._lock:
            if key > self._cache_key:
                self._cache, self._cache_key = df, key
        return df

    def messages(self, user_names: dict[str, str] | None = None,
                 channel_names: dict[str, str] | None = None) -> pd.DataFrame:
        """The messages received or fetched (direction ``in`` or ``history``), a
        message seen both live and in history once (its live row), an
        envelope received again (``duplicate``) not at all, with
        ``user_name`` and ``channel_name`` columns from these id → name maps
        (default: the frame's own :attr:`user_names` / :attr:`channel_names`;
        ``<NA>`` where unknown)."""
        df = self.to_pandas()
        df = df[(df["type"] == "message") & (df["direction"] != "out") & ~df["duplicate"].fillna(False)]
        history = df["direction"] == "history"
        if history.any():
            # A history row goes when the message was seen live, or fetched before.
            live_keys = set(zip(df.loc[~history, "channel"], df.loc[~history, "ts"]))
            keys = pd.Series(list(zip(df["channel"], df["ts"])), index=df.index)
            again = history & (keys.isin(live_keys) | (keys.duplicated() & history)) & df["ts"].notna()
            df = df[~again]
        df = df.copy()
        df["user_name"] = df["user"].map(self.user_names if user_names is None else user_names).astype("string")
        df["channel_name"] = df["channel"].map(
            self.channel_names if channel_names is None else channel_names).astype("string")
        return df

    @classmethod
    def from_slack_export(cls, path: str | os.PathLike) -> EventFrame:
        """Read a Slack export (a zip or an unpacked folder) into a new EventFrame.

        One row per message (direction ``history``), oldest first, with its
        channel from the export's channel files and ``received_at`` its
        ``ts`` (the time it was posted); ``raw`` keeps the message as the export has it, plus
        ``channel``. :attr:`user_names` and :attr:`channel_names` come from
        the export's own files, so :meth:`messages` shows names. A file that
        cannot be read is skipped with an :class:`~rtm_notebook.exports.ExportWarning`
        naming it; see :mod:`rtm_notebook.exports`.
        """
        export = read_export(path)
        frame = cls()
        for message in export.messages:
            frame._add(message, _encode(message), "history", 0, ts_seconds(message["ts"]))
        frame.user_names.update(export.user_names)
        frame.channel_names.update(export.channel_names)
        return frame

    def __len__(self) -> int:
        with self._lock:
            return self._chunk_total + len(self._times)

    def __repr__(self) -> str:
        where = f", record_to={self._recorder.path!r}" if self._recorder is not None else ""
        bound = f", max_rows={self.max_rows}" if self.max_rows is not None else ""
        return f"<EventFrame {len(self)} rows{bound}{where}>"

    @classmethod
    def read(cls, path: str | os.PathLike, *, columns: list[str] | None = None, start: Any = None,
             end: Any = None) -> EventFrame:
        """Load a recording into a new (not recording) EventFrame: a ``record_to``
        JSON-lines file, or a Parquet dataset directory (``record_to="events/"``).

        ``columns`` reads only those (the others are null, ``connection`` 0;
        ``received_at``, ``direction`` and ``seq`` always come), and only rows with
        ``start <= received_at < end`` (datetimes, ISO strings or epoch
        seconds; either may be None). On a dataset both are pushed down: only
        those columns, and only the days in range, are read from disk. A
        dataset whose files have other columns is refused, saying what
        differs. A recording made before the Socket Mode columns existed
        (``transport`` to ``duplicate``) reads with them null. Unreadable lines of a JSON-lines file (one cut short by a
        crash, typically the last) are skipped with a ``RuntimeWarning``
        naming them; every other line is loaded.
        """
        frame = cls()
        if is_dataset_path(path):
            table = read_dataset(path, _parse_line, columns=columns, start=start, end=end)
            for first in range(0, table.num_rows, CHUNK_ROWS):
                frame._chunks.append(_Chunk.from_table(table.slice(first, CHUNK_ROWS)))
            frame._chunk_total = frame._sealed = table.num_rows
            frame._first_seq = (pc.max(table.column("seq")).as_py() + 1) if table.num_rows else 0
            return frame
        keep = _row_filter(columns, start, end)
        bad: list[int] = []
        last_seq = -1
        rows: list[tuple] = []
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                row = _parse_line(line)
                if row is None:
                    if line.strip():
                        bad.append(number)
                    continue
                last_seq = max(last_seq, row[_SEQ])
                if keep is not None:
                    row = keep(row)
                    if row is None:
                        continue
                rows.append(row)
                if len(rows) == CHUNK_ROWS:
                    frame._push_chunk(rows)
                    rows = []
        if rows:
            frame._push_chunk(rows)
        frame._first_seq = last_seq + 1
        if bad:
            shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
            warnings.warn(f"{os.fspath(path)}: skipped {len(bad)} unreadable line(s) (line {shown}); "
                          "a line cut short when the writer was killed looks like this. All other lines were loaded.",
                          RuntimeWarning, stacklevel=2)
        return frame

    def close(self) -> None:
        """Flush and close the ``record_to`` file (idempotent).

        The frame stays readable and still records appends in memory; only
        the file recording stops.
        """
        self._record = None
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> EventFrame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _row_filter(columns: list[str] | None, start: Any, end: Any):
    """For read() of a JSON-lines file: a function that keeps a row in range
    (None: out of range) with only ``columns``, or None when every row is kept whole."""
    if columns is None and start is None and end is None:
        return None
    check_columns(columns)
    lo = as_utc(start).timestamp() if start is not None else -math.inf
    hi = as_utc(end).timestamp() if end is not None else math.inf
    dropped = [i for i, name in enumerate(COLUMNS)
               if columns is not None and name not in columns and name not in ALWAYS_READ]

    def keep(row: tuple) -> tuple | None:
        if not lo <= row[_RECEIVED_AT] < hi:
            return None
        if not dropped:
            return row
        row = list(row)
        for i in dropped:
            row[i] = 0 if i == _CONNECTION else None
        return tuple(row)

    return keep


def _connection_number(value: Any) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"connection must be an int (the session number), got {value!r}") from None
    if not 0 <= number <= _INT64_MAX:
        raise ValueError(f"connection must be a non-negative session number, got {number}")
    return number


def _seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"received_at must be time.time() seconds (a float), got {value!r}") from None
    if not -1e11 < seconds < 1e11:  # also rejects nan and inf
        raise ValueError(f"received_at must be time.time() seconds, got {value!r}")
    return seconds
