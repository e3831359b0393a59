"""Issue 14: what a newcomer meets in the magics, through a real IPython shell
against the simulated workspace (no token set, so ``%rtm_connect`` uses it).

Cells run as ipykernel runs them (``run_cell_async`` on the test's running
loop, which keeps running between cells), except where a test says otherwise.
"""

from __future__ import annotations

import asyncio
import re
import threading

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from rtm_notebook.notebook import livelog, magics
from rtm_notebook.notebook.magics import session


async def run(shell: InteractiveShell, cell: str, **kwargs):
    return await shell.run_cell_async(cell, transformed_cell=shell.transform_cell(cell), **kwargs)


async def ok(shell: InteractiveShell, cell: str, **kwargs):
    result = await run(shell, cell, **kwargs)
    assert result.success, (cell, result.error_before_exec or result.error_in_exec)
    return result


async def wait_until(predicate, timeout: float = 15.0) -> None:
    """Hang guard only: poll until ``predicate()`` is true."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def connected(client) -> None:
    async with asyncio.timeout(15):
        await client.connect()
        while not client.user_names or not client.channel_names:
            await asyncio.sleep(0.01)


async def stop_all(shell: InteractiveShell) -> None:
    await ok(shell, "%rtm_stop")
    await asyncio.gather(*list(magics._pending))


def human_and_channel(sim) -> tuple[str, str]:
    human = next(u["id"] for u in sim.users if not u["is_bot"])
    channel = next(c["id"] for c in sim.channels if c["is_member"])
    return human, channel


@pytest.fixture
def published(shell, monkeypatch):
    """Every display bundle the shell publishes (IPython's publisher, which
    also prints text/plain as before)."""
    bundles: list[dict] = []
    original = shell.display_pub.publish

    def publish(data, *args, **kwargs):
        bundles.append(data)
        return original(data, *args, **kwargs)

    monkeypatch.setattr(shell.display_pub, "publish", publish)
    return bundles


# -- item 2: running the %rtm_connect cell again ------------------------------------


async def test_rerunning_connect_with_the_same_options_keeps_the_client(capsys, shell):
    await ok(shell, "%rtm_connect --demo --rate 0")
    client = shell.user_ns["rtm"]
    await connected(client)
    sim = session().sim
    await ok(shell, "%%rtm_on message --name kept\nprint('kept saw', event['text'])")
    capsys.readouterr()

    await ok(shell, "%rtm_connect --demo --rate 0")
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "already" in line]
    assert len(lines) == 1, out
    assert "rtm: already connected to" in lines[0] and "simulated workspace" in lines[0]
    assert "to reconnect: %rtm_connect --demo --rate 0 --reconnect" in lines[0]
    assert shell.user_ns["rtm"] is client and client.state == "connected"
    assert session().sim is sim and len(sim.connect_calls) == 1
    assert [h.name for h in client.handlers] == ["kept"]

    human, channel = human_and_channel(sim)
    sim.post_message(human, channel, "still here")
    await wait_until(lambda: client.handlers["kept"].calls == 1)
    assert client.handlers["kept"].errors == 0
    await stop_all(shell)


async def test_rerunning_connect_with_other_options_replaces_it_and_carries_the_handlers(capsys, shell):
    await ok(shell, "%rtm_connect --demo --rate 0")
    old = shell.user_ns["rtm"]
    await connected(old)
    await ok(shell, "%%rtm_on message --name carried\nprint('carried saw', event['text'])")
    sink = session().sinks["carried"]
    capsys.readouterr()

    await ok(shell, "%rtm_connect --demo --rate 0 --connect-method rtm.start")
    assert len(old.handlers) == 0  # taken off at once: nothing more runs against the old client
    out = capsys.readouterr().out
    assert "replaces" in out and "--connect-method rtm.start" in out and "'carried'" in out, out
    new = shell.user_ns["rtm"]
    assert new is not old
    await asyncio.gather(*list(magics._pending))  # the old client's shutdown
    assert old.state == "stopped"
    await connected(new)
    assert [h.name for h in new.handlers] == ["carried"] and len(old.handlers) == 0
    assert session().sinks["carried"] is sink  # the same output area under the same cell

    human, channel = human_and_channel(session().sim)
    session().sim.post_message(human, channel, "after the replacement")
    await wait_until(lambda: new.handlers["carried"].calls == 1)
    assert new.handlers["carried"].errors == 0
    await wait_until(lambda: "carried saw after the replacement" in session().log.text(50))
    await stop_all(shell)


async def test_reconnect_option_replaces_even_with_the_same_options(capsys, shell):
    await ok(shell, "%rtm_connect --demo --rate 0")
    old = shell.user_ns["rtm"]
    await connected(old)
    await ok(shell, "%%rtm_on message --name again\npass")
    capsys.readouterr()
    await ok(shell, "%rtm_connect --demo --rate 0 --reconnect")
    assert "replaces" in capsys.readouterr().out
    new = shell.user_ns["rtm"]
    assert new is not old and [h.name for h in new.handlers] == ["again"]
    await connected(new)
    await stop_all(shell)


# -- item 3: events of an earlier client in the same kernel --------------------------


async def test_events_of_a_stopped_client_stay_in_rtm_events(shell):
    await ok(shell, "%rtm_connect --demo --rate 0")
    first = shell.user_ns["rtm"]
    await connected(first)
    human, channel = human_and_channel(session().sim)
    session().sim.post_message(human, channel, "said to the first client")
    await wait_until(lambda: "said to the first client" in set(first.events["text"].dropna()))
    await stop_all(shell)

    await ok(shell, "%rtm_connect --demo --rate 0")
    second = shell.user_ns["rtm"]
    assert second is not first
    await connected(second)
    human, channel = human_and_channel(session().sim)
    session().sim.post_message(human, channel, "said to the second client")
    await wait_until(lambda: "said to the second client" in set(second.events["text"].dropna()))

    events = second.events
    by_text = events[events["type"] == "message"].set_index("text")["connection"]
    # One frame spans both clients; connection numbers go on, so they tell them apart.
    assert by_text["said to the first client"] == 1
    assert by_text["said to the second client"] == 2
    assert second.connection_number == 2
    assert list(events["seq"]) == sorted(events["seq"]) and events["seq"].is_unique
    assert len(second.messages()) == 2
    await stop_all(shell)


# -- item 4: a handler that falls behind ----------------------------------------------


async def test_a_lagging_handler_shows_in_the_status_bar_and_warns_once(shell, monkeypatch):
    # The live log's timer runs when it has widgets (in a kernel); make it have them.
    monkeypatch.setattr(livelog, "in_kernel", lambda: True)
    monkeypatch.setattr(livelog, "LAG_AFTER", 0.3)
    release = threading.Event()
    shell.user_ns["_test_release"] = release
    await ok(shell, "def _test_slow(client, event):\n    _test_release.wait(10)\n")
    await ok(shell, "%rtm_connect --demo --rate 0")
    client = shell.user_ns["rtm"]
    await connected(client)
    log = session().log
    assert log.widget is not None
    await ok(shell, "%rtm_on message _test_slow")
    human, channel = human_and_channel(session().sim)
    try:
        for i in range(25):
            session().sim.post_message(human, channel, f"busy {i}")
        await wait_until(lambda: client.handlers["_test_slow"].queued == 24)
        stats = {s["name"]: s for s in client.handlers.stats()}
        assert stats["_test_slow"]["behind_for"] is not None and stats["_test_slow"]["behind_for"] >= 0
        await wait_until(lambda: "_test_slow: 24 queued, behind" in log._status.value)
        await asyncio.sleep(0.5)  # more timer ticks: still one warning
        warnings = [e for _, e in log._rows if e.get("type") == "warning"]
        assert len(warnings) == 1 and "_test_slow" in warnings[0]["text"] and "behind" in warnings[0]["text"]
        assert "falling behind" in log._rows_html.value
        table = (await ok(shell, "%rtm_handlers")).result.set_index("name")
        assert re.fullmatch(r"\d+(\.\d+)? (ms|s)", table.loc["_test_slow", "behind"])
    finally:
        release.set()
    await wait_until(lambda: client.handlers["_test_slow"].calls == 25)
    assert client.handlers["_test_slow"].behind_for is None
    await wait_until(lambda: "behind" not in log._status.value)
    table = (await ok(shell, "%rtm_handlers")).result.set_index("name")
    assert table.loc["_test_slow", "behind"] == ""

    # A second episode warns again.
    release.clear()
    try:
        for i in range(25):
            session().sim.post_message(human, channel, f"again {i}")
        await wait_until(lambda: len([e for _, e in log._rows if e.get("type") == "warning"]) == 2)
    finally:
        release.set()
    await stop_all(shell)


def test_behind_for_is_set_by_the_workers_only():
    import inspect

    from rtm_notebook.handlers import Handler
    from rtm_notebook.session import Session

    # The intake hot path does no extra work per event for this.
    assert "behind" not in inspect.getsource(Session._intake)
    assert "behind" not in inspect.getsource(Handler._offer_async)


async def test_behind_for_counts_from_when_the_queue_was_last_empty():
    from rtm_notebook.handlers import HandlerRegistry

    loop = asyncio.get_running_loop()
    gates = {"sync": threading.Event(), "async": asyncio.Event()}

    def sync_handler(client, event):
        gates["sync"].wait(10)

    async def async_handler(client, event):
        await gates["async"].wait()

    registry = HandlerRegistry(owner="client")
    registry.add("message", sync_handler, name="sync")
    registry.add("message", async_handler, name="async")
    registry.start(loop)
    try:
        await asyncio.sleep(0.3)  # idle a while: that is not being behind
        assert [s["behind_for"] for s in registry.stats()] == [None, None]
        for i in range(5):
            registry.dispatch("message", {"type": "message", "n": i})
        await wait_until(lambda: registry["sync"].queued == 4 and registry["async"].queued == 4)
        behind = {s["name"]: s["behind_for"] for s in registry.stats()}
        assert all(0 <= b < 0.25 for b in behind.values()), behind  # counted from the burst, not from idle
        await asyncio.sleep(0.2)
        assert all(registry[n].behind_for >= behind[n] + 0.15 for n in behind)
    finally:
        gates["sync"].set()
        gates["async"].set()
    await wait_until(lambda: registry["sync"].calls == 5 and registry["async"].calls == 5)
    assert registry["sync"].behind_for is None and registry["async"].behind_for is None
    await registry.stop()


# -- item 8: a syntax error in a %%rtm_on body ------------------------------------------


async def test_syntax_error_in_a_handler_body_shows_the_cells_line_only(capsys, shell):
    await ok(shell, "%rtm_connect --demo --rate 0", store_history=True)
    await connected(shell.user_ns["rtm"])
    await ok(shell, "x = 1", store_history=True)
    capsys.readouterr()
    cell = "%%rtm_on message --name broken\nx = 1\nsay('hi'\n"
    result = await run(shell, cell, store_history=True)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert f"Cell In[{result.execution_count}], line 3" in text, text
    assert "say('hi'" in text and "was never closed" in text
    for internal in ("magics.py", "ast.py", "interactiveshell.py", "Traceback", "compile_handler"):
        assert internal not in text, text
    assert "broken" not in shell.user_ns["rtm"].handlers
    await stop_all(shell)


async def test_a_handlers_runtime_traceback_names_its_cell_and_line(shell):
    await ok(shell, "%rtm_connect --demo --rate 0", store_history=True)
    client = shell.user_ns["rtm"]
    await connected(client)
    result = await ok(shell, "%%rtm_on message --name fails\nx = 1\n1 / 0\n", store_history=True)
    human, channel = human_and_channel(session().sim)
    session().sim.post_message(human, channel, "boom")
    await wait_until(lambda: client.handlers["fails"].errors == 1)
    events = client.events
    tb = events[(events["type"] == "error")]["raw"].iloc[-1]
    assert f"ipython-input-{result.execution_count}-" in tb and "line 3" in tb, tb
    await stop_all(shell)


# -- item 9: usage lines and event-name suggestions ---------------------------------------


def usage_error(shell: InteractiveShell, cell: str) -> str:
    result = shell.run_cell(cell)
    assert isinstance(result.error_in_exec, UsageError), (cell, result.error_in_exec)
    return str(result.error_in_exec)


@pytest.mark.parametrize(("cell", "says", "usage"), [
    ("%rtm_on", "the following arguments are required: event",
     "%rtm_on EVENT [FUNCTION] [--match REGEX] [--channel C] [--subtype S] [--name NAME]"),
    ("%rtm_on message --bogus", "unrecognized arguments: --bogus", "%rtm_on EVENT [FUNCTION]"),
    ("%rtm_connect --dmeo", "Did you mean --demo?", "%rtm_connect [--demo]"),
    ("%rtm_off a b", "unrecognized arguments: b", "%rtm_off [NAME] [--all]"),
    ("%rtm_log -n many", "invalid int value: 'many'", "%rtm_log [-n N]"),
    ("%rtm_stop a b", "unrecognized arguments: b", "%rtm_stop [NAME]"),
    ("%rtm_handlers extra", "takes no arguments", "%rtm_handlers"),
    ("%rtm_status extra", "takes no arguments", "%rtm_status"),
])
def test_every_magic_with_bad_arguments_says_what_to_type(shell, cell, says, usage):
    message = usage_error(shell, cell)
    assert says in message, message
    assert "::" not in message and "usage:" not in message, message
    typed = [line for line in message.splitlines() if line.startswith("Type: ")]
    assert len(typed) == 1, message
    assert typed[0].startswith("Type: " + usage), message


def test_unknown_event_suggests_only_close_names(shell):
    message = usage_error(shell, "%%rtm_on mesage\npass")
    assert "Did you mean 'message'?" in message
    message = usage_error(shell, "%%rtm_on reaction_add\npass")
    assert "Did you mean 'reaction_added'?" in message
    message = usage_error(shell, "%%rtm_on nosuchevent\npass")
    assert "Did you mean" not in message and "group_archive" not in message, message
    assert "message" in message and "reaction_added" in message and "*" in message


# -- item 10: %rtm_handlers, %rtm_status and the banner read well ----------------------------


async def test_rtm_handlers_is_display_ready(shell):
    await ok(shell, "%rtm_connect --demo --rate 0")
    client = shell.user_ns["rtm"]
    await connected(client)
    await ok(shell, "%%rtm_on message --channel #general --name in_general\npass")
    await ok(shell, "%%rtm_on message --match ^hi --name quiet\npass")
    general = next(cid for cid, n in client.channel_names.items() if n == "general")
    human = next(u["id"] for u in session().sim.users if not u["is_bot"])
    session().sim.post_message(human, general, "hello")
    await wait_until(lambda: client.handlers["in_general"].calls == 1)

    table = (await ok(shell, "%rtm_handlers")).result.set_index("name")
    assert table.loc["in_general", "filters"] == "channel=#general"
    assert table.loc["quiet", "filters"] == "match='^hi'"
    assert re.fullmatch(r"\d+(\.\d\d)? ms", table.loc["in_general", "mean time"]), table.loc["in_general", "mean time"]
    assert table.loc["quiet", "mean time"] == "" and table.loc["quiet", "busy"] == ""
    assert table.loc["quiet", "last error"] == "" and table.loc["in_general", "last error"] == ""
    assert table.loc["in_general", "calls"] == 1
    shown = table.to_string() + table.to_html()
    for raw in ("NaT", "NaN", "None", "days", "nan"):
        assert raw not in shown, shown
    await stop_all(shell)


async def test_status_and_banner_are_laid_out_not_one_long_line(capsys, shell, published):
    await ok(shell, "%rtm_connect --rate 0")
    banner = capsys.readouterr().out
    assert "no SLACK_BOT_TOKEN or SLACK_API_TOKEN set: connecting to the simulated workspace" in banner
    assert all(len(line) <= 100 for line in banner.splitlines()), banner
    await connected(shell.user_ns["rtm"])
    published.clear()
    await ok(shell, "%rtm_status")
    out = capsys.readouterr().out
    lines = out.splitlines()
    keyed = [line for line in lines if re.match(r"^\s+[a-z][a-z /]*:\s+\S", line)]
    assert len(keyed) >= 4, out
    assert any(re.match(r"^\s+state:\s+connected$", line) for line in lines), out
    assert any(re.match(r"^\s+connection:\s+#1$", line) for line in lines), out
    # The value column starts at the same place on every line.
    starts = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in keyed}
    assert len(starts) == 1, out
    # In a kernel the same as HTML: a table, keys kept whole.
    html = next(b["text/html"] for b in published if "text/html" in b)
    assert "<table" in html and "<th" in html and "white-space:nowrap" in html.replace(" ", "")
    assert ">state<" in html.replace(":", "") and ">connected<" in html
    await stop_all(shell)


def test_outside_a_kernel_rerunning_connect_keeps_or_replaces_with_the_handlers(capsys, shell):
    import time

    seen = []
    shell.user_ns["_test_greet"] = lambda client, event: seen.append((threading.current_thread().name, event["text"]))
    assert shell.run_cell("%rtm_connect --demo --rate 0").success
    first = shell.user_ns["rtm"]
    assert shell.run_cell("%rtm_on message _test_greet").success
    capsys.readouterr()
    assert shell.run_cell("%rtm_connect --demo --rate 0").success
    assert "rtm: already connected to" in capsys.readouterr().out and shell.user_ns["rtm"] is first

    old_background = session().background
    assert shell.run_cell("%rtm_connect --demo --rate 0 --connect-method rtm.start").success
    out = capsys.readouterr().out
    assert "replaces:" in out and "'_test_greet': carried over" in out, out
    second = shell.user_ns["rtm"]
    assert second is not first and first.state == "stopped" and not old_background.alive
    assert second.state == "connected" and [h.name for h in second.handlers] == ["_test_greet"]
    human, channel = human_and_channel(session().sim)
    session().sim.post_message(human, channel, "to the new client")
    deadline = time.monotonic() + 15  # hang guard
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen == [("rtm-handler-_test_greet", "to the new client")]
    events = second.events
    assert set(events["connection"]) == {0, 1, 2}  # 0: before the first socket
    assert list(events.loc[events["text"] == "to the new client", "connection"]) == [2]
    assert shell.run_cell("%rtm_stop").success


def test_say_in_thread_on_an_edit_replies_in_the_edited_messages_thread():
    from rtm_notebook.notebook.magics import _say_factory

    sent = []

    class Client:
        def send_message(self, channel, text, *, thread_ts=None):
            sent.append((channel, thread_ts))

            class Done:
                def result(self, timeout=None):
                    return {"ok": True}
            return Done()

    edit = {"type": "message", "subtype": "message_changed", "channel": "C1", "ts": "1700000009.000000",
            "message": {"type": "message", "text": "fixed", "ts": "1700000001.000000"}}
    reply = {"type": "message", "channel": "C1", "ts": "1700000005.000000", "thread_ts": "1700000002.000000"}
    for event in (edit, reply):
        _say_factory(None)(Client(), event)("hi", thread=True)
    assert sent == [("C1", "1700000001.000000"), ("C1", "1700000002.000000")]
