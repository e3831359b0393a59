"""The simulated workspace's top sending rate on loopback.

Run: ``.venv/bin/python -m benchmarks.bench_sim`` (``--seconds S`` per
measurement). Target: at least 50,000 events/s received.

A bare ``websockets`` client that only counts frames (and checks that
``sim_seq`` never skips) measures what actually arrives:

* firehose: ``rate=inf``, client in another process (the sim has a core's
  worth of GIL to itself);
* firehose, same process: the client on the main thread's loop and the sim
  in its thread, sharing one GIL as in a notebook kernel;
* burst after hello: 20,000 events written right after ``hello``, timed
  from ``hello`` to the last one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time

import httpx
import orjson
import websockets

from rtm_notebook.sim import SimWorkspace

TARGET = 50_000


def socket_url(sim: SimWorkspace) -> str:
    body = httpx.post(sim.base_url + "rtm.connect", headers={"Authorization": f"Bearer {sim.token}"}).json()
    return body["url"]


async def count_frames(url: str, seconds: float, expect: int | None = None) -> tuple[int, float, bool]:
    """Frames received in ``seconds`` (or until ``expect`` arrived); returns (frames, elapsed, in_order)."""
    async with websockets.connect(url, max_size=None, ping_interval=None, compression=None) as ws:
        first = orjson.loads(await ws.recv())
        assert first["type"] == "hello"
        start = time.perf_counter()
        n, last, in_order = 0, 1, True
        # One timeout for the whole run: a wait_for per frame would cost more than the frame.
        try:
            async with asyncio.timeout(seconds):
                while True:
                    frame = await ws.recv(decode=False)
                    # The sim appends sim_seq as the last field: no JSON parse needed to count.
                    seq = int(frame[frame.rindex(b":") + 1:-1])
                    in_order &= seq == last + 1
                    last = seq
                    n += 1
                    if n == expect:
                        break
        except TimeoutError:
            pass
        return n, time.perf_counter() - start, in_order


def _client_process(url: str, seconds: float, out) -> None:
    out.send(asyncio.run(count_frames(url, seconds)))


def firehose_other_process(seconds: float) -> tuple[int, float, bool]:
    with SimWorkspace(seed=1, rate=float("inf")) as sim:
        url = socket_url(sim)
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_client_process, args=(url, seconds, child))
        proc.start()
        result = parent.recv()
        proc.join()
        return result


def firehose_same_process(seconds: float) -> tuple[int, float, bool]:
    with SimWorkspace(seed=1, rate=float("inf")) as sim:
        return asyncio.run(count_frames(socket_url(sim), seconds))


def burst_after_hello(n: int) -> tuple[int, float, bool]:
    with SimWorkspace(seed=1) as sim:
        sim.burst_after_hello(n)
        url = socket_url(sim)
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_burst_process, args=(url, n, child))
        proc.start()
        result = parent.recv()
        proc.join()
        return result


def _burst_process(url: str, n: int, out) -> None:
    out.send(asyncio.run(count_frames(url, 60.0, expect=n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each firehose measurement")
    parser.add_argument("--burst", type=int, default=20_000, help="events in the burst after hello")
    args = parser.parse_args()
    rows = [
        ("firehose, client in another process", firehose_other_process(args.seconds)),
        ("firehose, client in the same process", firehose_same_process(args.seconds)),
        (f"burst of {args.burst:,} after hello", burst_after_hello(args.burst)),
    ]
    print(f"{'measurement':<40} {'frames':>10} {'seconds':>8} {'events/s':>10} {'in order':>9}")
    for name, (n, elapsed, in_order) in rows:
        print(f"{name:<40} {n:>10,} {elapsed:>8.2f} {n / elapsed:>10,.0f} {str(in_order):>9}")
    best = rows[0][1][0] / rows[0][1][1]
    print(json.dumps({"top_rate_events_per_s": round(best), "target": TARGET, "meets_target": best >= TARGET}))


if __name__ == "__main__":
    main()
