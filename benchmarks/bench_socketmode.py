"""Socket Mode clients side by side on a burst of envelopes: CPU cost, ack latency, redeliveries, double runs.

Run: ``.venv/bin/python -m benchmarks.bench_socketmode`` (or ``python -m
benchmarks bench_socketmode``); ``--quick`` is a smoke run of 5,000
envelopes, ``--envelopes N`` sets the burst, ``--peers abc`` a subset,
``--scenarios 1``, ``--rounds R``. Results and their reading:
``docs/benchmarks.md``.

The simulated workspace runs in its own process and writes a burst of
``--envelopes`` ``events_api`` envelopes right after ``hello`` (the
number of generated events that makes exactly that many envelopes:
typing and presence are RTM-only and never become envelopes). Each peer
runs in a fresh process against a fresh workspace, acks every envelope,
and its one handler, registered for ``message`` events (about 85% of the
burst), notes the inner event's ``sim_seq``. Peers:

  a. slack_sdk's aiohttp ``SocketModeClient`` with a
     ``socket_mode_request_listeners`` listener that acks
     (``SocketModeResponse``) and then runs the handler on message events;
  b. Bolt's ``AsyncApp`` under ``AsyncSocketModeHandler``, an
     ``@app.event("message")`` handler, plus a no-op listener for the burst's
     other event types (``reaction_added``, ``member_joined_channel``):
     Bolt acks only requests a listener matched, and a real app is sent only
     the events it subscribed to, where the workspace sends it everything;
  c. rtm_notebook's ``SocketModeClient``, async handler, recording on;
  d. the same with a sync handler (run on the client's own thread).

Everything about acks comes from the workspace's own records (its
``time.monotonic()``, the same clock as the client's on one machine):
ack latency is ``acked_at - sent_at`` of every ``events_api`` ack, from the
envelope's write to the socket to its ack's arrival. "redelivered
late/all/sent": ``late`` are the workspace's ``redelivered`` records with
``acked_late`` (the attempt before was acked after its retry had been
written), ``all`` every record (a retry is made when an envelope's 3 s
pass unacked; it queues behind what the socket has not written yet, and an
ack that comes first cancels it), ``sent`` the retries actually written
(``envelopes_sent`` with ``retry_attempt`` >= 1). A double run is an event
(``sim_seq``) the handler was called for more than once.

Scenario 1: the trivial handler. "per CPU-s" is events acked per
CPU-second of the client process (user + sys of all its threads, sampled
from outside as in ``bench_client``) over the window from the first
envelope written to the last of the acks and handler calls; "client" and
"sim" are each process's CPU share of that window (100% = one core).
``--rounds`` (default 3) runs every peer that often, in alternating
order, and shows each peer's round with the most events per CPU-second.

Scenario 2: the handler takes 20 ms per message event: ``await
asyncio.sleep(0.02)`` in the async peers (after the ack, where the client
leaves the order to the handler), ``time.sleep(0.02)`` in the sync one.
slack_sdk and Bolt run each envelope's listener in a task of its own, so
their handlers overlap and the whole burst is handled; a client that runs
its handlers one call at a time does 50 a second and falls behind. Its
row counts the runs started by the end of the run (every envelope acked,
the workspace quiet for 1 s, then up to 5 s for handlers under way). The
point is whether acks wait for handlers: the ack latency, redeliveries and
double runs.

A run ends once every envelope written was acked and nothing changed for
1 s, or nothing changed for 6 s (longer than the 3 s ack timeout), or
after 120 s.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import platform
import sys
import threading
import time
import warnings
from typing import Any

from benchmarks.bench_client import SPAWN, CpuSampler

DEFAULT_ENVELOPES = 100_000
QUICK_ENVELOPES = 5_000
SEED = 1
SLOW = 0.02  # seconds per message event in scenario 2
POLL = 0.2  # seconds between the driver's looks at the workspace's records
QUIET = 1.0  # every envelope acked and nothing changed this long: done
IDLE_END = 6.0  # nothing changed this long: stalled (longer than the 3 s ack timeout)
FIRST_TIMEOUT = 90.0  # the workspace generates the whole burst before hello
RUN_CAP = 120.0  # longest a run may take from the first envelope
SETTLE = 0.5  # after the stop: the handler count unchanged this long
SETTLE_CAP = 5.0

PEERS = {
    "a": "slack_sdk aiohttp SocketModeClient, listener",
    "b": "Bolt AsyncApp + AsyncSocketModeHandler",
    "c": "rtm_notebook SocketModeClient, async handler",
    "d": "rtm_notebook SocketModeClient, sync handler",
}
SYNC_PEERS = {"d"}
RTM_NOTEBOOK_PEERS = {"c", "d"}


# ---------------------------------------------------------------- the burst

def burst_for(envelopes: int, seed: int = SEED) -> tuple[int, int]:
    """Generated events that make ``envelopes`` envelopes, and how many of those are message events.

    The workspace's traffic is seeded, so a second Traffic on a fresh
    Workspace of the same seed makes the same events as the workspace's
    own will; RTM-only ones (typing, presence) make no envelope.
    """
    from rtm_notebook.sim.model import Workspace
    from rtm_notebook.sim.socketmode import RTM_ONLY
    from rtm_notebook.sim.traffic import Traffic

    traffic = Traffic(Workspace(seed), seed)
    generated = made = messages = 0
    while made < envelopes:
        kind = traffic.next()["type"]
        generated += 1
        if kind not in RTM_ONLY:
            made += 1
            messages += kind == "message"
    return generated, messages


# ---------------------------------------------------------------- peer side

class Tally:
    """What the handler records: ``sim_seq`` of each call, in order, and the time of the first and last."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.first: float | None = None
        self.last: float | None = None
        self.finished = 0  # slow handlers that returned

    def note(self, event: dict) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.seqs.append(event.get("sim_seq"))
        self.last = now


