"""EventFrame at a million events: memory, materialisation, append cost.

Run: ``.venv/bin/python -m benchmarks.bench_events`` (``--events N`` to
scale; the targets are stated for 1,000,000).

Each measurement runs in a fresh interpreter so its RSS baseline is clean.
Events follow the simulated workspace's traffic mix (messages, thread
replies, edits, deletes, reactions, typing, presence, joins), each built as
JSON bytes and decoded with orjson, as the client does, then appended with
those bytes as ``raw``.

* memory: RSS growth from before the first append to after ``to_pandas()``
  with the DataFrame alive, divided by the UTF-8 size of all the events'
  JSON. The generator's own objects are freed as it goes, so what remains
  is the frame (chunks, the last partial chunk, the cached DataFrame).
* to_pandas: the first materialisation after the last append.
* append: per-call latency (p50/p99/max; max includes converting a full
  chunk to columns) and sustained appends/s with raw given, with raw=None
  (orjson encodes) and with record_to on.
* recording cost: the amortised CPU time the intake thread spends
  recording one event, sealing included, on the simulated workspace's own
  traffic generator (``rtm_notebook.sim.traffic``): what the connection's
  read loop does for recording (a list append per frame, keeping each
  frame's own bytes object, and one ``EventFrame.extend`` per wake-up of 64
  frames), minus the bare loop; a client without recording does none of it.
  Best of 5 runs. Process CPU (all
  threads) is shown beside it: deriving the columns of chunks older than
  the newest ~260k rows happens on a background thread.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import orjson

WORDS = ("the deploy is done can someone review my PR lunch anyone standup in five minutes "
         "ship it looks good to me thanks build failed again on main please retry the job "
         "meeting notes are in the doc").split()
REACTIONS = ["thumbsup", "eyes", "tada", "white_check_mark", "heart", "joy", "rocket", "pray", "100"]
KINDS = [("message", 40), ("reply", 12), ("bot_message", 3), ("edit", 6), ("delete", 3),
         ("reaction", 12), ("typing", 12), ("presence", 8), ("join", 4)]


class Traffic:
    """Seeded stream of (event dict, JSON text) pairs shaped like Slack RTM events."""

    def __init__(self, seed: int = 1) -> None:
        rng = self.rng = random.Random(seed)
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
        self.users = ["U" + "".join(rng.choice(alphabet) for _ in range(10)) for _ in range(200)]
        self.channels = ["C" + "".join(rng.choice(alphabet) for _ in range(10)) for _ in range(30)]
        self.kinds = [k for k, _ in KINDS]
        self.weights = [w for _, w in KINDS]
        self.clock = 1_700_000_000.0
        self.recent: list[tuple[str, str, str]] = []  # (channel, ts, user)

    def _ts(self) -> str:
        self.clock += 0.000137
        return f"{self.clock:.6f}"

    def _text(self) -> str:
        rng = self.rng
        words = rng.choices(WORDS, k=rng.randint(3, 18))
        if rng.random() < 0.2:
            words.insert(0, f"<@{rng.choice(self.users)}>")
        return " ".join(words)

    def event(self) -> dict:
        rng = self.rng
        kind = rng.choices(self.kinds, self.weights)[0]
        channel, user, ts = rng.choice(self.channels), rng.choice(self.users), self._ts()
        if kind in ("message", "reply") or not self.recent:
            event = {"type": "message", "channel": channel, "user": user, "text": self._text(), "ts": ts,
                     "team": "T0SIMTEAM1", "client_msg_id": "%08x-%04x-4%03x-a%03x-%012x" % (
                         rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12), rng.getrandbits(12),
                         rng.getrandbits(48))}
            if kind == "reply":
                event["thread_ts"] = rng.choice(self.recent)[1] if self.recent else ts
            self.recent.append((channel, ts, user))
            del self.recent[:-200]
            return event
        parent_channel, parent_ts, parent_user = rng.choice(self.recent)
        if kind == "bot_message":
            return {"type": "message", "subtype": "bot_message", "channel": channel, "ts": ts,
                    "text": f"deploy #{rng.randrange(10_000)} finished", "bot_id": "B0SIMBOT01", "username": "deploy-bot"}
        if kind == "edit":
            return {"type": "message", "subtype": "message_changed", "hidden": True, "channel": parent_channel,
                    "ts": ts, "event_ts": ts, "message": {"type": "message", "user": parent_user, "text": self._text(),
                                                          "ts": parent_ts, "edited": {"user": parent_user, "ts": ts}}}
        if kind == "delete":
            return {"type": "message", "subtype": "message_deleted", "hidden": True, "channel": parent_channel,
                    "ts": ts, "deleted_ts": parent_ts, "event_ts": ts}
        if kind == "reaction":
            return {"type": "reaction_added", "user": user, "reaction": rng.choice(REACTIONS), "item_user": parent_user,
                    "item": {"type": "message", "channel": parent_channel, "ts": parent_ts}, "event_ts": ts, "ts": ts}
        if kind == "typing":
            return {"type": "user_typing", "channel": channel, "user": user}
        if kind == "presence":
            return {"type": "presence_change", "user": user, "presence": rng.choice(["active", "away"])}
        return {"type": "member_joined_channel", "user": user, "channel": channel, "channel_type": "C",
                "team": "T0SIMTEAM1", "event_ts": ts}

    def frame(self) -> tuple[dict, bytes]:
        """One event as the client has it: decoded from the frame's bytes."""
        raw = orjson.dumps(self.event())
        return orjson.loads(raw), raw


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_memory(n: int) -> dict:
    import numpy as np
    import pyarrow as pa

    from rtm_notebook import events as events_module
    from rtm_notebook.events import EventFrame

    traffic = Traffic()
    warm = EventFrame()
    for _ in range(10):
        warm.append(*traffic.frame())
    warm.to_pandas()
    del warm
    latency = np.zeros(n, dtype=np.int64)  # allocated (and touched) before the baseline
    latency[:] = 1
    clock = time.perf_counter_ns
    gc.collect()

    def arrow_bytes() -> int:
        return pa.total_allocated_bytes() + pa.system_memory_pool().bytes_allocated()

    base_rss, base_arrow = rss(), arrow_bytes()

    chunk = events_module.CHUNK_ROWS
    seal_cpu = []
    seal_gc = []  # time the cyclic GC ran inside each converting append
    cpu_clock = time.thread_time_ns
    gc_time = [0, 0, 0]  # total ns, start of the running collection, longest collection

    def on_gc(phase: str, info: dict) -> None:
        now = clock()
        if phase == "start":
            gc_time[1] = now
        else:
            gc_time[0] += now - gc_time[1]
            gc_time[2] = max(gc_time[2], now - gc_time[1])

    gc.callbacks.append(on_gc)
    frame = EventFrame()
    append = frame.append
    json_bytes = 0
    for i in range(n):
        event, raw = traffic.frame()
        json_bytes += len(raw)
        if i and i % chunk == 0:  # this append converts the full chunk to columns
            c0, g0 = cpu_clock(), gc_time[0]
            t0 = clock()
            append(event, raw)
            latency[i] = clock() - t0
            seal_cpu.append(cpu_clock() - c0)
            seal_gc.append(gc_time[0] - g0)
        else:
            t0 = clock()
            append(event, raw)
            latency[i] = clock() - t0
    del event, raw
    gc.callbacks.remove(on_gc)
    gc.collect()
    rss_appended = rss()

    t0 = time.perf_counter()
    df = frame.to_pandas()
    materialise = time.perf_counter() - t0
    gc.collect()
    rss_frame = rss()
    t0 = time.perf_counter()
    again = frame.to_pandas()
    cached = time.perf_counter() - t0
    assert again is df and len(df) == n
    frame.append(*traffic.frame())
    t0 = time.perf_counter()
    frame.to_pandas()
    one_more = time.perf_counter() - t0

    sealing = latency[chunk::chunk]  # the append that starts a new chunk converts the full one
    plain = np.delete(latency, np.arange(chunk, n, chunk))
    return {
        "events": n,
        "json_mb": json_bytes / 1e6,
        "mean_json_bytes": json_bytes / n,
        "rss_appended_mb": (rss_appended - base_rss) / 1e6,
        "rss_frame_mb": (rss_frame - base_rss) / 1e6,
        "arrow_mb": (arrow_bytes() - base_arrow) / 1e6,
        "df_deep_mb": df.memory_usage(deep=True).sum() / 1e6,
        "ratio": (rss_frame - base_rss) / json_bytes,
        "to_pandas_s": materialise,
        "to_pandas_cached_s": cached,
        "to_pandas_one_more_s": one_more,
        "append_p50_us": float(np.percentile(plain, 50)) / 1e3,
        "append_p99_us": float(np.percentile(plain, 99)) / 1e3,
        "append_max_plain_us": float(plain.max()) / 1e3,
        "seal_median_ms": float(np.median(sealing)) / 1e6 if len(sealing) else 0.0,
        "seal_max_ms": float(sealing.max()) / 1e6 if len(sealing) else 0.0,
        "seal_cpu_median_ms": float(np.median(seal_cpu)) / 1e6 if seal_cpu else 0.0,
        "seal_cpu_max_ms": float(max(seal_cpu)) / 1e6 if seal_cpu else 0.0,
        "seal_max_without_gc_ms": float((sealing - np.array(seal_gc)).max()) / 1e6 if seal_gc else 0.0,
        "gc_longest_ms": gc_time[2] / 1e6,
        "chunk_rows": chunk,
    }


