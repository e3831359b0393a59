"""RTM clients side by side on the simulated workspace's firehose: throughput and latency.

Run: ``.venv/bin/python -m benchmarks.bench_client`` (``--events N`` in the
burst, ``--rounds R`` throughput runs per peer of which the best is shown,
``--latency-seconds S`` per latency run, ``--peers adf`` for a subset).
Results and their reading: ``docs/benchmarks.md``.

Throughput. The simulated workspace runs in its own process (so it never
shares a GIL with the client under test) and writes a burst of ``--events``
generated events right after ``hello``. Each peer runs in a fresh process
against a fresh workspace and counts, in a trivial handler, every event
that carries the workspace's ``sim_seq``. Its clock runs from ``hello`` (or
the first event, if a peer's threads deliver that first) to the last event
delivered; a run ends when every event arrived or the count stopped
growing for 2 s. Peers:

  a. a bare ``websockets`` receive loop doing ``json.loads`` on each frame
     (the baseline every ratio is taken against);
  b. the same loop with ``orjson.loads``;
  c. rtm_notebook's RTMClient, async handler, recording off;
  d. rtm_notebook's RTMClient, async handler, recording on (the default);
  e. rtm_notebook's RTMClient, sync handler (its worker thread);
  f. ``slack_sdk.rtm.RTMClient(run_async=True)``, async callback (aiohttp);
  g. ``slack_sdk.rtm_v2.RTMClient``, handler on its thread pool.

(c) is ``RTMClient(record=False)``: everything on the intake path but the
EventFrame append.

Latency. The workspace sends 1,000 events/s. A message or reaction carries
``event_ts``, the wall-clock time at which the workspace made the event and
queued it to the socket (same machine, same clock), so "sim → handler" is
``time.time()`` at handler start minus ``event_ts``: the wire, the client's
read, decode, record and dispatch. For rtm_notebook, "received → handler"
is handler start minus the ``received_at`` the client recorded for that
event (intake to handler only). The first 0.5 s of each run are discarded.

Targets: (d) ≥ 0.8× (a), aim > (a) (issue 3); (d)/(c) ≥ 0.9 (issue 4);
(d) beats (f) and (g) in events delivered per second and in events
delivered.

Rounds (default 7) run every peer once each, in alternating order. The
table shows each peer's best round. The recording overhead, a 10% effect
on a machine whose speed moves by more than that from second to second,
is judged on the median of the rounds' own (d)/(c) ratios when there are
three rounds or more: the two runs of a round are seconds apart.

The machine is shared, so wall-clock events/s move with whatever else
runs. "client" and "sim" are each process's CPU time over the peer's
measured window divided by the window (100% = one core). "per CPU-s" is
events delivered per CPU-second of the client process: when the client is
the bottleneck (the workspace's share stays well below one core) it is
the rate the client reaches on a core of its own, and it is what the
ratios and the targets use; the wall-clock ratio is printed beside each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
import warnings
from typing import Any

import psutil

DEFAULT_EVENTS = 200_000
LATENCY_RATE = 1_000
WARMUP = 0.5
IDLE_END = 2.0  # a run ends once the count stopped growing this long
FIRST_EVENT_TIMEOUT = 90.0  # the workspace generates the whole burst before hello
RUN_CAP = 60.0  # longest a peer may take to deliver the burst, from its first event
SPAWN = multiprocessing.get_context("spawn")

# Every event type the workspace's traffic generator makes; slack_sdk.rtm
# has no wildcard, so its callback is registered for each of them.
TRAFFIC_TYPES = ("message", "reaction_added", "user_typing", "presence_change", "member_joined_channel")

PEERS = {
    "a": "websockets + json.loads (baseline)",
    "b": "websockets + orjson.loads",
    "c": "rtm_notebook, async handler, recording off",
    "d": "rtm_notebook, async handler, recording on",
    "e": "rtm_notebook, sync handler, recording on",
    "f": "slack_sdk.rtm RTMClient(run_async=True)",
    "g": "slack_sdk.rtm_v2 RTMClient",
}
# The baseline shows the floor (workspace, wire, one decode); then the two handler kinds.
LATENCY_PEERS = ("a", "d", "e")


# ---------------------------------------------------------------- peer side

class Tally:
    """What the trivial handler of every peer records.

    ``note`` is the handler body: in throughput mode the ``sim_seq`` of each
    event and the time of the first and last one; in latency mode also the
    event's ``event_ts``. ``list.append`` is atomic, so slack_sdk.rtm_v2's
    pool threads can share one Tally.
    """

    def __init__(self, latency: bool) -> None:
        self.latency = latency
        self.seqs: list[int] = []
        self.times: list[tuple[int, float, str]] = []
        self.start: float | None = None
        self.last: float | None = None
        self.note = self._timed if latency else self._count

    def _count(self, event: dict) -> None:
        now = time.time()
        if event.get("type") == "hello":  # hello has a sim_seq too, but it is not traffic
            if self.start is None:
                self.start = now
            return
        seq = event.get("sim_seq")
        if seq is None:
            return
        if self.start is None:
            self.start = now
        self.seqs.append(seq)
        self.last = now

    def _timed(self, event: dict) -> None:
        now = time.time()
        self._count(event)
        ets = event.get("event_ts")
        if ets is not None:
            self.times.append((event["sim_seq"], now, ets))


async def _socket_url(base_url: str, token: str) -> str:
    import httpx

    async with httpx.AsyncClient() as http:
        body = (await http.post(base_url + "rtm.connect", headers={"Authorization": f"Bearer {token}"})).json()
    return body["url"]


async def _bare(base_url: str, token: str, note, stop: asyncio.Event, *, loads) -> None:
    import websockets

    url = await _socket_url(base_url, token)
    async with websockets.connect(url) as ws:
        async def read() -> None:
            async for frame in ws:
                note(loads(frame))

        reader = asyncio.create_task(read())
        await stop.wait()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def _rtm_notebook(base_url: str, token: str, note, stop: asyncio.Event, *, sync: bool, record: bool,
                        latency: bool) -> dict[int, float]:
    """Run the client; in latency mode return sim_seq -> the received_at it recorded."""
    from rtm_notebook import RTMClient

    rtm = RTMClient(token=token, base_url=base_url, record=record)
    if sync:
        def trivial(client, event):
            note(event)
    else:
        async def trivial(client, event):
            note(event)
    rtm.on("*")(trivial)
    await rtm.connect()
    await stop.wait()
    await rtm.async_stop()
    received: dict[int, float] = {}
    if record and latency:
        import orjson

        df = rtm.events
        df = df[df["direction"] == "in"]
        when = df["received_at"].astype("int64").to_numpy() / 1e6
        for raw, t in zip(df["raw"], when):
            seq = orjson.loads(raw).get("sim_seq")
            if seq is not None:
                received[seq] = float(t)
    return received


async def _slack_v1(base_url: str, token: str, note, stop: asyncio.Event) -> None:
    from slack_sdk.rtm import RTMClient

    async def trivial(**payload):
        note(payload["data"])

    async def hello(**payload):
        note({"type": "hello"})

    for event in TRAFFIC_TYPES:
        RTMClient.on(event=event, callback=trivial)
    RTMClient.on(event="hello", callback=hello)
    rtm = RTMClient(token=token, run_async=True, base_url=base_url, loop=asyncio.get_running_loop())
    session = rtm.start()
    await stop.wait()
    await rtm.async_stop()
    session.cancel()
    await asyncio.gather(session, return_exceptions=True)


async def _slack_v2(base_url: str, token: str, note, stop: asyncio.Event) -> None:
    from slack_sdk.rtm_v2 import RTMClient

    # ping_interval as the other clients' (30 s): with its default of 5 s it
    # reconnects while the workspace is busy generating the burst.
    rtm = RTMClient(token=token, base_url=base_url, ping_interval=30)

    @rtm.on("*")
    def trivial(client, event):
        note(event)

    await asyncio.to_thread(rtm.connect)
    await stop.wait()
    await asyncio.to_thread(rtm.close)


def _runner(peer: str, latency: bool):
    import json as std_json

    import orjson

    return {
        "a": lambda *a: _bare(*a, loads=std_json.loads),
        "b": lambda *a: _bare(*a, loads=orjson.loads),
        "c": lambda *a: _rtm_notebook(*a, sync=False, record=False, latency=latency),
        "d": lambda *a: _rtm_notebook(*a, sync=False, record=True, latency=latency),
        "e": lambda *a: _rtm_notebook(*a, sync=True, record=True, latency=latency),
        "f": _slack_v1,
        "g": _slack_v2,
    }[peer]


async def _until_done(tally: Tally, expect: int | None, seconds: float | None, runner: asyncio.Task) -> str:
    """Wait until the run is over; return how it ended."""
    began = time.monotonic()
    seen, changed = 0, time.monotonic()
    while True:
        await asyncio.sleep(0.05)
        if runner.done():
            return "client ended"
        now = time.monotonic()
        n = len(tally.seqs)
        if seconds is not None:
            if tally.start is not None and time.time() - tally.start >= seconds:
                return "time"
            if tally.start is None and now - began > FIRST_EVENT_TIMEOUT:
                return "no events"
            continue
        if n >= expect:
            return "all"
        if n == 0:
            if now - began > FIRST_EVENT_TIMEOUT:
                return "no events"
            continue
        if n != seen:
            seen, changed = n, now
        elif now - changed >= IDLE_END:
            return "stalled"
        if tally.start is not None and time.time() - tally.start > RUN_CAP:
            return "cap"


async def _drive(peer: str, base_url: str, token: str, expect: int | None, seconds: float | None) -> dict:
    tally = Tally(latency=seconds is not None)
    stop = asyncio.Event()
    runner = asyncio.create_task(_runner(peer, tally.latency)(base_url, token, tally.note, stop))
    ended = await _until_done(tally, expect, seconds, runner)
    stop.set()
    try:
        received = await asyncio.wait_for(runner, 15)
    except Exception as exc:  # a peer that fails to stop still has its counts
        received, ended = None, f"{ended}; stop failed: {exc!r}"
    seqs = tally.seqs
    out = {"ended": ended, "start": tally.start, "last": tally.last, "count": len(seqs),
           "unique": len(set(seqs)), "in_order": seqs == sorted(seqs)}
    if seconds is not None:
        out.update(_latencies(tally, received or {}))
    return out


def _latencies(tally: Tally, received: dict[int, float]) -> dict:
    import numpy as np

    cut = (tally.start or 0.0) + WARMUP
    wire, inside = [], []
    for seq, at, ets in tally.times:
        if at < cut:
            continue
        wire.append(at - float(ets))
        if seq in received:
            inside.append(at - received[seq])

    def pct(values: list[float]) -> tuple[float, float] | None:
        if not values:
            return None
        p50, p99 = np.percentile(np.array(values) * 1e3, [50, 99])
        return float(p50), float(p99)

    return {"samples": len(wire), "wire": pct(wire), "inside": pct(inside), "inside_samples": len(inside)}


_IMPORTS = {"a": ("websockets", "httpx"), "b": ("websockets", "httpx"), "c": ("rtm_notebook",),
            "d": ("rtm_notebook",), "e": ("rtm_notebook",), "f": ("slack_sdk.rtm",), "g": ("slack_sdk.rtm_v2",)}


def _peer_main(pipe, peer: str, expect: int | None, seconds: float | None) -> None:
    warnings.simplefilter("ignore")
    try:
        # Imported while the workspace starts; the workspace's address comes after.
        for module in _IMPORTS[peer]:
            __import__(module)
        base_url, token = pipe.recv()
        result = asyncio.run(_drive(peer, base_url, token, expect, seconds))
    except BaseException as exc:
        result = {"error": repr(exc)}
    pipe.send(result)
    pipe.close()
    # slack_sdk.rtm_v2 leaves non-daemon worker threads behind; the
    # results are sent, so the process ends here.
    os._exit(0)


# ---------------------------------------------------------------- workspace side

def _sim_main(pipe, rate: float, burst: int) -> None:
    from rtm_notebook.sim import SimWorkspace

    with SimWorkspace(seed=1, rate=rate) as sim:
        if burst:
            sim.burst_after_hello(burst)
        pipe.send((sim.base_url, sim.token))
        while (cmd := pipe.recv()) != "stop":
            if cmd == "sent":
                pipe.send(sim.sent)
    pipe.close()


# ---------------------------------------------------------------- driver

class CpuSampler:
    """CPU time of some processes, sampled with wall-clock stamps from a thread."""

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            row = {}
            for name, proc in self.procs.items():
                try:
                    t = proc.cpu_times()
                    row[name] = t.user + t.system + t.children_user + t.children_system
                except psutil.Error:
                    row[name] = float("nan")
            self.samples.append((time.time(), row))
            self._stop.wait(self.interval)

    def usage(self, start: float | None, end: float | None) -> dict[str, float | None]:
        """Each process's CPU share (1.0 = one core) between two wall-clock times."""
        if start is None or end is None:
            return {name: None for name in self.procs}
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return {name: None for name in self.procs}
        (t0, a), (t1, b) = inside[0], inside[-1]
        return {name: (b[name] - a[name]) / (t1 - t0) for name in self.procs}


