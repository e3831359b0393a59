"""EventFrame: every RTM event, recorded once, readable as a pandas DataFrame.

The client calls :meth:`EventFrame.append` for every event it receives and
every frame it sends; that call is the intake hot path, so it only extracts a
few fields and appends one tuple to a list. Rows are kept in chunks: when a
chunk fills up it is converted once into compact columns (pyarrow string
arrays, numpy numbers) and the Python objects are dropped, so a million
events cost about the size of their JSON text plus the extracted columns.
:meth:`EventFrame.to_pandas` builds the DataFrame from the compact chunks
(strings are shared, not copied) and caches it until a new row arrives.

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
direction      string                   ``"in"`` (received) or ``"out"`` (sent)
connection     int64                    which RTM session (socket) it came over
seq            int64                    arrival order, global across connections
raw            string                   the whole event as JSON text
=============  =======================  ==========================================

Missing values are ``<NA>``. ``seq`` starts at 0 for a new frame, so without
eviction ``df.index`` equals ``df.seq``; when ``record_to`` names an existing
recording, numbering continues after the file's last ``seq``. The index is a
plain ``RangeIndex`` over the rows currently held.

Extraction rules for the id/text columns, chosen so that the rows of one
conversation share ``channel`` and ``user`` whatever the event's shape:

* ``channel``: ``event["channel"]`` when it is a string; when it is an object
  (``channel_created``, ``im_created``, ...) its ``"id"``; when absent,
  ``event["item"]["channel"]`` (reactions, pins, stars).
* ``user``: ``event["user"]`` when a string; when an object (``team_join``,
  ``user_change``) its ``"id"``; when absent, the wrapped message's user
  (``event["message"]["user"]``: ``message_changed``, ``message_replied``).
* ``text`` and ``thread_ts``: the top-level field, else the wrapped
  ``event["message"]``'s (so an edit shows the new text).
* Any other non-string value in a string column is stored as its JSON text;
  a ``reply_to`` that is not an integer is ``<NA>`` (``raw`` keeps it).
"""

from __future__ import annotations

import collections
import json
import operator
import os
import queue
import threading
import time
import warnings
import weakref
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["COLUMNS", "EventFrame"]

COLUMNS = ["received_at", "type", "subtype", "channel", "user", "text", "ts",
           "thread_ts", "event_ts", "reply_to", "direction", "connection", "seq", "raw"]

# Rows per chunk. Converting a full chunk to columns pauses the intake once
# per chunk; this size keeps that pause at a few milliseconds while making
# the per-chunk overhead (array headers, one pyarrow chunk per column)
# negligible. See benchmarks/bench_events.py.
CHUNK_ROWS = 2048

# The chunks' arrays come from the C allocator rather than pyarrow's default
# pool (mimalloc): mimalloc keeps the builders' freed scratch buffers
# mapped; at a million events RSS was 3.1x the events' JSON size with it
# and 2.3x without.
_POOL = pa.system_memory_pool()

# Positions in a row tuple (the row tuple is in COLUMNS order).
_RECEIVED_AT, _REPLY_TO, _DIRECTION, _CONNECTION, _SEQ, _RAW = 0, 9, 10, 11, 12, 13
_STRING_FIELDS = range(1, 9)  # type .. event_ts, the extracted string columns
_INT64_MAX = 2**63 - 1


def _extract(event: dict) -> tuple:
    """Return (type, subtype, channel, user, text, ts, thread_ts, event_ts, reply_to).

    Values are returned as found (not normalised) so this stays cheap; the
    rules are in the module docstring. EventFrame.append inlines the first
    lines of this function: keep the two in step.
    """
    get = event.get
    channel = get("channel")
    user = get("user")
    text = get("text")
    thread_ts = get("thread_ts")
    if channel.__class__ is not str or user.__class__ is not str or "message" in event:
        channel, user, text, thread_ts = _resolve(event, channel, user, text, thread_ts)
    return (get("type"), get("subtype"), channel, user, text, get("ts"), thread_ts,
            get("event_ts"), get("reply_to"))


