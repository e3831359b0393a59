"""Helpers for the reliability suite: waiting on recorded facts, never on clocks.

Time appears here only as hang guards (a broken test fails instead of
hanging). Assertions are about what was recorded: which frames, in which
order, on which connection.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict, deque

import orjson

from rtm_notebook import RTMClient

import rtm_support
from rtm_support import client_for, general, human  # noqa: F401  (re-exported for the suite)

# A hang guard only, never a speed assertion; longer than the unit tests'
# because this suite waits on 100k-frame bursts and reconnect storms.
GUARD = 30.0


async def until(pred, what: str = "condition", guard: float = GUARD) -> None:
    """``rtm_support.until`` with this suite's longer default guard."""
    await rtm_support.until(pred, what, guard)


class SeqTap:
    """A client tap that checks, per connection, that sim_seq arrives as 1, 2, 3, ...

    O(1) per event (as taps must be): it keeps the last sim_seq and a count
    per connection and remembers any event that breaks the sequence.
    """

    def __init__(self, rtm: RTMClient) -> None:
        self.rtm = rtm
        self.last: dict[int, int] = defaultdict(int)
        self.problems: list[tuple[int, int, int]] = []  # (connection, expected, got)
        self.markers: list[str] = []
        self.errors: list[dict] = []  # every error event, as handlers see it
        rtm.add_tap(self)

    def __call__(self, event: dict) -> None:
        seq = event.get("sim_seq")
        if seq is None:
            if event.get("type") == "error":
                self.errors.append(event)
            return
        conn = self.rtm.connection_number
        expected = self.last[conn] + 1
        if seq != expected:
            self.problems.append((conn, expected, seq))
        self.last[conn] = seq
        text = event.get("text")
        if text.__class__ is str and text.startswith("MARK "):
            self.markers.append(text)


async def mark(sim, tap: SeqTap, label: str) -> None:
    """Post a marker through the workspace and wait until the client recorded it.

    The marker is queued behind everything the workspace already queued for
    the socket, so once it is recorded every earlier frame was sent and read.
    """
    text = f"MARK {label}"
    sim.post_message(human(sim), "general", text)
    await until(lambda: text in tap.markers, f"marker {label!r}")


def recorded_seqs(rtm: RTMClient) -> dict[int, list[int]]:
    """connection -> the sim_seq of every received row, in recording order (from rtm.events)."""
    df = rtm.events
    rows = df[df["direction"] == "in"]
    out: dict[int, list[int]] = defaultdict(list)
    loads = orjson.loads
    for conn, raw in zip(rows["connection"].tolist(), rows["raw"].tolist()):
        try:
            event = loads(raw)
        except orjson.JSONDecodeError:
            continue  # a malformed frame's error row: it carries no sim_seq
        if isinstance(event, dict) and "sim_seq" in event:
            out[conn].append(event["sim_seq"])
    return dict(out)


def assert_exactly_once_in_order(rtm: RTMClient, sim, *, complete: set[int] | None = None) -> int:
    """Every frame the workspace numbered is recorded once, in order, per connection.

    For connections in ``complete`` (default: all) the client must hold all
    ``sim.sent[n]`` frames; for the others (the TCP connection was aborted,
    so frames written to a dead socket may never have reached the client)
    what was recorded must be a gapless prefix 1..k. Returns the number of
    numbered frames recorded.
    """
    seqs = recorded_seqs(rtm)
    sent = sim.sent
    total = 0
    for conn, got in seqs.items():
        assert got == list(range(1, len(got) + 1)), (
            f"connection {conn}: sim_seq not 1..{len(got)} in order "
            f"(first bad index {next(i for i, s in enumerate(got) if s != i + 1)})")
        assert conn in sent, f"connection {conn} recorded frames the workspace never numbered"
        assert len(got) <= sent[conn]
        if complete is None or conn in complete:
            assert len(got) == sent[conn], f"connection {conn}: sent {sent[conn]}, recorded {len(got)}"
        total += len(got)
    for conn, n in sent.items():
        if n and (complete is None or conn in complete):
            assert conn in seqs, f"connection {conn}: the workspace sent {n} frames, none recorded"
    return total


def rows_of(rtm: RTMClient, type_: str):
    df = rtm.events
    return df[df["type"] == type_]


def closes(rtm: RTMClient) -> list[dict]:
    """The client's recorded ``close`` events (one per ended connection), decoded."""
    return [orjson.loads(r) for r in rows_of(rtm, "close")["raw"].tolist()]


def errors(rtm: RTMClient) -> list[dict]:
    """The recorded error rows whose ``raw`` is the error event itself (the
    client's own errors); a malformed frame's row keeps the frame's text as
    ``raw`` instead, and comes back as ``{"malformed": raw}``."""
    out = []
    for raw in rows_of(rtm, "error")["raw"].tolist():
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            event = None
        out.append(event if isinstance(event, dict) and event.get("type") == "error" else {"malformed": raw})
    return out


def assert_nothing_left(rtm: RTMClient, sim, tasks_before: set, threads_before: set) -> None:
    """No task, thread or socket of the client is left behind."""
    assert rtm.state == "stopped"
    leftover = {t for t in asyncio.all_tasks() - tasks_before if not t.done()}
    assert leftover == set(), leftover
    # asyncio_N threads are the loop's default executor (DNS lookups): the
    # loop owns and reuses them, the client does not.
    extra_threads = {t for t in threading.enumerate()
                     if t.is_alive() and not t.name.startswith("asyncio_")} - threads_before
    assert extra_threads == set(), extra_threads
    assert rtm._link is None


def reachable(roots, depth: int = 6, per_container: int = 300):
    """Every rtm_notebook object (and exception) reachable from ``roots``
    through attributes and containers, each once."""
    seen: set[int] = set()
    frontier = [(r, 0) for r in roots]
    while frontier:
        obj, d = frontier.pop()
        if id(obj) in seen or d > depth or isinstance(obj, (str, bytes, int, float, bool, type(None))):
            continue
        seen.add(id(obj))
        module = type(obj).__module__ or ""
        ours = module.startswith("rtm_notebook") or isinstance(obj, BaseException)
        if ours:
            yield obj
        if isinstance(obj, dict):
            children = list(obj.values())[:per_container]
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            children = list(obj)[:per_container]
        elif ours:
            children = list(getattr(obj, "__dict__", {}).values())
            for slot in getattr(type(obj), "__slots__", ()):
                if hasattr(obj, slot):
                    children.append(getattr(obj, slot))
            if isinstance(obj, BaseException):
                children += [obj.__cause__, obj.__context__, *obj.args]
        else:
            continue  # third-party internals (loops, httpx pools) are not ours to render
        frontier.extend((c, d + 1) for c in children)