def _rates(r: dict) -> dict:
    if "error" not in r:
        r["seconds"] = (r["last"] - r["start"]) if r["start"] and r["last"] else 0.0
        r["rate"] = r["unique"] / r["seconds"] if r["seconds"] > 0 else 0.0
        share = r["cpu"]["client"]
        r["per_cpu"] = r["rate"] / share if share else None
    return r


def _goodness(r: dict) -> tuple:
    """Best run of a peer: most events delivered, then most per CPU-second, then per wall second."""
    return (r.get("unique", -1), r.get("per_cpu") or 0.0, r.get("rate", 0.0))


def measure(peer: str, *, events: int | None = None, seconds: float | None = None) -> dict:
    """One peer against a fresh workspace, each in a fresh process."""
    sim_end, sim_child = SPAWN.Pipe()
    rate = float(LATENCY_RATE) if seconds is not None else 0.0
    sim = SPAWN.Process(target=_sim_main, args=(sim_child, rate, events or 0), daemon=True)
    sim.start()
    peer_end, peer_child = SPAWN.Pipe()
    proc = SPAWN.Process(target=_peer_main, args=(peer_child, peer, events, seconds), daemon=True)
    proc.start()
    try:
        if not sim_end.poll(60):
            raise RuntimeError("the simulated workspace did not start within 60 s")
        peer_end.send(sim_end.recv())
        with CpuSampler({"client": proc.pid, "sim": sim.pid}) as cpu:
            if not peer_end.poll(FIRST_EVENT_TIMEOUT + RUN_CAP + 60):
                raise RuntimeError(f"peer {peer} gave no result")
            result = peer_end.recv()
        result["cpu"] = cpu.usage(result.get("start"), result.get("last"))
        sim_end.send("sent")
        # Each socket's hello carries a sim_seq too; the table counts events after it.
        result["sent"] = sum(n - 1 for n in sim_end.recv().values())
        sim_end.send("stop")
        return result
    finally:
        for p in (proc, sim):
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def throughput_table(results: dict[str, dict], runs: dict[str, list[dict]], events: int) -> list[str]:
    base = results.get("a", {}).get("per_cpu")
    rounds = max(len(rs) for rs in runs.values())
    lines = [f"Throughput: burst of {events:,} events after hello, trivial handler counting sim_seq "
             + (f"(best of {rounds} rounds; 'all rounds' is per CPU-s of each)" if rounds > 1 else "(one round)"),
             f"{'peer':<46} {'sent':>8} {'delivered':>9} {'order':>5} {'seconds':>7} {'events/s':>9} "
             f"{'client':>6} {'sim':>5} {'per CPU-s':>9} {'x (a)':>6}  {'end':<8} all rounds"]
    for key, r in results.items():
        label = f"{key}. {PEERS[key]}"
        if "error" in r:
            lines.append(f"{label:<46} error: {r['error']}")
            continue
        per_cpu = f"{r['per_cpu']:,.0f}" if r["per_cpu"] else "-"
        ratio = f"{r['per_cpu'] / base:.2f}" if base and r["per_cpu"] else "-"
        each = " / ".join(f"{x['per_cpu']:,.0f}" if x.get("per_cpu") else "-" for x in runs[key])
        lines.append(
            f"{label:<46} {r['sent']:>8,} {r['unique']:>9,} {'yes' if r['in_order'] else 'no':>5} "
            f"{r['seconds']:>7.2f} {r['rate']:>9,.0f} {_fmt_pct(r['cpu']['client']):>6} "
            f"{_fmt_pct(r['cpu']['sim']):>5} {per_cpu:>9} {ratio:>6}  {r['ended']:<8} {each}")
    return lines