def _resolve(event: dict, channel: Any, user: Any, text: Any, thread_ts: Any) -> tuple:
    """The nested-object rules, for the events where a plain field is missing."""
    get = event.get
    if channel is None:
        item = get("item")
        if isinstance(item, dict):
            channel = item.get("channel")
    elif isinstance(channel, dict):
        channel = channel.get("id")
    if isinstance(user, dict):
        user = user.get("id")
    if user is None or text is None or thread_ts is None:
        message = get("message")
        if isinstance(message, dict):
            if user is None:
                user = message.get("user")
                if isinstance(user, dict):
                    user = user.get("id")
            if text is None:
                text = message.get("text")
            if thread_ts is None:
                thread_ts = message.get("thread_ts")
    return channel, user, text, thread_ts


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
    """Normalise one value of a string column (the slow path)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:  # lone surrogates: keep them visible as escapes
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return _encode(value).decode("utf-8", "backslashreplace")


def _as_reply_to(value: Any) -> int | None:
    if value.__class__ is int and -_INT64_MAX - 1 <= value <= _INT64_MAX:
        return value
    return None


def _string_array(values) -> pa.Array:
    try:
        return pa.array(values, type=pa.large_string(), memory_pool=_POOL)
    except (pa.ArrowException, UnicodeEncodeError):
        return pa.array([_as_text(v) for v in values], type=pa.large_string(), memory_pool=_POOL)


class _Chunk:
    """A run of rows in compact columnar form; immutable once built."""

    __slots__ = ("n", "received_us", "strings", "reply_values", "reply_mask",
                 "direction", "connection", "seq", "raw")

    def __init__(self, rows: list) -> None:
        cols = list(zip(*rows)) if rows else [()] * len(COLUMNS)
        self.n = len(rows)
        self.received_us = np.rint(np.array(cols[_RECEIVED_AT], dtype=np.float64) * 1e6).astype(np.int64)
        self.strings = [_string_array(cols[i]) for i in _STRING_FIELDS]
        reply = cols[_REPLY_TO]
        try:  # inferred, not cast: a cast to int64 would truncate 0.5 to 0
            arr = pa.array(reply, memory_pool=_POOL)
        except (pa.ArrowException, OverflowError):
            arr = None
        if arr is not None and pa.types.is_null(arr.type):
            arr = arr.cast(pa.int64())
        elif arr is None or not pa.types.is_int64(arr.type):
            arr = pa.array([_as_reply_to(v) for v in reply], type=pa.int64(), memory_pool=_POOL)
        self.reply_mask = pc.is_null(arr, memory_pool=_POOL).to_numpy(zero_copy_only=False)
        self.reply_values = pc.coalesce(arr, pa.scalar(0, pa.int64()), memory_pool=_POOL).to_numpy()
        self.direction = pa.array(cols[_DIRECTION], type=pa.large_string(), memory_pool=_POOL)
        self.connection = np.array(cols[_CONNECTION], dtype=np.int64)
        self.seq = np.array(cols[_SEQ], dtype=np.int64)
        self.raw = _string_array(cols[_RAW])


def _frame(chunks: list[_Chunk]) -> pd.DataFrame:
    """Assemble the DataFrame; string columns share the chunks' buffers."""

    def strings(get) -> pd.arrays.ArrowStringArray:
        return pd.arrays.ArrowStringArray(pa.chunked_array([get(c) for c in chunks], type=pa.large_string()))

    def ints(get) -> np.ndarray:
        return np.concatenate([get(c) for c in chunks]) if chunks else np.empty(0, dtype=np.int64)

    received = pd.DatetimeIndex(ints(lambda c: c.received_us).view("datetime64[us]")).tz_localize("UTC")
    data: dict[str, Any] = {"received_at": received.array}
    for name, i in zip(COLUMNS[1:9], range(8)):
        data[name] = strings(lambda c, i=i: c.strings[i])
    mask = np.concatenate([c.reply_mask for c in chunks]) if chunks else np.empty(0, dtype=bool)
    data["reply_to"] = pd.arrays.IntegerArray(ints(lambda c: c.reply_values), mask)
    data["direction"] = strings(lambda c: c.direction)
    data["connection"] = ints(lambda c: c.connection)
    data["seq"] = ints(lambda c: c.seq)
    data["raw"] = strings(lambda c: c.raw)
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
        self._thread = threading.Thread(target=self._run, name=f"EventFrame writer {self.path}", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self) -> None:
        q = self._queue
        stop = self._STOP
        while True:
            batch = [q.get()]
            try:
                while True:
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
                    self._report(f"could not write event seq {row[_SEQ]} ({exc!r})")
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