def _handlers(tally: Tally, slow: bool):
    """The async and the sync handler body for one scenario."""
    note = tally.note
    if not slow:
        async def trivial(event):
            note(event)

        def trivial_sync(event):
            note(event)
        return trivial, trivial_sync

    async def slow_async(event):
        note(event)
        await asyncio.sleep(SLOW)
        tally.finished += 1

    def slow_sync(event):
        note(event)
        time.sleep(SLOW)
        tally.finished += 1
    return slow_async, slow_sync


async def _slack_sdk(addr: dict, tally: Tally, slow: bool, stop: asyncio.Event) -> dict:
    from slack_sdk.socket_mode.aiohttp import SocketModeClient
    from slack_sdk.socket_mode.response import SocketModeResponse
    from slack_sdk.web.async_client import AsyncWebClient

    handler, _ = _handlers(tally, slow)

    async def on_request(client, req):
        if req.type == "events_api":
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            event = req.payload["event"]
            if event.get("type") == "message":
                await handler(event)

    client = SocketModeClient(app_token=addr["app_token"],
                              web_client=AsyncWebClient(token=addr["token"], base_url=addr["base_url"]))
    client.socket_mode_request_listeners.append(on_request)
    await client.connect()
    await stop.wait()
    await _settle(tally, slow)
    await client.close()
    return {}


async def _bolt(addr: dict, tally: Tally, slow: bool, stop: asyncio.Event) -> dict:
    import re

    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
    from slack_bolt.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    # Bolt calls auth.test (once it has an answer, never again); counted
    # here because a burst at start-up sends every request after it.
    auth_tests = [0]
    original = AsyncWebClient.auth_test

    async def counting_auth_test(self, **kwargs):
        auth_tests[0] += 1
        return await original(self, **kwargs)
    AsyncWebClient.auth_test = counting_auth_test

    handler, _ = _handlers(tally, slow)
    app = AsyncApp(client=AsyncWebClient(token=addr["token"], base_url=addr["base_url"]))

    @app.event("message")
    async def on_message(event):
        await handler(event)

    # Slack sends an app only the events it subscribed to; the workspace sends
    # every event, and Bolt does not ack what no listener matched.
    @app.event(re.compile(r"^(?!message$)"))
    async def other_events():
        pass

    socket = AsyncSocketModeHandler(app, addr["app_token"])
    await socket.connect_async()
    await stop.wait()
    await _settle(tally, slow)
    await socket.close_async()
    return {"auth.test calls": auth_tests[0]}


async def _rtm_notebook(addr: dict, tally: Tally, slow: bool, stop: asyncio.Event, *, sync: bool) -> dict:
    from rtm_notebook import SocketModeClient

    async_body, sync_body = _handlers(tally, slow)
    client = SocketModeClient(app_token=addr["app_token"], token=addr["token"], base_url=addr["base_url"])
    if sync:
        @client.on("message")
        def on_message(client, event):
            sync_body(event)
    else:
        @client.on("message")
        async def on_message(client, event):
            await async_body(event)
    await client.connect()
    await stop.wait()
    await _settle(tally, slow)
    extra = {"message events counted": client.counts.get("message"), "recorded": len(client.event_frame)}
    duplicates = getattr(client, "duplicates", None)  # redeliveries it received and did not dispatch
    if duplicates is not None:
        extra["duplicates"] = duplicates
    try:
        await asyncio.wait_for(client.async_stop(), 15)
    except Exception as exc:
        extra["stop"] = repr(exc)
    return extra