def bench_throughput(n: int) -> dict:
    from rtm_notebook.events import EventFrame

    traffic = Traffic(seed=2)
    pool = [traffic.frame() for _ in range(min(n, 100_000))]
    events_only = [event for event, _ in pool]
    out = {}

    def run(label: str, frame: EventFrame, with_raw: bool) -> None:
        append = frame.append
        k = len(pool)
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        if with_raw:
            for i in range(n):
                event, raw = pool[i % k]
                append(event, raw)
        else:
            for i in range(n):
                append(events_only[i % k])
        out[label] = n / (time.perf_counter() - t0)
        out[label + "_cpu"] = n / (time.process_time() - c0)  # all threads: includes the writer

    run("appends_per_s_raw", EventFrame(), True)
    run("appends_per_s_encode", EventFrame(), False)
    with tempfile.TemporaryDirectory() as tmp:
        frame = EventFrame(record_to=os.path.join(tmp, "events.jsonl"))
        run("appends_per_s_record_to", frame, True)
        t0 = time.perf_counter()
        frame.close()
        out["record_close_s"] = time.perf_counter() - t0
        out["record_file_mb"] = os.path.getsize(os.path.join(tmp, "events.jsonl")) / 1e6
        t0 = time.perf_counter()
        EventFrame.read(os.path.join(tmp, "events.jsonl"))
        out["read_s"] = time.perf_counter() - t0
    return out


