"""Kernel responsiveness while the client records a flood of events.

Run: ``.venv/bin/python -m benchmarks.bench_kernel`` (``--rate``, ``--cells``).

A real IPython kernel is started and driven with ``jupyter_client``, as a
front end would. A trivial cell (``pass``) is executed ``--cells`` times and
the round trip (execute_request sent → execute_reply received) is measured:

* idle: the extension is loaded, no client;
* loaded: ``%rtm_connect`` to a simulated workspace that sends ``--rate``
  events/s (default 5,000), with the live log displayed, so the kernel's loop
  reads the socket, records every event, feeds the log's ring buffer and
  renders it (about 5 HTML updates a second, whose comm messages this driver
  receives and drops, as a browser would render them).

Target: loaded p99 within 3× idle p99. The simulated workspace runs in this
driver process (its own thread and loop), not in the kernel, so the kernel
pays only for being a client. The events/s actually recorded during the
loaded run are printed next to the latencies.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import threading
import time

from jupyter_client.manager import start_new_kernel

from rtm_notebook.sim import SimWorkspace

TOKEN_ENV = "RTM_BENCH_TOKEN"


class Kernel:
    """A kernel plus a thread that drains iopub (widget updates, streams)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.km, self.kc = start_new_kernel(kernel_name="python3", env=env)
        self._stop = threading.Event()
        self.iopub_messages = 0
        self._drain = threading.Thread(target=self._drain_iopub, daemon=True)
        self._drain.start()

    def _drain_iopub(self) -> None:
        while not self._stop.is_set():
            try:
                self.kc.get_iopub_msg(timeout=0.2)
                self.iopub_messages += 1
            except queue.Empty:
                pass

    def execute(self, code: str, timeout: float = 60.0) -> dict:
        """Run ``code``; return the execute_reply (raises on error)."""
        msg_id = self.kc.execute(code, store_history=False)
        while True:
            reply = self.kc.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"cell failed: {code!r}: {reply['content'].get('ename')}: {reply['content'].get('evalue')}")
        return reply

    def value(self, expr: str) -> str:
        """The repr of ``expr`` evaluated in the kernel."""
        msg_id = self.kc.execute("", store_history=False, user_expressions={"v": expr})
        while True:
            reply = self.kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        result = reply["content"]["user_expressions"]["v"]
        if result["status"] != "ok":
            raise RuntimeError(f"{expr}: {result.get('ename')}: {result.get('evalue')}")
        return result["data"]["text/plain"]

    def round_trips(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            start = time.perf_counter()
            msg_id = self.kc.execute("pass", store_history=False)
            while True:
                reply = self.kc.get_shell_msg(timeout=60)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
            out.append(time.perf_counter() - start)
        return out

    def close(self) -> None:
        self._stop.set()
        self._drain.join(2)
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="events per second the workspace sends (default 5000)")
    parser.add_argument("--cells", type=int, default=300, help="trivial cells per measurement (default 300)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of traffic before measuring (default 3)")
    args = parser.parse_args()

    sim = SimWorkspace(rate=0)
    sim.start()
    env = dict(os.environ, **{TOKEN_ENV: sim.token})
    env.pop("SLACK_BOT_TOKEN", None)
    env.pop("SLACK_API_TOKEN", None)
    kernel = Kernel(env)
    try:
        kernel.execute("%load_ext rtm_notebook")
        kernel.round_trips(20)
        idle = kernel.round_trips(args.cells)

        kernel.execute(f"%rtm_connect --token-env {TOKEN_ENV} --base-url {sim.base_url}")
        deadline = time.monotonic() + 30
        while kernel.value("rtm.state") != "'connected'":
            if time.monotonic() > deadline:
                raise RuntimeError("the client did not connect within 30 s")
            time.sleep(0.1)
        sim.set_rate(args.rate)
        time.sleep(args.warmup)
        before_events = int(kernel.value("len(rtm.event_frame)"))
        before_renders = int(kernel.value("rtm.log.renders"))
        started = time.perf_counter()
        loaded = kernel.round_trips(args.cells)
        elapsed = time.perf_counter() - started
        after_events = int(kernel.value("len(rtm.event_frame)"))
        after_renders = int(kernel.value("rtm.log.renders"))
        sim.set_rate(0)
        kernel.execute("%rtm_stop")
    finally:
        kernel.close()
        sim.stop()

    recorded_rate = (after_events - before_events) / elapsed
    render_rate = (after_renders - before_renders) / elapsed
    idle_p50, idle_p99 = pct(idle, 50) * 1e3, pct(idle, 99) * 1e3
    load_p50, load_p99 = pct(loaded, 50) * 1e3, pct(loaded, 99) * 1e3
    ratio = load_p99 / idle_p99
    print(f"kernel round trip of a trivial cell, {args.cells} cells each (ms)")
    print(f"{'':34} {'p50':>8} {'p99':>8} {'max':>8} {'mean':>8}")
    print(f"{'idle':34} {idle_p50:8.2f} {idle_p99:8.2f} {max(idle) * 1e3:8.2f} {statistics.fmean(idle) * 1e3:8.2f}")
    label = f"recording {recorded_rate:,.0f} ev/s + live log"
    print(f"{label:34} {load_p50:8.2f} {load_p99:8.2f} {max(loaded) * 1e3:8.2f} {statistics.fmean(loaded) * 1e3:8.2f}")
    print(f"live log renders during the loaded run: {render_rate:.1f}/s (throttled to ≤ 5/s)")
    verdict = "PASS" if ratio <= 3.0 and recorded_rate >= 0.9 * args.rate else "FAIL"
    print(f"loaded p99 / idle p99 = {ratio:.2f} (target ≤ 3.0; recorded ≥ 90% of {args.rate:,.0f} ev/s)  {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