async def _settle(tally: Tally, slow: bool) -> None:
    """Let handler calls already under way (or scheduled after their ack) finish before the client closes."""
    deadline = time.monotonic() + SETTLE_CAP
    seen, since = len(tally.seqs), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        n = len(tally.seqs)
        if n != seen:
            seen, since = n, time.monotonic()
        elif time.monotonic() - since >= SETTLE and (not slow or tally.finished >= n):
            return


def _runner(peer: str):
    return {
        "a": _slack_sdk,
        "b": _bolt,
        "c": lambda *a: _rtm_notebook(*a, sync=False),
        "d": lambda *a: _rtm_notebook(*a, sync=True),
    }[peer]


class _LogCount(logging.Handler):
    """Warnings and errors the peer's libraries log, counted (the first few kept) instead of printed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count: collections.Counter[str] = collections.Counter()
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count[record.levelname] += 1
        if len(self.first) < 3:
            self.first.append(f"{record.name}: {record.getMessage()[:160]}")


async def _drive(peer: str, slow: bool, addr: dict, pipe) -> dict:
    tally = Tally()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def wait_for_stop() -> None:
        pipe.recv()
        loop.call_soon_threadsafe(stop.set)
    threading.Thread(target=wait_for_stop, daemon=True).start()
    extra = await _runner(peer)(addr, tally, slow, stop)
    calls = collections.Counter(tally.seqs)
    return {"calls": len(tally.seqs), "unique": len(calls), "double": sum(1 for n in calls.values() if n > 1),
            "extra_calls": sum(n - 1 for n in calls.values() if n > 1),
            "first": tally.first, "last": tally.last, **extra}


def _peer_main(pipe, peer: str, slow: bool) -> None:
    warnings.simplefilter("ignore")
    logs = _LogCount()
    root = logging.getLogger()
    root.addHandler(logs)
    root.setLevel(logging.WARNING)
    try:
        if peer in RTM_NOTEBOOK_PEERS:
            import rtm_notebook  # noqa: F401
        else:
            import slack_bolt  # noqa: F401
            import slack_sdk.socket_mode.aiohttp  # noqa: F401
        addr = pipe.recv()
        result = asyncio.run(_drive(peer, slow, addr, pipe))
    except BaseException as exc:
        result = {"error": repr(exc)}
    result["logs"] = {"count": dict(logs.count), "first": logs.first}
    pipe.send(result)
    pipe.close()
    os._exit(0)  # threads a client left behind do not hold the process


# ---------------------------------------------------------------- workspace side

def _records(sim) -> dict:
    """What the workspace saw, summed up where it happened (the lists are long)."""
    sent = sim.envelopes_sent
    acks = [a for a in sim.acks if a["type"] == "events_api" and a["sent_at"] is not None]
    redelivered = sim.redelivered
    return {
        "dispatched": sim.events_dispatched,
        "sent": len(sent),
        "retries_sent": sum(1 for s in sent if s["retry_attempt"]),
        "first_sent": min((s["sent_at"] for s in sent), default=None),
        "acks": len(acks),
        "events_acked": len({a["event_id"] for a in acks}),
        "last_ack": max((a["acked_at"] for a in acks), default=None),
        "latency": [a["acked_at"] - a["sent_at"] for a in acks],
        "late_acks": sum(1 for a in acks if a["late"]),
        "redelivered": len(redelivered),
        "redelivered_late": sum(1 for r in redelivered if r["acked_late"]),
        "redelivery_reasons": dict(collections.Counter(r["reason"] for r in redelivered)),
        "undelivered": dict(collections.Counter(u["reason"] for u in sim.undelivered)),
        "connections": sim.socket_mode_connections,
        "opens": len(sim.connections_open_calls),
    }


def _sim_main(pipe, generated: int) -> None:
    from rtm_notebook.sim import SimWorkspace

    with SimWorkspace(seed=SEED) as sim:
        sim.burst_after_hello(generated)
        pipe.send({"base_url": sim.base_url, "token": sim.token, "app_token": sim.app_token})
        while (cmd := pipe.recv()) != "stop":
            if cmd == "progress":
                pipe.send((sim.events_dispatched, len(sim.envelopes_sent), len(sim.acks)))
            elif cmd == "records":
                pipe.send(_records(sim))
    pipe.close()


# ---------------------------------------------------------------- driver

def _until_done(sim_end, proc) -> str:
    """Watch the workspace's records until the run is over; say how it ended."""
    began = time.monotonic()
    first = None
    seen, changed = None, time.monotonic()
    while True:
        time.sleep(POLL)
        if not proc.is_alive():
            return "client ended"
        sim_end.send("progress")
        dispatched, sent, acks = sim_end.recv()
        now = time.monotonic()
        if sent == 0:
            if now - began > FIRST_TIMEOUT:
                return "no envelopes"
            continue
        if first is None:
            first = now
        if (sent, acks) != seen:
            seen, changed = (sent, acks), now
        quiet = now - changed
        if sent >= dispatched and acks >= sent and quiet >= QUIET:
            return "all acked"
        if quiet >= IDLE_END:
            return "stalled"
        if now - first > RUN_CAP:
            return "cap"


