"""HandlerRegistry on a real event loop: ordering, isolation, errors, replace, filters, stop.

The registry has no network code; the client tests exercise it over sockets.
"""

import asyncio
import contextlib
import threading

import pytest

from rtm_notebook.handlers import HandlerRegistry

GUARD = 10  # seconds: a hang guard, never an assertion about speed


class Owner:
    def __repr__(self):
        return "<owner>"


def make_registry(errors=None):
    owner = Owner()
    reg = HandlerRegistry(
        owner,
        seed_kwargs=lambda is_async: {"rtm_client": owner, "web_client": "async-web" if is_async else "sync-web"},
        on_error=(lambda h, exc, tb, ev: errors.append((h.name, exc, tb, ev))) if errors is not None else None,
    )
    return owner, reg


async def wait_until(pred, what):
    async with asyncio.timeout(GUARD):
        while not pred():
            await asyncio.sleep(0.005)


def dispatch_numbered(reg, count):
    """Dispatch ``count`` message events carrying ``n`` = 0, 1, 2, ..."""
    for n in range(count):
        reg.dispatch("message", {"type": "message", "n": n})


def handler_threads():
    return [t for t in threading.enumerate() if t.name.startswith("rtm-handler-")]


async def test_each_handler_sees_events_in_order_sync_and_async():
    owner, reg = make_registry()
    got_sync, got_async, got_star = [], [], []
    threads = set()

    def on_sync(client, event):
        assert client is owner
        threads.add(threading.current_thread().name)
        got_sync.append(event["n"])

    async def on_async(client, event):
        got_async.append(event["n"])

    reg.add("message", on_sync)
    reg.add("message", on_async)
    reg.add("*", lambda c, e: got_star.append(e["type"]), name="star")
    reg.start(asyncio.get_running_loop())
    dispatch_numbered(reg, 500)
    reg.dispatch("hello", {"type": "hello"})
    await wait_until(lambda: len(got_sync) == 500 and len(got_async) == 500 and len(got_star) == 501, "all")
    assert got_sync == list(range(500)) and got_async == list(range(500))
    assert got_star[-1] == "hello" and got_star.count("message") == 500
    assert threads == {"rtm-handler-on_sync"}
    await reg.stop()
    assert handler_threads() == []


async def test_slow_sync_handler_delays_only_itself():
    _, reg = make_registry()
    release = threading.Event()
    slow_got, fast_got = [], []

    def slow(client, event):
        release.wait(GUARD)
        slow_got.append(event["n"])

    def fast(client, event):
        fast_got.append(event["n"])

    reg.add("message", slow)
    reg.add("message", fast)
    reg.start(asyncio.get_running_loop())
    dispatch_numbered(reg, 100)
    # the fast handler finishes everything while the slow one is still stuck on its first event
    await wait_until(lambda: len(fast_got) == 100, "fast handler done")
    assert slow_got == []
    assert reg["slow"].queued >= 98
    release.set()
    await wait_until(lambda: len(slow_got) == 100, "slow handler done")
    assert slow_got == list(range(100))
    await reg.stop()


async def test_slow_async_handler_delays_only_itself():
    _, reg = make_registry()
    gate = asyncio.Event()
    slow_got, fast_got = [], []

    async def slow(client, event):
        await gate.wait()
        slow_got.append(event["n"])

    async def fast(client, event):
        fast_got.append(event["n"])

    reg.add("message", slow)
    reg.add("message", fast)
    reg.start(asyncio.get_running_loop())
    dispatch_numbered(reg, 50)
    await wait_until(lambda: len(fast_got) == 50, "fast")
    assert slow_got == []
    gate.set()
    await wait_until(lambda: len(slow_got) == 50, "slow")
    assert slow_got == list(range(50))
    await reg.stop()


async def test_exceptions_are_counted_reported_and_the_handler_keeps_going():
    errors = []
    _, reg = make_registry(errors)
    seen = []

    def flaky(client, event):
        seen.append(event["n"])
        if event["n"] % 2:
            raise ValueError(f"odd {event['n']}")

    async def aflaky(client, event):
        raise KeyError("nope")

    reg.add("message", flaky)
    reg.add("message", aflaky)
    reg.start(asyncio.get_running_loop())
    dispatch_numbered(reg, 6)
    await wait_until(lambda: len(errors) == 9, "errors reported")
    h = reg["flaky"]
    assert seen == list(range(6)) and h.calls == 6 and h.errors == 3
    assert h.last_error == "ValueError('odd 5')"
    assert reg["aflaky"].errors == 6 and reg["aflaky"].calls == 6
    flaky_errors = [e for e in errors if e[0] == "flaky"]
    assert [e[3]["n"] for e in flaky_errors] == [1, 3, 5]
    assert "ValueError: odd 1" in flaky_errors[0][2] and "Traceback" in flaky_errors[0][2]
    stats = {s["name"]: s for s in reg.stats()}
    assert stats["flaky"]["errors"] == 3 and stats["flaky"]["kind"] == "sync"
    assert stats["aflaky"]["kind"] == "async" and stats["flaky"]["mean_time"] >= 0
    await reg.stop()


async def test_same_name_replaces_and_old_worker_stops():
    _, reg = make_registry()
    a, b = [], []
    reg.add("message", lambda c, e: a.append(e), name="h")
    reg.start(asyncio.get_running_loop())
    reg.dispatch("message", {"type": "message"})
    await wait_until(lambda: len(a) == 1, "first")
    reg.add("message", lambda c, e: b.append(e), name="h")
    assert len(reg) == 1
    reg.dispatch("message", {"type": "message"})
    await wait_until(lambda: len(b) == 1, "second")
    await wait_until(lambda: len(handler_threads()) == 1, "old thread gone")
    assert len(a) == 1
    assert reg.remove("h") and not reg.remove("h")
    await reg.stop()
    assert handler_threads() == []