def bench_append_cost(n: int) -> dict:
    """Amortised CPU the intake thread spends recording one event, chunk
    sealing included, on frames from the simulated workspace's own traffic
    generator, recorded as ``Connection._read`` records them (one
    ``EventFrame.extend`` per wake-up). The bare loop over the same frames is measured
    too: a client made with ``record=False`` does nothing per frame. Best of
    5 runs; CPU time of the thread and of the process (all threads), and
    wall time."""
    from rtm_notebook.events import EventFrame
    from rtm_notebook.sim.model import Workspace
    from rtm_notebook.sim.traffic import Traffic as SimTraffic

    traffic = SimTraffic(Workspace(1), 1)
    k = min(n, 50_000)
    frames = [orjson.dumps(traffic.next()) for _ in range(k)]
    # Both loops cut a new bytes object per frame out of one buffer, as
    # aiohttp does out of what it read: recording keeps them, and what that
    # costs in memory is part of the figure.
    received = b"".join(frames)
    ends = list(itertools.accumulate(map(len, frames)))
    spans = list(zip([0, *ends[:-1]], ends))
    rounds = max(1, min(n, 200_000) // k)
    now = time.time
    # The read loop reads the clock once per wake-up, for all the frames
    # aiohttp parsed meanwhile: ~1,250 per wake-up in bench_client's burst.
    # One read per 64 frames keeps the clock's cost visible here.
    per_wake = 64

    def cost(frame: EventFrame | None) -> tuple[float, float, float]:
        """Best (intake thread CPU, process CPU, wall) seconds per event."""
        best = [float("inf")] * 3
        for _ in range(5):
            gc.collect()
            t0, p0, c0 = time.perf_counter(), time.process_time(), time.thread_time()
            if frame is None:
                for _ in range(rounds):
                    for i, (a, b) in enumerate(spans):
                        data = received[a:b]
                        if not i % per_wake:
                            arrived = now()
            else:
                extend = frame.extend  # the same steps as Connection._read's
                for _ in range(rounds):
                    batch: list[bytes] = []
                    keep = batch.append
                    for i, (a, b) in enumerate(spans):
                        data = received[a:b]
                        if not i % per_wake:
                            if batch:
                                extend(batch, arrived, connection=1)
                                batch = []
                                keep = batch.append
                            arrived = now()
                        keep(data)
                    extend(batch, arrived, connection=1)
            spent = (time.thread_time() - c0, time.process_time() - p0, time.perf_counter() - t0)
            best = [min(b, x / (rounds * k)) for b, x in zip(best, spent)]
            frame = EventFrame() if frame is not None else None
        return best

    thread, process, wall = cost(EventFrame())
    loop = cost(None)
    # The background thread that derives sealed chunks' columns runs beside
    # the intake; process CPU includes it (and the loop's own cost).
    return {"record_cost_thread_us": thread * 1e6, "record_cost_process_us": process * 1e6,
            "record_cost_wall_us": wall * 1e6, "loop_thread_us": loop[0] * 1e6}


def run_phase(phase: str, n: int) -> dict:
    result = subprocess.run([sys.executable, "-m", "benchmarks.bench_events", "--phase", phase, "--events", str(n)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--phase", choices=list(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](args.events)))
        return

    n = args.events
    m = run_phase("memory", n)
    t = run_phase("throughput", n)
    a = run_phase("append_cost", n)
    rows = [
        ("events recorded", f"{n:,}", ""),
        ("JSON text of those events", f"{m['json_mb']:.1f} MB ({m['mean_json_bytes']:.0f} B/event)", ""),
        ("RSS growth after appends", f"{m['rss_appended_mb']:.1f} MB", ""),
        ("RSS growth incl. cached DataFrame", f"{m['rss_frame_mb']:.1f} MB", ""),
        ("  of which allocated by pyarrow (raw texts are Python bytes)", f"{m['arrow_mb']:.1f} MB", ""),
        ("  DataFrame memory_usage(deep)", f"{m['df_deep_mb']:.1f} MB", ""),
        ("memory / JSON size", f"{m['ratio']:.2f}x", "<= 3x"),
        ("to_pandas(), first after appends", f"{m['to_pandas_s'] * 1e3:.0f} ms", "< 2000 ms"),
        ("to_pandas(), cached", f"{m['to_pandas_cached_s'] * 1e6:.0f} us", ""),
        ("to_pandas() after 1 more append", f"{m['to_pandas_one_more_s'] * 1e3:.0f} ms", ""),
        ("append latency p50 / p99", f"{m['append_p50_us']:.2f} / {m['append_p99_us']:.2f} us", ""),
        ("append latency max (no chunk conversion)", f"{m['append_max_plain_us']:.0f} us", ""),
        (f"chunk conversion pause ({m['chunk_rows']} rows) median / max, wall",
         f"{m['seal_median_ms']:.1f} / {m['seal_max_ms']:.1f} ms", "a few tens of ms at most"),
        ("  same, CPU time of the appending thread", f"{m['seal_cpu_median_ms']:.1f} / {m['seal_cpu_max_ms']:.1f} ms", ""),
        ("  max wall, minus time in Python's cyclic GC", f"{m['seal_max_without_gc_ms']:.1f} ms", ""),
        ("longest cyclic GC pass during the appends", f"{m['gc_longest_ms']:.1f} ms", ""),
        ("recording cost per event (the read loop's batches, sealing incl.), intake thread CPU minus the loop",
         f"{a['record_cost_thread_us'] - a['loop_thread_us']:.2f} us", "<= 0.7 us"),
        ("  intake thread CPU / process CPU / wall, incl. the loop",
         f"{a['record_cost_thread_us']:.2f} / {a['record_cost_process_us']:.2f} / {a['record_cost_wall_us']:.2f} us", ""),
        ("  the bare loop alone, CPU", f"{a['loop_thread_us']:.2f} us", ""),
        ("appends/s, raw given (per CPU-second)",
         f"{t['appends_per_s_raw']:,.0f} ({t['appends_per_s_raw_cpu']:,.0f})", ""),
        ("appends/s, raw=None, orjson encodes (per CPU-s)",
         f"{t['appends_per_s_encode']:,.0f} ({t['appends_per_s_encode_cpu']:,.0f})", ""),
        ("appends/s, raw given, record_to on (per CPU-s)",
         f"{t['appends_per_s_record_to']:,.0f} ({t['appends_per_s_record_to_cpu']:,.0f})", ""),
        ("record_to: close() drain / file size / read()", f"{t['record_close_s']:.2f} s / {t['record_file_mb']:.0f} MB"
         f" / {t['read_s']:.1f} s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    load = os.getloadavg()[0]
    print(f"{'EventFrame benchmark':<{width}}  {'measured':<{vwidth}}  target")
    print(f"(load average when done: {load:.1f} on {os.cpu_count()} CPUs: wall-clock figures suffer on a busy machine)")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<{vwidth}}  {target}")


PHASES = {"memory": bench_memory, "throughput": bench_throughput, "append_cost": bench_append_cost}

if __name__ == "__main__":
    main()