def latency_table(results: dict[str, dict]) -> list[str]:
    def pair(p) -> str:
        return "-" if p is None else f"{p[0]:7.2f} {p[1]:7.2f}"

    lines = [f"Latency at {LATENCY_RATE:,} events/s (ms; events with event_ts, first {WARMUP} s dropped)",
             f"{'peer':<46} {'samples':>7}  {'sim -> handler':>15}  {'received -> handler':>19}",
             f"{'':<46} {'':>7}  {'p50':>7} {'p99':>7}  {'p50':>9} {'p99':>9}"]
    for key, r in results.items():
        label = f"{key}. {PEERS[key]}"
        if "error" in r:
            lines.append(f"{label:<46} error: {r['error']}")
            continue
        inside = "-" if r["inside"] is None else f"{r['inside'][0]:9.3f} {r['inside'][1]:9.3f}"
        lines.append(f"{label:<46} {r['samples']:>7}  {pair(r['wire'])}  {inside}")
    return lines


def paired_ratios(runs: dict[str, list[dict]], x: str, y: str) -> list[float]:
    """Per-round ratios (x)/(y), events per CPU-second: the two runs of a
    round were taken a few seconds apart, so a slow spell of the machine
    tends to hit both."""
    return [rx["per_cpu"] / ry["per_cpu"] for rx, ry in zip(runs.get(x, []), runs.get(y, []))
            if rx.get("per_cpu") and ry.get("per_cpu")]