async def test_default_name_is_function_name_so_rerunning_a_cell_does_not_double_register():
    _, reg = make_registry()
    for _ in range(3):
        def on_message(client, event):  # the same cell, run three times
            pass

        reg.add("message", on_message)
    assert len(reg) == 1


async def test_filters():
    _, reg = make_registry()
    got = {"match": [], "chan": [], "sub": []}
    reg.add("message", lambda c, e: got["match"].append(e["ts"]), name="match", filters={"match": r"(?i)hello"})
    reg.add("message", lambda c, e: got["chan"].append(e["ts"]), name="chan", filters={"channel": ["C1", "C2"]})
    reg.add("message", lambda c, e: got["sub"].append(e["ts"]), name="sub", filters={"subtype": "bot_message"})
    events = [
        {"type": "message", "channel": "C1", "text": "Hello there", "ts": "1"},
        {"type": "message", "channel": "C3", "text": "bye", "ts": "2", "subtype": "bot_message"},
        {"type": "message", "channel": "C2", "ts": "3"},
        {"type": "message", "channel": "C3", "text": "oh HELLO", "ts": "4"},
    ]
    assert [h.name for h in reg.matching("message", events[0])] == ["match", "chan"]
    reg.start(asyncio.get_running_loop())
    for e in events:
        reg.dispatch("message", e)
    await wait_until(lambda: got == {"match": ["1", "4"], "chan": ["1", "3"], "sub": ["2"]}, "filtered")
    with pytest.raises(TypeError, match="unknown handler filter"):
        reg.add("message", lambda c, e: None, filters={"user": "U1"})
    await reg.stop()


async def test_seed_style_gets_keyword_payload():
    _, reg = make_registry()
    got = []

    def seed(**payload):
        got.append(("sync", payload["web_client"], payload["data"]["n"], repr(payload["rtm_client"])))

    async def aseed(**payload):
        got.append(("async", payload["web_client"], payload["data"]["n"], repr(payload["rtm_client"])))

    reg.add("message", seed, style="seed")
    reg.add("message", aseed, style="seed")
    reg.start(asyncio.get_running_loop())
    reg.dispatch("message", {"type": "message", "n": 1})
    await wait_until(lambda: len(got) == 2, "both")
    assert sorted(got) == [("async", "async-web", 1, "<owner>"), ("sync", "sync-web", 1, "<owner>")]
    await reg.stop()


async def test_call_context_wraps_each_call():
    _, reg = make_registry()
    trail = []

    @contextlib.contextmanager
    def ctx():
        trail.append("enter")
        yield
        trail.append("exit")

    reg.add("message", lambda c, e: trail.append("call"), name="h", call_context=ctx)
    reg.start(asyncio.get_running_loop())
    reg.dispatch("message", {"type": "message"})
    await wait_until(lambda: len(trail) == 3, "wrapped")
    assert trail == ["enter", "call", "exit"]
    await reg.stop()


async def test_stop_leaves_no_tasks_or_threads_and_restart_works():
    _, reg = make_registry()
    got = []
    reg.add("message", lambda c, e: got.append(e), name="s")

    async def a(c, e):
        got.append(e)

    reg.add("message", a)
    before = asyncio.all_tasks()
    reg.start(asyncio.get_running_loop())
    assert len(asyncio.all_tasks() - before) == 1 and len(handler_threads()) == 1
    await reg.stop()
    assert asyncio.all_tasks() == before and handler_threads() == []
    reg.start(asyncio.get_running_loop())
    reg.dispatch("message", {"type": "message"})
    await wait_until(lambda: len(got) == 2, "after restart")
    await reg.stop()
    assert asyncio.all_tasks() == before and handler_threads() == []


async def test_bad_registrations():
    _, reg = make_registry()
    with pytest.raises(TypeError, match="not callable"):
        reg.add("message", 3)
    with pytest.raises(TypeError, match="event"):
        reg.add("", lambda c, e: None)


async def test_a_counted_failure_has_already_been_reported():
    """Once `calls` includes a failed call of a sync handler, its error was handed to on_error."""
    errors = []
    _, reg = make_registry(errors)

    def always_fails(client, event):
        raise RuntimeError(event["n"])

    reg.add("message", always_fails)
    reg.start(asyncio.get_running_loop())
    for n in range(200):
        reg.dispatch("message", {"type": "message", "n": n})
        if reg["always_fails"].calls:
            assert len(errors) == reg["always_fails"].calls
    await wait_until(lambda: reg["always_fails"].calls == 200, "all calls")
    assert len(errors) == 200
    await reg.stop()


async def test_busy_for_shows_a_call_in_progress_sync_and_async():
    _, reg = make_registry()
    gate = threading.Event()
    async_gate = asyncio.Event()

    def stuck(client, event):
        gate.wait(GUARD)

    async def stuck_async(client, event):
        await async_gate.wait()

    reg.add("message", stuck, name="sync")
    reg.add("message", stuck_async, name="async")
    reg.start(asyncio.get_running_loop())
    assert [s["busy_for"] for s in reg.stats()] == [None, None]
    dispatch_numbered(reg, 3)
    await wait_until(lambda: reg["sync"].queued == 2 and reg["async"].queued == 2, "both inside their first call")
    first = {s["name"]: s["busy_for"] for s in reg.stats()}
    assert first["sync"] > 0 and first["async"] > 0
    gate.set()
    async_gate.set()
    await wait_until(lambda: reg["sync"].calls == 3 and reg["async"].calls == 3, "all calls done")
    assert reg["sync"].busy_for is None and reg["async"].busy_for is None
    await reg.stop()