def measure(peer: str, slow: bool, generated: int) -> dict:
    """One peer against a fresh workspace, each in a fresh process."""
    sim_end, sim_child = SPAWN.Pipe()
    sim = SPAWN.Process(target=_sim_main, args=(sim_child, generated), daemon=True)
    sim.start()
    peer_end, peer_child = SPAWN.Pipe()
    proc = SPAWN.Process(target=_peer_main, args=(peer_child, peer, slow), daemon=True)
    proc.start()
    try:
        if not sim_end.poll(60):
            raise RuntimeError("the simulated workspace did not start within 60 s")
        peer_end.send(sim_end.recv())
        # The sampler stamps wall-clock time; the workspace's and the
        # handler's stamps are time.monotonic(), shifted by this offset.
        offset = time.time() - time.monotonic()
        with CpuSampler({"client": proc.pid, "sim": sim.pid}) as cpu:
            ended = _until_done(sim_end, proc)
            if proc.is_alive():
                peer_end.send("stop")
            if not peer_end.poll(60):
                raise RuntimeError(f"peer {peer} gave no result")
            result = peer_end.recv()
        sim_end.send("records")
        result["sim"] = records = sim_end.recv()
        sim_end.send("stop")
        result["ended"] = ended
        ends = [t for t in (records["last_ack"], result.get("last")) if t is not None]
        start, end = records["first_sent"], max(ends, default=None)
        if start is not None and end is not None and end > start:
            result["seconds"] = end - start
            result["cpu"] = cpu.usage(start + offset, end + offset)
        else:
            result["seconds"], result["cpu"] = None, {"client": None, "sim": None}
        return result
    finally:
        for p in (proc, sim):
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()


def _derive(r: dict) -> dict:
    if "error" in r:
        return r
    import numpy as np

    sim = r["sim"]
    lat = np.array(sim.pop("latency")) * 1e3
    r["ack_ms"] = tuple(float(x) for x in np.percentile(lat, [50, 99, 100])) if len(lat) else None
    r["rate"] = sim["events_acked"] / r["seconds"] if r["seconds"] else None
    share = r["cpu"]["client"]
    r["per_cpu"] = r["rate"] / share if r["rate"] and share else None
    return r


def _available() -> str | None:
    """Why rtm_notebook's Socket Mode client cannot run here, or None when it can."""
    try:
        from rtm_notebook import SocketModeClient  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# ---------------------------------------------------------------- tables

