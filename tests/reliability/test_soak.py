"""Case 6, soak: the client runs for a long time against a workspace that keeps failing.

``pytest -m soak tests/reliability`` (excluded from the default run). For
``RTM_SOAK_SECONDS`` seconds (default 600) the workspace generates traffic
and injects a random fault every few seconds; handlers run, messages are
sent, ``rtm.events`` is read now and then as a person would. At the end:

* every numbered frame was recorded exactly once, in order, per connection
  (checked online by an O(1) tap, so the check itself holds no memory);
  connections the server closed gracefully delivered everything it sent;
* handlers saw every message; no sent message was left unsettled;
* memory is flat: the median RSS of the last minute is within a small margin
  of the first minute's (after the EventFrame has reached ``max_rows``);
* stopping leaves no task, thread or socket.

Figures are printed (run with ``-s``) and are the ones in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import threading
import time
from collections import Counter

import psutil
import pytest

from rtm_notebook.errors import DeliveryError, ReplyError
from rtm_notebook.sim import SimWorkspace
from rtm_notebook.sim.server import MALFORMED_KINDS

from rel_support import SeqTap, assert_nothing_left, client_for, general, mark, until

SECONDS = float(os.environ.get("RTM_SOAK_SECONDS", "600"))
RATE = 200.0  # generated events per second between faults
MAX_ROWS = 5_000  # keeps the EventFrame bounded, so a leak shows in RSS
# Allowed RSS growth from the first to the last minute: a client that kept
# every event would grow by about RATE * 1 KB * SECONDS (over 100 MB in 10 min).
MEMORY_MARGIN = 30 * 2**20
GRACEFUL = ("goodbye", "closed 1000", "closed 1001", "closed 1011")


def _faults(sim, rng: random.Random):
    def stall():
        sim.stall(rng.uniform(0.5, 3.0))

    def expired():
        sim.expire_next_url()
        sim.drop_connections()

    def rate_limited():
        sim.rate_limit_connect(calls=rng.randint(1, 2), retry_after=1)
        sim.drop_connections()

    def refused():
        sim.fail_connect(rng.choice(["service_unavailable", "internal_error"]), calls=rng.randint(1, 4))
        sim.drop_connections()

    return {
        "drop": sim.drop_connections,
        "goodbye": sim.send_goodbye,
        "close_1000": lambda: sim.close_sockets(1000, "soak"),
        "close_1001": lambda: sim.close_sockets(1001, "soak"),
        "close_1011": lambda: sim.close_sockets(1011, "soak"),
        "stall": stall,
        "malformed": lambda: sim.send_malformed(rng.choice(MALFORMED_KINDS)),
        "expired_url": expired,
        "rate_limited": rate_limited,
        "refused": refused,
        "burst": lambda: sim.burst(5_000),
    }


@pytest.mark.soak
@pytest.mark.timeout(SECONDS + 300)
async def test_soak_random_faults_no_loss_flat_memory(monkeypatch):
    import rtm_notebook.reconnect as client_module
    import rtm_notebook.sim.model as sim_model

    # The workspace runs in this process and keeps each channel's history
    # up to a cap; a small cap fills it in the first minute, so the RSS
    # that follows measures the client, not the workspace's archive.
    monkeypatch.setattr(sim_model, "HISTORY_CAP", 200)
    # Faults every few seconds: keep reconnect waits short enough that the
    # client spends its time connected, with the same backoff policy.
    monkeypatch.setattr(client_module, "RECONNECT_BASE", 0.2)
    monkeypatch.setattr(client_module, "RECONNECT_MAX", 2.0)
    rng = random.Random(int(os.environ.get("RTM_SOAK_SEED", "1")))
    process = psutil.Process()
    tasks_before = asyncio.all_tasks()
    threads_before = set(threading.enumerate())

    with SimWorkspace(seed=11, rate=RATE) as sim:
        rtm = client_for(sim, ping_interval=1.0, max_rows=MAX_ROWS)
        tap = SeqTap(rtm)
        reasons: dict[int, str] = {}
        rtm.add_tap(lambda e: reasons.__setitem__(e["connection"], e["reason"]) if e.get("type") == "close" else None)
        seen = Counter()

        @rtm.on("message")
        def sync_messages(client, event):
            seen["sync"] += 1

        @rtm.on("*")
        async def async_everything(client, event):
            seen["async"] += 1

        faults = _faults(sim, rng)
        injected = Counter()
        sends: list[asyncio.Future] = []
        rss: list[tuple[float, int]] = []
        await asyncio.wait_for(rtm.connect(), 30)
        start = time.monotonic()
        next_fault = start + rng.uniform(2, 5)
        next_send = start + 1
        next_read = start + 10
        while (now := time.monotonic()) - start < SECONDS:
            rss.append((now - start, process.memory_info().rss))
            if now >= next_fault:
                name = rng.choice(sorted(faults))
                faults[name]()
                injected[name] += 1
                next_fault = now + rng.uniform(2, 5)
            if now >= next_send and rtm.state not in ("stopped", "disconnected"):
                fut = rtm.send_message(general(sim), f"soak {len(sends)}")
                fut.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
                sends.append(fut)
                next_send = now + 2
            if now >= next_read:
                assert len(rtm.events) <= MAX_ROWS  # a person looking at the frame
                next_read = now + 10
            await asyncio.sleep(1.0)

        # Quiet down, let the client settle on a healthy connection, drain.
        sim.set_rate(0)
        sim.stall(0)
        sim.fail_connect("service_unavailable", calls=0)
        sim.rate_limit_connect(calls=0)
        await until(lambda: rtm.state == "connected", "a final healthy connection", guard=120)
        await mark(sim, tap, "end of soak")
        await until(lambda: seen["sync"] == rtm.counts["message"], "the sync handler to drain", guard=120)
        await until(lambda: all(f.done() for f in sends), "every sent message to settle", guard=120)
        last = rtm.connection_number
        await asyncio.wait_for(rtm.stop(), 60)
        sent = sim.sent

    assert_nothing_left(rtm, sim, tasks_before, threads_before)

    # -- no loss -----------------------------------------------------------------
    assert tap.problems == [], tap.problems[:10]
    received = sum(tap.last.values())
    lost_in_aborts = 0
    for conn in range(1, last + 1):
        got, wrote = tap.last.get(conn, 0), sent.get(conn, 0)
        assert got <= wrote, (conn, got, wrote)
        reason = reasons.get(conn, "")
        if reason.startswith(GRACEFUL):
            assert got == wrote, (conn, reason, got, wrote)
        else:
            lost_in_aborts += wrote - got
    outcomes = Counter()
    for f in sends:
        exc = f.exception()
        outcomes["replied" if exc is None else type(exc).__name__] += 1
        assert exc is None or isinstance(exc, (DeliveryError, ReplyError)), exc

    # -- flat memory -------------------------------------------------------------
    window = min(60.0, SECONDS / 5)
    first = statistics.median(r for t, r in rss if window <= t < 2 * window)  # after the first fill-up
    final = statistics.median(r for t, r in rss if t >= SECONDS - window)
    per_minute = [statistics.median(r for t, r in rss if m * window <= t < (m + 1) * window) / 2**20
                  for m in range(int(SECONDS // window))]
    print(f"\nSOAK {SECONDS:.0f} s: {received} numbered frames recorded over {last} connections, "
          f"{sum(sent.values())} sent; {lost_in_aborts} written to sockets the faults aborted; "
          f"faults {dict(injected)}; sends {dict(outcomes)}; "
          f"handlers sync={seen['sync']} async={seen['async']}; "
          f"RSS first window {first / 2**20:.1f} MiB, last window {final / 2**20:.1f} MiB, "
          f"peak {max(r for _, r in rss) / 2**20:.1f} MiB; median RSS per {window:.0f} s: "
          + " ".join(f"{m:.1f}" for m in per_minute))
    assert final - first <= MEMORY_MARGIN, (first, final)
