"""Case 4, handlers that misbehave: one raises on every event, one blocks (sync),
one never returns (async). Intake and the well-behaved handlers keep going,
and the misbehaviour shows in the handler stats, in %rtm_handlers and in
the log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from rel_support import GUARD, SeqTap, assert_exactly_once_in_order, client_for, errors, human, mark, until

BLOCK = 10.0  # seconds the blocking handler would sit in one call


async def test_misbehaving_handlers_never_stall_intake_or_the_others(sim, caplog):
    caplog.set_level(logging.WARNING, logger="rtm_notebook")
    rtm = client_for(sim)
    tap = SeqTap(rtm)
    release = threading.Event()
    good_sync, good_async, blocker_started = [], [], threading.Event()

    @rtm.on("message")
    def raiser(client, event):
        raise ValueError(f"bad handler on {event['sim_seq']}")

    @rtm.on("message")
    def blocker(client, event):
        blocker_started.set()
        # Stands for a 10 s blocking call; the test releases it at the end
        # so teardown need not sit out the rest.
        release.wait(BLOCK)

    @rtm.on("message")
    async def never_returns(client, event):
        await asyncio.Event().wait()

    @rtm.on("message")
    def well_behaved_sync(client, event):
        good_sync.append(event["sim_seq"])

    @rtm.on("message")
    async def well_behaved_async(client, event):
        good_async.append(event["sim_seq"])

    await asyncio.wait_for(rtm.connect(), GUARD)
    for i in range(20):
        sim.post_message(human(sim), "general", f"message {i}")
    sim.burst(500)
    await mark(sim, tap, "end")
    df = rtm.events
    n = int((df["type"] == "message").sum())
    await until(lambda: len(good_sync) == n and len(good_async) == n, "the well-behaved handlers to see everything")
    await until(lambda: rtm.handlers["raiser"].calls == n, "the raiser to go through everything")
    assert blocker_started.is_set()

    # intake: everything recorded once, in order; the handlers in order too
    assert_exactly_once_in_order(rtm, sim)
    assert good_sync == good_async == sorted(good_sync)

    stats = {s["name"]: s for s in rtm.handlers.stats()}
    assert stats["raiser"]["errors"] == stats["raiser"]["calls"] == n
    assert "ValueError" in stats["raiser"]["last_error"]
    # the stuck ones are still inside their first call, their events waiting
    assert stats["blocker"]["calls"] == 0 and stats["blocker"]["queued"] == n - 1
    assert stats["never_returns"]["calls"] == 0 and stats["never_returns"]["queued"] == n - 1
    assert stats["well_behaved_sync"]["errors"] == stats["well_behaved_async"]["errors"] == 0

    # the log: one error row per failure, naming the handler, with a traceback
    handler_errors = [e for e in errors(rtm) if e.get("handler") == "raiser"]
    assert len(handler_errors) == n
    assert all("ValueError" in e["error"] and "Traceback" in e["traceback"] for e in handler_errors)
    warned = [r for r in caplog.records if "raiser" in r.getMessage()]
    assert len(warned) == n

    release.set()
    await asyncio.wait_for(rtm.stop(), GUARD)
    assert rtm.state == "stopped"


def wait(pred, what: str) -> None:
    """Hang guard only (no running loop here: the client has a background loop)."""
    deadline = time.monotonic() + GUARD
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def test_rtm_handlers_and_the_live_log_show_a_failing_handler(token_env, shell, sim):
    result = shell.run_cell(f"%rtm_connect --token-env {token_env} --base-url {sim.base_url}", silent=True)
    assert result.error_in_exec is None, result.error_in_exec
    shell.run_cell(
        "def rel_raiser(client, event):\n    raise ZeroDivisionError('handler bug')\n"
        "seen = []\n"
        "def rel_fine(client, event):\n    seen.append(event['text'])\n",
        silent=True,
    )
    for line in ("message rel_raiser", "message rel_fine"):
        assert shell.run_cell(f"%rtm_on {line}", silent=True).error_in_exec is None
    rtm = shell.user_ns["rtm"]
    wait(lambda: rtm.state == "connected", "hello")
    for i in range(5):
        sim.post_message(human(sim), "general", f"hi {i}")
    wait(lambda: len(shell.user_ns["seen"]) == 5, "the good handler")
    wait(lambda: rtm.handlers["rel_raiser"].errors == 5, "five failures")

    table = shell.run_line_magic("rtm_handlers", "").set_index("name")
    assert table.loc["rel_raiser", "errors"] == 5 and table.loc["rel_raiser", "calls"] == 5
    assert "ZeroDivisionError" in table.loc["rel_raiser", "last error"]
    assert table.loc["rel_fine", "errors"] == 0 and table.loc["rel_fine", "calls"] == 5

    from rtm_notebook.notebook.magics import session

    log = session().log
    wait(lambda: "· rel_raiser" in log.text(50), "the error rows in the live log")
    text = log.text(50)
    # an error row: the message first, the handler after it
    assert text.count("ZeroDivisionError('handler bug')  · rel_raiser") == 5 and "handler errors: 5" in text