def _n(x: Any, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


def _ack(r: dict) -> str:
    a = r.get("ack_ms")
    return f"{'-':>8} {'-':>8} {'-':>8}" if a is None else f"{a[0]:8.1f} {a[1]:8.1f} {a[2]:8.1f}"


def _redeliveries(r: dict) -> str:
    s = r["sim"]
    return f"{s['redelivered_late']:,} / {s['redelivered']:,} / {s['retries_sent']:,}"


def _runs(r: dict, messages: int) -> str:
    return f"{r['unique']:,} of {messages:,}"


LEGEND = [
    "  per CPU-s: events acked per CPU-second of the client process, first envelope written to last ack or handler",
    "  call; ack: workspace's write -> ack received (the workspace's records); redelivered late: retries whose earlier",
    "  attempt was acked after the retry was written; all: every retry made at the 3 s timeout; sent: retries written;",
    "  double: events (sim_seq) the handler ran more than once",
]
LEGEND_SLOW = [
    "  handler runs: calls started by the end (every envelope acked, the workspace quiet for 1 s, then up to 5 s",
    "  for handlers under way); a handler run one call at a time (50/s) falls behind, which is the point: do acks wait?",
]


def table_trivial(results: dict[str, dict], runs: dict[str, list[dict]], envelopes: int, messages: int) -> list[str]:
    rounds = max((len(v) for v in runs.values()), default=1)
    lines = [f"Scenario 1: burst of {envelopes:,} envelopes after hello, trivial handler on the {messages:,} message "
             f"events, recording on (rtm_notebook)"
             + (f"; best of {rounds} rounds by per CPU-s, 'all rounds' per CPU-s of each" if rounds > 1 else ""),
             f"{'peer':<46} {'acked':>8} {'seconds':>7} {'events/s':>8} {'client':>6} {'sim':>5} {'per CPU-s':>9} "
             f"{'ack p50':>8} {'ack p99':>8} {'ack max':>8} {'redelivered late/all/sent':>26} {'double':>6} "
             f"{'handler runs':>18}  {'end':<10}" + ("  all rounds" if rounds > 1 else ""),
             f"{'':<46} {'':>8} {'':>7} {'':>8} {'':>6} {'':>5} {'':>9} {'ms':>8} {'ms':>8} {'ms':>8}"]
    for key, r in results.items():
        label = f"{key}. {PEERS[key]}"
        if "unavailable" in r:
            lines.append(f"{label:<46} not available ({r['unavailable']})")
            continue
        if "error" in r:
            lines.append(f"{label:<46} error: {r['error']}")
            continue
        each = " / ".join(_n(x.get("per_cpu")) for x in runs.get(key, []))
        lines.append(
            f"{label:<46} {r['sim']['events_acked']:>8,} {_n(r['seconds'], '.2f'):>7} {_n(r['rate']):>8} "
            f"{_pct(r['cpu']['client']):>6} {_pct(r['cpu']['sim']):>5} {_n(r['per_cpu']):>9} {_ack(r)} "
            f"{_redeliveries(r):>26} {r['double']:>6,} {_runs(r, messages):>18}  {r['ended']:<10}"
            + (f"  {each}" if rounds > 1 else ""))
    return lines


def table_slow(results: dict[str, dict], envelopes: int, messages: int) -> list[str]:
    lines = [f"Scenario 2: the same burst of {envelopes:,} envelopes, the handler takes {SLOW * 1e3:.0f} ms per message "
             f"event ({messages:,} of them)",
             f"{'peer':<46} {'handler body':<24} {'acked':>8} {'ack p50':>8} {'ack p99':>8} {'ack max':>8} "
             f"{'redelivered late/all/sent':>26} {'double':>6} {'handler runs':>18}  {'end':<10}",
             f"{'':<46} {'':<24} {'':>8} {'ms':>8} {'ms':>8} {'ms':>8}"]
    for key, r in results.items():
        label = f"{key}. {PEERS[key]}"
        body = "time.sleep(0.02)" if key in SYNC_PEERS else "await asyncio.sleep(0.02)"
        if "unavailable" in r:
            lines.append(f"{label:<46} {body:<24} not available ({r['unavailable']})")
            continue
        if "error" in r:
            lines.append(f"{label:<46} {body:<24} error: {r['error']}")
            continue
        lines.append(f"{label:<46} {body:<24} {r['sim']['events_acked']:>8,} {_ack(r)} {_redeliveries(r):>26} "
                     f"{r['double']:>6,} {_runs(r, messages):>18}  {r['ended']:<10}")
    return lines


def notes(scenario: str, results: dict[str, dict]) -> list[str]:
    """What else each run's records say, where it is not what one would expect."""
    lines = []
    for key, r in results.items():
        if "unavailable" in r or "error" in r:
            continue
        s, said = r["sim"], []
        if s["opens"] != 1:
            said.append(f"{s['opens']} apps.connections.open calls")
        if s["undelivered"]:
            said.append(f"given up by the workspace: {s['undelivered']}")
        if s["redelivery_reasons"]:
            said.append(f"redelivery reasons {s['redelivery_reasons']}")
        if s["late_acks"]:
            said.append(f"{s['late_acks']:,} acks late")
        if s["acks"] != s["events_acked"]:
            said.append(f"{s['acks']:,} acks for {s['events_acked']:,} events")
        if r.get("extra_calls"):
            said.append(f"{r['extra_calls']:,} extra handler calls")
        if r.get("auth.test calls", 1) != 1:
            said.append(f"{r['auth.test calls']:,} auth.test calls")
        if "recorded" in r:
            said.append(f"recorded {r['recorded']:,} rows, counts['message'] {_n(r['message events counted'])}"
                        + (f", duplicates {r['duplicates']:,}" if "duplicates" in r else ""))
        if r.get("stop"):
            said.append(f"async_stop: {r['stop']}")
        logs = r.get("logs", {})
        if logs.get("count"):
            said.append(f"logged {logs['count']}, first: {logs['first']}")
        if said:
            lines.append(f"  {scenario}{key}: " + "; ".join(said))
    return lines


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envelopes", type=int, default=None,
                        help=f"envelopes in the burst (default {DEFAULT_ENVELOPES:,}; --quick: {QUICK_ENVELOPES:,})")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a small burst, one round")
    parser.add_argument("--peers", default="".join(PEERS), help="which peers to run, e.g. ab (default: all)")
    parser.add_argument("--scenarios", default="12", help="1 (trivial handler), 2 (20 ms handler) or 12")
    parser.add_argument("--rounds", type=int, default=None,
                        help="scenario 1 runs per peer, in alternating order; the best per CPU-s is shown "
                             "(default 3; --quick: 1)")
    args = parser.parse_args()
    envelopes = args.envelopes or (QUICK_ENVELOPES if args.quick else DEFAULT_ENVELOPES)
    rounds = args.rounds or (1 if args.quick else 3)
    peers = [p for p in PEERS if p in args.peers]
    scenarios = [s for s in "12" if s in args.scenarios]
    if envelopes < 1 or rounds < 1 or not peers or not scenarios:
        parser.error("--envelopes and --rounds must be at least 1, --peers must name at least one of "
                     + "".join(PEERS) + " and --scenarios one of 1, 2")

    import aiohttp
    import slack_bolt
    import slack_sdk

    started = time.monotonic()
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, slack_sdk "
          f"{slack_sdk.version.__version__}, slack_bolt {slack_bolt.version.__version__}", flush=True)
    generated, messages = burst_for(envelopes)
    missing = _available()
    unavailable = {"unavailable": missing} if missing else None

    def run(peer: str, slow: bool) -> dict:
        if unavailable and peer in RTM_NOTEBOOK_PEERS:
            return dict(unavailable)
        r = _derive(measure(peer, slow, generated))
        print(f"  scenario {'2' if slow else '1'}, {peer}: {r.get('ended', r.get('error'))}", flush=True,
              file=sys.stderr)
        return r

    out: dict[str, Any] = {"envelopes": envelopes}
    report: list[str] = []
    if "1" in scenarios:
        runs: dict[str, list[dict]] = {p: [] for p in peers}
        for round_no in range(rounds):
            for peer in peers if round_no % 2 == 0 else peers[::-1]:
                runs[peer].append(run(peer, slow=False))
        best = {p: max(rs, key=lambda r: r.get("per_cpu") or 0.0) for p, rs in runs.items()}
        report += ["", *table_trivial(best, runs, envelopes, messages), *LEGEND]
        out["scenario1"] = {p: _summary(r) for p, r in best.items()}
        trivial_notes = notes("1", best)
    else:
        trivial_notes = []
    if "2" in scenarios:
        slow = {p: run(p, slow=True) for p in peers}
        report += ["", *table_slow(slow, envelopes, messages), *LEGEND_SLOW]
        out["scenario2"] = {p: _summary(r) for p, r in slow.items()}
        slow_notes = notes("2", slow)
    else:
        slow_notes = []
    if trivial_notes or slow_notes:
        report += ["", "Notes (scenario and peer):", *trivial_notes, *slow_notes]
    print("\n".join(report))
    print(f"\n(whole run {time.monotonic() - started:.0f} s; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    print(json.dumps(out))


def _summary(r: dict) -> dict:
    if "unavailable" in r:
        return {"available": False}
    if "error" in r:
        return {"error": r["error"]}
    s = r["sim"]
    ack = r.get("ack_ms")
    return {"events_acked": s["events_acked"], "per_cpu_s": round(r["per_cpu"]) if r.get("per_cpu") else None,
            "ack_p50_ms": round(ack[0], 2) if ack else None, "ack_p99_ms": round(ack[1], 2) if ack else None,
            "redelivered_late": s["redelivered_late"], "redelivered": s["redelivered"],
            "retries_sent": s["retries_sent"],
            "double_runs": r["double"], "handler_runs": r["unique"], "ended": r["ended"]}


if __name__ == "__main__":
    main()
