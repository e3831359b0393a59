"""Recordings at scale: 10,000,000 events into a Parquet dataset, then one query three ways.

Run: ``.venv/bin/python -m benchmarks.bench_scale`` (``--events N``,
``--keep DIR`` to leave the dataset behind). Results: ``docs/benchmarks.md``.

Write. Events from the simulated workspace's own traffic generator (all
its kinds, in its proportions) are appended to an
``EventFrame(record_to=DIR + "/", max_rows=200_000)`` in batches of 1,000 a
wake-up, as the client's read loop records them (``EventFrame.extend``):
every batch is journalled, every 100,000 rows become Parquet files on the
writer thread. The clock stops once ``close()`` has written the last part.
Reported: events/s (wall clock, and per CPU-second of the process, both
threads), the files and the bytes on disk per event.

Query: events per channel over the whole dataset, three ways, each in its
own process, from a cold start of that reader:

* pandas: ``EventFrame.read(DIR, columns=["channel"])`` then ``groupby``;
* DuckDB: ``read_parquet('DIR/**/*.parquet', hive_partitioning=true)``;
* Spark (local mode, both cores): ``spark.read.parquet(DIR)``; its JVM
  start is timed separately from the query.

All three must give the same counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

DEFAULT_EVENTS = 10_000_000
BATCH = 1_000


def write(root: str, n: int) -> dict:
    import orjson

    from rtm_notebook.events import EventFrame
    from rtm_notebook.sim.model import Workspace
    from rtm_notebook.sim.traffic import Traffic

    traffic = Traffic(Workspace(1), 1)
    events = [traffic.next() for _ in range(50_000)]
    sample = [orjson.dumps(e) for e in events]
    frame = EventFrame(record_to=root + "/", max_rows=200_000)
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    while done < n:
        take = min(BATCH, n - done)
        start = done % len(sample)
        picked = [(start + i) % len(sample) for i in range(take)]
        # fresh bytes objects, as a socket's frames are; the decoded events come along as the client passes them
        frame.extend([bytes(sample[i]) for i in picked], time.time(), connection=1, events=[events[i] for i in picked])
        done += take
    frame.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    files = [os.path.join(d, f) for d, _dirs, fs in os.walk(root) for f in fs if f.endswith(".parquet")]
    size = sum(os.path.getsize(f) for f in files)
    return {"events": n, "wall_s": wall, "cpu_s": cpu, "events_per_s": n / wall, "events_per_cpu_s": n / cpu,
            "files": len(files), "bytes": size, "bytes_per_event": size / n}


def query_pandas(root: str) -> dict:
    t0 = time.perf_counter()
    from rtm_notebook.events import EventFrame

    df = EventFrame.read(root, columns=["channel"]).to_pandas()
    counts = df.groupby("channel").size()
    return {"seconds": time.perf_counter() - t0, "counts": {str(k): int(v) for k, v in counts.items()}}


def query_duckdb(root: str) -> dict:
    t0 = time.perf_counter()
    import duckdb

    rows = duckdb.sql(f"select channel, count(*) from read_parquet('{root}/**/*.parquet', hive_partitioning=true) "
                      "where channel is not null group by channel").fetchall()
    return {"seconds": time.perf_counter() - t0, "counts": {k: int(v) for k, v in rows}}


def query_spark(root: str) -> dict:
    t0 = time.perf_counter()
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName("bench-scale").config("spark.ui.enabled", "false")
             .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    started = time.perf_counter()
    rows = spark.read.parquet(root).where("channel is not null").groupBy("channel").count().collect()
    done = time.perf_counter()
    spark.stop()
    return {"seconds": done - started, "start_s": started - t0, "counts": {r["channel"]: int(r["count"]) for r in rows}}


QUERIES = {"pandas": query_pandas, "duckdb": query_duckdb, "spark": query_spark}


def in_process(name: str, root: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_scale", "--query", name, "--root", root],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events to write (default 10,000,000)")
    parser.add_argument("--keep", metavar="DIR", help="write the dataset here and leave it")
    parser.add_argument("--query", choices=list(QUERIES), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.query:
        print(json.dumps(QUERIES[args.query](args.root)))
        return
    if args.events < 1:
        parser.error("--events must be at least 1")
    root = args.keep or tempfile.mkdtemp(prefix="bench-scale-")
    try:
        print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
              flush=True)
        w = write(root, args.events)
        print(f"\nWrite: {w['events']:,} events into a Parquet dataset (record_to=DIR/, batches of {BATCH:,})")
        print(f"  {w['events_per_s']:,.0f} events/s wall clock ({w['wall_s']:.1f} s), "
              f"{w['events_per_cpu_s']:,.0f} per CPU-second ({w['cpu_s']:.1f} s of CPU)")
        print(f"  {w['files']:,} Parquet files, {w['bytes'] / 1e6:,.1f} MB, {w['bytes_per_event']:.1f} bytes per event")
        results = {name: in_process(name, root) for name in QUERIES}
        print("\nQuery: events per channel over the whole dataset (each reader in its own process, cold)")
        print(f"  {'reader':<8} {'seconds':>8}  {'start':>7}  channels  same counts")
        reference = results["pandas"]["counts"]
        for name, r in results.items():
            start = f"{r['start_s']:.1f} s" if "start_s" in r else "-"
            print(f"  {name:<8} {r['seconds']:>8.2f}  {start:>7}  {len(r['counts']):>8}  {r['counts'] == reference}")
        print(json.dumps({"write": w, "query_s": {k: v["seconds"] for k, v in results.items()},
                          "spark_start_s": results["spark"].get("start_s"),
                          "same_counts": all(r["counts"] == reference for r in results.values())}))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