_PLAIN = {str, type(None)}


def _line(row: tuple) -> bytes:
    """A row as one JSON line: an object with every column, in COLUMNS order."""
    (received_at, type_, subtype, channel, user, text, ts, thread_ts, event_ts, reply_to, direction,
     connection, seq, raw) = row
    if raw.__class__ is bytes:  # orjson's output, or a binary frame the caller passed
        raw = raw.decode("utf-8", "backslashreplace")
    record = {"received_at": received_at, "type": type_, "subtype": subtype, "channel": channel, "user": user,
              "text": text, "ts": ts, "thread_ts": thread_ts, "event_ts": event_ts, "reply_to": reply_to,
              "direction": direction, "connection": connection, "seq": seq, "raw": raw}
    plain = ({type_.__class__, subtype.__class__, channel.__class__, user.__class__, text.__class__, ts.__class__,
              thread_ts.__class__, event_ts.__class__, raw.__class__} <= _PLAIN
             and (reply_to is None or reply_to.__class__ is int))
    if plain:
        try:
            return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:  # lone surrogates, ints past 64 bits
            pass
    # Store odd values as the frame shows them, so read() rebuilds the same frame.
    for i in (*_STRING_FIELDS, _RAW):
        record[COLUMNS[i]] = _as_text(record[COLUMNS[i]])
    record["reply_to"] = _as_reply_to(reply_to)
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


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


_row_of = operator.itemgetter(*COLUMNS)


def _parse_line(line: bytes) -> tuple | None:
    """One line of a recording back into a row tuple, or None if unreadable."""
    try:
        row = _row_of(orjson.loads(line))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    received_at, connection, seq = row[_RECEIVED_AT], row[_CONNECTION], row[_SEQ]
    if (not isinstance(received_at, (int, float)) or not -1e11 < received_at < 1e11
            or connection.__class__ is not int or seq.__class__ is not int
            or row[_DIRECTION] not in ("in", "out") or not isinstance(row[_RAW], str)):
        return None
    return row if received_at.__class__ is float else (float(received_at), *row[1:])