def verdicts(tp: dict[str, dict], lat: dict[str, dict], runs: dict[str, list[dict]]) -> tuple[list[str], dict]:
    cpu = {k: r.get("per_cpu") for k, r in tp.items()}
    wall = {k: r.get("rate") for k, r in tp.items()}
    got = {k: r.get("unique") for k, r in tp.items()}
    lines, summary = [], {}

    def check(name: str, x: str, y: str, factor: float, text: str) -> None:
        if not (wall.get(x) and wall.get(y)):
            return
        if cpu.get(x) and cpu.get(y):
            basis, how = cpu, f"{cpu[x] / cpu[y]:.2f} per CPU-second ({wall[x] / wall[y]:.2f} in wall-clock events/s)"
        else:  # a run too short for the CPU sampler
            basis, how = wall, f"{wall[x] / wall[y]:.2f} in wall-clock events/s (too short to sample CPU)"
        ok = basis[x] > factor * basis[y] if factor == 1.0 else basis[x] >= factor * basis[y]
        summary[name] = ok
        lines.append(f"  [{'MET ' if ok else 'MISS'}] {text}: {how}")

    check("d_vs_a_0.8", "d", "a", 0.8, "(d) recording on >= 0.8x (a)")
    check("d_beats_a", "d", "a", 1.0, "aim: (d) > (a) outright")
    pairs = paired_ratios(runs, "d", "c")
    if len(pairs) >= 3:
        # Best-of-rounds lets one lucky round of either side decide; the
        # median of the rounds' own ratios says what a typical round did.
        ratio = statistics.median(pairs)
        summary["d_vs_c_0.9"] = ok = ratio >= 0.9
        summary["d_vs_c_paired"] = round(ratio, 3)
        lines.append(f"  [{'MET ' if ok else 'MISS'}] recording overhead: (d)/(c) >= 0.9: {ratio:.2f}, the median "
                     f"of the {len(pairs)} rounds' ratios per CPU-second "
                     f"({', '.join(f'{p:.2f}' for p in pairs)}; best rounds "
                     f"{cpu['d'] / cpu['c']:.2f})")
    else:
        check("d_vs_c_0.9", "d", "c", 0.9, "recording overhead: (d)/(c) >= 0.9")
    for peer in ("f", "g"):
        if got.get("d") is not None and got.get(peer) is not None:
            check(f"d_beats_{peer}_speed", "d", peer, 1.0, f"(d) faster than ({peer})")
            ok = got["d"] >= got[peer]
            summary[f"d_delivers_{peer}"] = ok
            lines.append(f"  [{'MET ' if ok else 'MISS'}] (d) delivers at least as many as ({peer}): "
                         f"{got['d']:,} vs {got[peer]:,}")
    for key in ("d", "e"):
        r = lat.get(key)
        if r and r.get("wire"):
            summary[f"latency_{key}_ms"] = {"p50": round(r["wire"][0], 3), "p99": round(r["wire"][1], 3)}
    return lines, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events in the burst after hello")
    parser.add_argument("--latency-seconds", type=float, default=3.0, help="length of each latency run")
    parser.add_argument("--peers", default="".join(PEERS), help="which peers to run, e.g. acd (default: all)")
    parser.add_argument("--rounds", type=int, default=7,
                        help="throughput runs per peer; the best one is shown (with 3 or more, the recording "
                             "overhead is judged on the median of the rounds' (d)/(c) ratios)")
    args = parser.parse_args()
    peers = [p for p in PEERS if p in args.peers]
    if args.events < 1 or args.rounds < 1 or not peers:
        parser.error("--events and --rounds must be at least 1 and --peers must name at least one of "
                     + "".join(PEERS))

    import slack_sdk
    import websockets

    started = time.monotonic()
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"Python {platform.python_version()}, websockets {websockets.__version__}, "
          f"slack_sdk {slack_sdk.version.__version__}", flush=True)
    runs: dict[str, list[dict]] = {peer: [] for peer in peers}
    # Rounds go through every peer in turn, so a burst of load from elsewhere
    # on the machine hurts one run of a peer, not all of them; every other
    # round in reverse order, so no peer always runs right after another.
    for round_no in range(args.rounds):
        for peer in peers if round_no % 2 == 0 else peers[::-1]:
            runs[peer].append(_rates(measure(peer, events=args.events)))
            print(f"  round {round_no + 1}, {peer}: done", flush=True, file=sys.stderr)
    tp = {peer: max(rs, key=_goodness) for peer, rs in runs.items()}
    lat: dict[str, dict] = {}
    for peer in (p for p in LATENCY_PEERS if p in peers):
        lat[peer] = measure(peer, seconds=args.latency_seconds + WARMUP)
        print(f"  {peer} latency: done", flush=True, file=sys.stderr)
    print()
    print("\n".join(throughput_table(tp, runs, args.events)))
    print()
    print("\n".join(latency_table(lat)))
    lines, summary = verdicts(tp, lat, runs)
    print("\nTargets:")
    print("\n".join(lines))
    print(f"\n(whole run {time.monotonic() - started:.0f} s; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    print(json.dumps({"events_per_s": {k: round(r.get("rate", 0)) for k, r in tp.items()},
                      "events_per_cpu_s": {k: round(r.get("per_cpu") or 0) for k, r in tp.items()}, **summary}))


if __name__ == "__main__":
    main()