class EventFrame:
    """Append-only record of RTM events, viewed as a pandas DataFrame.

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
        self._sealed = 0           # rows ever moved into chunks (evicted ones included)
        self._partial: list[tuple] = []
        self._next_seq = 0
        self._cache: pd.DataFrame | None = None
        self._cache_key = -1
        self._recorder: _Recorder | None = None
        self._record = None
        self._finalizer = None
        if record_to is not None:
            self._recorder = _Recorder(record_to)
            if self._recorder.last_seq is not None:
                self._next_seq = self._recorder.last_seq + 1
            self._record = self._recorder.put
            self._finalizer = weakref.finalize(self, self._recorder.close)

    def append(self, event: dict, raw: str | bytes | None = None, *, direction: str = "in",
               connection: int = 0, received_at: float | None = None) -> int:
        """Record one event and return its ``seq``.

        ``raw`` is the frame's text as received (pass it: it saves encoding
        the event again); when None the event is encoded with orjson. It may
        be text that is not JSON at all (an error event about a malformed
        frame): it is kept as is; bytes are decoded as UTF-8, undecodable
        bytes kept as ``\\x..`` escapes. ``received_at`` is ``time.time()``
        seconds, now when None.

        Raises TypeError/ValueError, recording nothing, when ``event`` is
        not a dict, ``direction`` is not "in"/"out", or ``connection`` or
        ``received_at`` is not a number of the right kind.
        """
        if event.__class__ is not dict and not isinstance(event, dict):
            raise TypeError(f"EventFrame.append needs the event as a dict, got {type(event).__name__}; "
                            "pass the undecodable text as raw= with an error event dict")
        if direction != "in" and direction != "out":
            raise ValueError(f'direction must be "in" or "out", got {direction!r}')
        if connection.__class__ is not int or not 0 <= connection <= _INT64_MAX:
            connection = _connection_number(connection)
        if received_at is None:
            received_at = time.time()
        elif received_at.__class__ is not float or not -1e11 < received_at < 1e11:
            received_at = _seconds(received_at)
        if raw is None:
            raw = _encode(event)
        partial = self._partial
        if len(partial) >= self._chunk_rows:
            self._seal()
            partial = self._partial
        seq = self._next_seq
        self._next_seq = seq + 1
        # _extract, inlined: this is the per-event cost of the whole client.
        get = event.get
        channel = get("channel")
        user = get("user")
        text = get("text")
        thread_ts = get("thread_ts")
        if channel.__class__ is not str or user.__class__ is not str or "message" in event:
            channel, user, text, thread_ts = _resolve(event, channel, user, text, thread_ts)
        row = (received_at, get("type"), get("subtype"), channel, user, text, get("ts"), thread_ts,
               get("event_ts"), get("reply_to"), direction, connection, seq, raw)
        partial.append(row)
        if self._record is not None:
            self._record(row)
        return seq

    def _push(self, row: tuple) -> None:
        """Add a finished row (used by read())."""
        if len(self._partial) >= self._chunk_rows:
            self._seal()
        self._partial.append(row)

    def _seal(self) -> None:
        rows = self._partial
        chunk = _Chunk(rows)  # the slow part, outside the lock
        with self._lock:
            self._chunks.append(chunk)
            self._chunk_total += chunk.n
            self._sealed += chunk.n
            self._partial = []
            if self.max_rows is not None:
                # Leave room for the chunk that starts filling now.
                while self._chunks and self._chunk_total + self._chunk_rows > self.max_rows:
                    self._chunk_total -= self._chunks.popleft().n

    def to_pandas(self) -> pd.DataFrame:
        """The recorded events as a DataFrame (schema in the module docstring).

        The same object is returned until a new row arrives; after that a
        new DataFrame holds the old rows plus the new ones. Returned frames
        never change.
        """
        with self._lock:
            partial = self._partial
            n = len(partial)
            key = self._sealed + n
            if self._cache is not None and key == self._cache_key:
                return self._cache
            chunks = list(self._chunks)
        # `partial` only ever grows, and is replaced (not cleared) on a seal,
        # so its first n rows are stable without holding the lock.
        if n:
            chunks.append(_Chunk(partial[:n]))
        df = _frame(chunks)
        with self._lock:
            if key > self._cache_key:
                self._cache, self._cache_key = df, key
        return df

    def __len__(self) -> int:
        with self._lock:
            return self._chunk_total + len(self._partial)

    def __repr__(self) -> str:
        where = f", record_to={self._recorder.path!r}" if self._recorder is not None else ""
        bound = f", max_rows={self.max_rows}" if self.max_rows is not None else ""
        return f"<EventFrame {len(self)} rows{bound}{where}>"

    @classmethod
    def read(cls, path: str | os.PathLike) -> "EventFrame":
        """Load a ``record_to`` recording into a new (not recording) EventFrame.

        Unreadable lines (a line cut short by a crash, typically the last)
        are skipped with a ``RuntimeWarning`` naming them; every other line
        is loaded.
        """
        frame = cls()
        bad: list[int] = []
        last_seq = -1
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                row = _parse_line(line)
                if row is None:
                    if line.strip():
                        bad.append(number)
                    continue
                frame._push(row)
                last_seq = max(last_seq, row[_SEQ])
        frame._next_seq = last_seq + 1
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

    def __enter__(self) -> "EventFrame":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
