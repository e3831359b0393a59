"""The %rtm_* magics through a real IPython InteractiveShell, and handler output routing.

Two ways of running cells, as a person would meet them:

* ``kernel_like``: cells run with ``run_cell_async`` inside the test's running
  asyncio loop and the loop keeps running between cells: what ipykernel does
  (the client lives on that loop, magics never block it);
* plain ``run_cell`` with no running loop: terminal IPython / plain Python,
  where the client gets a background loop thread.

Everything talks to a real SimWorkspace over loopback sockets.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from rtm_notebook.handlers import HandlerRegistry
from rtm_notebook.notebook.magics import compile_handler
from rtm_notebook.notebook.output import HandlerSink, install_routing, uninstall_routing


def usage_error(shell: InteractiveShell, cell: str) -> str:
    result = shell.run_cell(cell)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    return str(result.error_in_exec)


# -- output routing with the real handler registry ---------------------------------


async def wait_until(predicate, timeout: float = 10.0) -> None:
    """Hang guard only: poll until ``predicate()`` is true."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def stdout_text(sink: HandlerSink) -> str:
    return "".join(o["text"] for o in sink.output.outputs if o["name"] == "stdout")


async def test_handler_prints_land_in_their_own_output_area(capsys):
    loop = asyncio.get_running_loop()
    install_routing()
    registry = HandlerRegistry(owner="client")
    sync_sink = HandlerSink("sync", loop, widget=True, interval=0.01)
    async_sink = HandlerSink("async", loop, widget=True, interval=0.01)
    logged = []
    sync_sink.on_text = lambda name, stream, text: logged.append((name, stream, text))
    gate = threading.Event()

    def sync_handler(client, event):
        gate.wait(5)
        print("sync saw", event["n"], "on", threading.current_thread().name)
        print("sync warning", file=sys.stderr)

    async def async_handler(client, event):
        print("async saw", event["n"])
        await asyncio.sleep(0)
        print("async after await")

    try:
        registry.add("message", sync_handler, name="sync", call_context=sync_sink.context)
        registry.add("message", async_handler, name="async", call_context=async_sink.context)
        registry.start(loop)
        registry.dispatch("message", {"type": "message", "n": 1})
        # "Another cell" prints while both handlers run.
        print("the running cell's own output")
        gate.set()
        await asyncio.sleep(0)
        print("more output of the running cell")
        await wait_until(lambda: "sync saw" in stdout_text(sync_sink) and "after" in stdout_text(async_sink))
        await wait_until(lambda: any(o["name"] == "stderr" for o in sync_sink.output.outputs))
    finally:
        await registry.stop()
        uninstall_routing()

    out = capsys.readouterr()
    assert "running cell's own output" in out.out and "more output" in out.out
    assert "saw" not in out.out + out.err and "warning" not in out.err
    assert stdout_text(sync_sink) == "sync saw 1 on rtm-handler-sync\n"
    assert stdout_text(async_sink) == "async saw 1\nasync after await\n"
    assert [o for o in sync_sink.output.outputs if o["name"] == "stderr"][0]["text"] == "sync warning\n"
    assert ("sync", "stdout", "sync saw 1 on rtm-handler-sync\n") in logged
    assert sys.stdout is not None and type(sys.stdout).__name__ != "RoutedStream"


async def test_handler_output_area_stays_bounded():
    sink = HandlerSink("chatty", asyncio.get_running_loop(), widget=True, interval=0.01)
    for i in range(5000):
        sink.write("stdout", f"line {i:05d} " + "x" * 40 + "\n")
        if i % 1000 == 0:
            sink.write("stderr", "oops\n")
    sink.flush()
    total = sum(len(o["text"]) for o in sink.output.outputs)
    assert total <= 20_000
    assert sink.output.outputs[-1]["text"].endswith("line 04999 " + "x" * 40 + "\n")
    assert all(o["text"].startswith(("line ", "oops")) for o in sink.output.outputs)  # whole lines only
    sink.close()


def test_compile_handler_sync_and_async():
    ns = {"GREETING": "hi"}
    sent = []

    def say_factory(client, event):
        return lambda text, thread=False: sent.append((event["channel"], text, thread))

    sync_fn = compile_handler("say(GREETING + ' ' + event['user'])\nglobal seen\nseen = web_client", filename="<cell-1>", namespace=ns, web=lambda c: "web", say=say_factory)
    assert not asyncio.iscoroutinefunction(sync_fn)
    sync_fn("client", {"channel": "C1", "user": "U1"})
    assert sent == [("C1", "hi U1", False)] and ns["seen"] == "web"

    async_fn = compile_handler("import asyncio\nawait asyncio.sleep(0)\nsay('later', thread=True)", filename="<cell-2>", namespace=ns, web=lambda c: None, say=say_factory)
    assert asyncio.iscoroutinefunction(async_fn)
    asyncio.run(async_fn("client", {"channel": "C2"}))
    assert sent[-1] == ("C2", "later", True)

    # await only inside a nested coroutine: the handler itself stays sync.
    nested = compile_handler("async def helper():\n    await x\nresult = 1", filename="<cell-3>", namespace=ns, web=lambda c: None, say=say_factory)
    assert not asyncio.iscoroutinefunction(nested)

    # Tracebacks point at the cell's own lines.
    failing = compile_handler("a = 1\nb = 2\n1 / 0", filename="<cell-4>", namespace=ns, web=lambda c: None, say=say_factory)
    with pytest.raises(ZeroDivisionError) as info:
        failing("client", {})
    assert info.traceback[-1].lineno + 1 == 3 and str(info.traceback[-1].path) == "<cell-4>"


# -- usage errors that need no connection ------------------------------------------


def test_no_client_yet_says_run_connect(shell):
    for cell in ("%%rtm_on message\nsay('hi')", "%rtm_handlers", "%rtm_off --all", "%rtm_log", "%rtm_status", "%rtm_stop"):
        message = usage_error(shell, cell)
        assert "%rtm_connect" in message or "nothing to stop" in message, (cell, message)


def test_unknown_option_says_what_to_type(shell):
    message = usage_error(shell, "%rtm_connect --dmeo")
    assert "unrecognized arguments: --dmeo" in message and "Did you mean --demo?" in message
    assert "%rtm_connect [--demo]" in message


def test_help_shows_docstring_and_options(capsys, shell):
    shell.run_cell("%rtm_on?")
    shown = capsys.readouterr().out
    assert "say(text, thread=False)" in shown and "--match REGEX" in shown and "--channel C" in shown


# -- connected: kernel-like (cells on the running loop) ------------------------------


async def run(shell: InteractiveShell, cell: str):
    """Run a cell the way ipykernel does: as a coroutine on the running loop."""
    result = await shell.run_cell_async(cell, transformed_cell=shell.transform_cell(cell))
    return result


async def ok(shell: InteractiveShell, cell: str):
    result = await run(shell, cell)
    assert result.success, (cell, result.error_before_exec or result.error_in_exec)
    return result


async def stop_all(shell: InteractiveShell) -> None:
    from rtm_notebook.notebook import magics

    await ok(shell, "%rtm_stop")
    await asyncio.gather(*list(magics._pending))


async def connected(client) -> None:
    """Wait for hello and for the names the magic loads right after it."""
    async with asyncio.timeout(15):
        await client.connect()
        while not client.user_names or not client.channel_names:
            await asyncio.sleep(0.01)


async def demo_connected(shell: InteractiveShell):
    """``%rtm_connect`` to a quiet demo workspace; the connected client, names loaded."""
    await ok(shell, "%rtm_connect --demo --rate 0")
    client = shell.user_ns["rtm"]
    await connected(client)
    return client


def human_and_channel(sim) -> tuple[str, str]:
    human = next(u["id"] for u in sim.users if not u["is_bot"])
    channel = next(c["id"] for c in sim.channels if c["is_member"])
    return human, channel


async def test_connect_handle_reply_replace_remove_stop(capsys, shell):
    from rtm_notebook.notebook.magics import session

    await ok(shell, "%rtm_connect --rate 0 --name bot")
    client = shell.user_ns["bot"]
    sess = session("bot")
    assert "no SLACK_BOT_TOKEN or SLACK_API_TOKEN set: connecting to the simulated workspace" in capsys.readouterr().out
    assert client.loop is asyncio.get_running_loop()  # the cell's loop, as in a kernel
    await connected(client)
    sim = sess.sim
    human, channel = human_and_channel(sim)

    cell = '%%rtm_on message --match Hello\nprint("saw", event["text"])\nawait say(f"Hi <@{event[\'user\']}>!")'
    await ok(shell, cell)
    out = capsys.readouterr().out
    name = re.search(r"handler '(\w+)' on message \(match='Hello'\), runs on the loop", out).group(1)
    assert [h.name for h in client.handlers] == [name]

    sim.post_message(human, channel, "Hello bot")
    sim.post_message(human, channel, "not for the bot")
    async with asyncio.timeout(15):
        while not any(p["text"] == f"Hi <@{human}>!" for p in sim.posted):
            await asyncio.sleep(0.02)
        while client.handlers[name].calls < 1:
            await asyncio.sleep(0.01)

    events = client.events
    incoming = events[(events["type"] == "message") & (events["direction"] == "in")]
    assert list(incoming["text"]) == ["Hello bot", "not for the bot"]
    out_rows = events[events["direction"] == "out"]
    assert list(out_rows["text"]) == [f"Hi <@{human}>!"]
    assert [m for m in sim.received if m.get("type") == "message"][0]["channel"] == channel

    # The handler's print went to its own area (here: the log, then the
    # terminal, since there is no kernel), not into the cell that was running.
    async with asyncio.timeout(10):
        while "saw Hello bot" not in sess.log.text(50):
            await asyncio.sleep(0.02)
    assert "[" + name + "]" in sess.log.text(50)
    names_text = sess.log.text(50)
    assert "#" + client.channel_names[channel] in names_text and client.user_names[human] in names_text

    # Re-running the edited cell replaces the handler instead of adding one.
    await ok(shell, cell.replace("saw", "seen"))
    assert [h.name for h in client.handlers] == [name]

    table = (await ok(shell, "%rtm_handlers")).result
    assert list(table.columns) == ["name", "event", "filters", "calls", "errors", "last error", "mean time",
                                   "queued", "behind", "dropped", "busy"]
    assert table.loc[0, "name"] == name and table.loc[0, "filters"] == "match='Hello'"

    await ok(shell, f"%rtm_off {name}")
    assert len(client.handlers) == 0
    await ok(shell, "%rtm_status")
    status = capsys.readouterr().out
    assert "\nbot\n  state:" in status and "simulated workspace" in status

    await stop_all(shell)
    assert client.state == "stopped" and sim.base_url == ""
    assert session.__module__  # the session is gone:
    with pytest.raises(UsageError, match="run %rtm_connect first"):
        session()


async def test_rtm_handlers_tells_a_stuck_handler_from_an_idle_one(shell, monkeypatch):
    from rtm_notebook.notebook import livelog
    from rtm_notebook.notebook.magics import session

    client = await demo_connected(shell)
    release = threading.Event()
    shell.user_ns["_test_release"] = release
    await ok(shell, "def _test_stuck(client, event):\n    _test_release.wait(10)\n"
                    "def _test_idle(client, event):\n    pass\n")
    await ok(shell, "%rtm_on message _test_stuck")
    await ok(shell, "%rtm_on reaction_removed _test_idle")
    human, channel = human_and_channel(session().sim)
    try:
        for i in range(5):
            session().sim.post_message(human, channel, f"hi {i}")
        await wait_until(lambda: client.handlers["_test_stuck"].queued == 4)
        table = (await ok(shell, "%rtm_handlers")).result.set_index("name")
        assert table.loc["_test_stuck", "queued"] == 4 and re.fullmatch(r"[\d.]+ (ms|s)", table.loc["_test_stuck", "busy"])
        assert table.loc["_test_idle", "queued"] == 0 and table.loc["_test_idle", "busy"] == ""
        # The live log's status bar names it once it has been busy too long.
        monkeypatch.setattr(livelog, "STUCK_AFTER", 3600.0)
        assert "stuck" not in session().log.status_text()
        monkeypatch.setattr(livelog, "STUCK_AFTER", 0.0)
        assert "stuck: _test_stuck" in session().log.status_text()
    finally:
        release.set()
    await wait_until(lambda: client.handlers["_test_stuck"].calls == 5)
    assert client.handlers["_test_stuck"].busy_for is None
    await stop_all(shell)


async def test_handler_errors_reach_its_area_and_the_log(capsys, shell):
    from rtm_notebook.notebook.magics import session

    client = await demo_connected(shell)
    sess = session()
    human, channel = human_and_channel(sess.sim)
    await ok(shell, "%%rtm_on message --name boom\nprint('about to fail')\n1 / 0")
    sess.sim.post_message(human, channel, "<script>alert(1)</script>")
    async with asyncio.timeout(15):
        while client.handlers["boom"].errors < 1:
            await asyncio.sleep(0.01)
        while "ZeroDivisionError" not in capsys.readouterr().err:
            await asyncio.sleep(0.02)
    text = sess.log.text(20)
    assert "ZeroDivisionError" in text and "[boom]" in text and "about to fail" in text
    stats = (await ok(shell, "%rtm_handlers")).result
    assert stats.loc[0, "errors"] == 1 and "ZeroDivisionError" in stats.loc[0, "last error"]
    await stop_all(shell)


async def test_usage_errors_with_a_client(shell):
    await demo_connected(shell)
    cases = {
        "%%rtm_on mesage\npass": "Unknown event type 'mesage'. Did you mean 'message'? Type: %%rtm_on message",
        "%%rtm_on message --match (\npass": "is not a valid regular expression",
        "%%rtm_on message\n  \n": "empty",
        "%rtm_on message": "%rtm_on needs a function",
        "%rtm_on message no_such_function": "'no_such_function' is not a function defined in this notebook",
        "%%rtm_on message --channel #genral\npass": "Did you mean #general?",
        "%rtm_off nope": "No handler named 'nope'",
        "%rtm_off": "Type %rtm_off NAME",
        "%rtm_connect --name 2x": "--name must be a Python variable name",
        "%rtm_connect --token-env NO_SUCH_VAR_SET": "Environment variable NO_SUCH_VAR_SET is not set",
        '%%rtm_on message --match "unbalanced\npass': "check the quotes",
        "%rtm_connect --demo --base-url http://127.0.0.1:1/api/": "--demo connects to the simulated workspace, --base-url to a real one",
        "%rtm_connect --base-url http://127.0.0.1:1/api/": "--base-url needs a token",
        "%rtm_connect --demo --rate -1": "--rate must be 0 or more",
        "%%rtm_on message\nyield event": "cannot use yield",
        "%rtm_on message _test_one_arg": "'_test_one_arg' must accept two arguments (client, event)",
    }

    def _test_one_arg(event):
        pass

    shell.user_ns["_test_one_arg"] = _test_one_arg
    for cell, expected in cases.items():
        result = await run(shell, cell)
        assert isinstance(result.error_in_exec, UsageError), (cell, result.error_in_exec)
        assert expected in str(result.error_in_exec), (cell, str(result.error_in_exec))
    # Quotes group words and are not part of the value; backslashes survive.
    await ok(shell, '%%rtm_on message --match "^Hello there" --name quoted\npass')
    await ok(shell, "%%rtm_on message --match \\bhi\\b --name escaped\npass")
    assert "_test_one_arg" not in shell.user_ns["rtm"].handlers
    assert shell.user_ns["rtm"].handlers["quoted"].filters["match"] == "^Hello there"
    assert shell.user_ns["rtm"].handlers["escaped"].filters["match"] == r"\bhi\b"
    # Channel names resolve to ids.
    await ok(shell, "%%rtm_on message --channel #general --name in_general\npass")
    general = next(cid for cid, n in shell.user_ns["rtm"].channel_names.items() if n == "general")
    assert shell.user_ns["rtm"].handlers["in_general"].filters["channel"] == general
    await stop_all(shell)


async def test_unload_stops_clients_and_removes_handlers(shell):
    from rtm_notebook.notebook import magics

    client = await demo_connected(shell)
    await ok(shell, "%%rtm_on message --name h\npass")
    await ok(shell, "%unload_ext rtm_notebook")
    await asyncio.gather(*list(magics._pending))
    assert client.state == "stopped" and len(client.handlers) == 0
    assert "rtm_on" not in shell.magics_manager.magics["cell"]
    assert type(sys.stdout).__name__ != "RoutedStream"
    await ok(shell, "%load_ext rtm_notebook")  # the fixture unloads it again


# -- connected: terminal IPython / plain Python (no running loop) -----------------------


def test_outside_a_kernel_uses_a_background_loop(capsys, shell):
    import time

    from rtm_notebook.notebook.magics import session

    seen = []
    shell.user_ns["greet"] = lambda client, event: seen.append((threading.current_thread().name, event["text"]))
    assert shell.run_cell("%rtm_connect --demo --rate 0 --connect-method rtm.start").success
    out = capsys.readouterr().out
    assert "connected to" in out and "xoxb" not in out
    client = shell.user_ns["rtm"]
    assert client.state == "connected" and client.loop is session().background.loop
    assert shell.run_cell("%rtm_on message greet --match ^ping").success
    assert "handler 'greet' on message" in capsys.readouterr().out
    human, channel = human_and_channel(session().sim)
    session().sim.post_message(human, channel, "ping 1")
    deadline = time.monotonic() + 15  # hang guard
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen == [("rtm-handler-greet", "ping 1")]
    assert shell.run_cell("%rtm_log -n 3").success
    log_text = capsys.readouterr().out
    assert log_text.startswith("state: connected") and "ping 1" in log_text
    background = session().background
    assert shell.run_cell("%rtm_stop").success
    assert client.state == "stopped" and not background.alive


async def test_default_name_follows_the_cell_id_when_the_front_end_sends_one(shell):
    client = await demo_connected(shell)

    async def in_cell(cell_id: str, cell: str) -> None:
        result = await shell.run_cell_async(cell, transformed_cell=shell.transform_cell(cell), cell_id=cell_id)
        assert result.success, result.error_in_exec

    await in_cell("cell-a", "%%rtm_on message --match A\npass")
    # The same cell edited (options and body) replaces its handler...
    await in_cell("cell-a", "%%rtm_on message --match B\nprint('edited')")
    assert len(client.handlers) == 1 and next(iter(client.handlers)).filters == {"match": "B"}
    # ...while an identical magic line in another cell is another handler.
    await in_cell("cell-b", "%%rtm_on message --match B\nprint('edited')")
    assert len(client.handlers) == 2
    await stop_all(shell)


async def test_say_in_thread_and_registered_async_function(shell):
    from rtm_notebook.notebook.magics import session

    client = await demo_connected(shell)
    await ok(shell, "%%rtm_on message --match ^thread --name threaded\nawait say('in the thread', thread=True)")
    await ok(shell, "async def shout(client, event):\n    await client.send_message(event['channel'], event['text'].upper())")
    await ok(shell, "%rtm_on message shout --match ^loud")
    assert client.handlers["shout"].is_async
    sim = session().sim
    human, channel = human_and_channel(sim)
    asked = sim.post_message(human, channel, "thread please")
    sim.post_message(human, channel, "loud please")
    async with asyncio.timeout(15):
        while len([m for m in sim.received if m.get("type") == "message"]) < 2:
            await asyncio.sleep(0.02)
    sent = {m["text"]: m for m in sim.received if m.get("type") == "message"}
    assert sent["in the thread"]["thread_ts"] == asked["ts"] and sent["in the thread"]["channel"] == channel
    assert "LOUD PLEASE" in sent
    await stop_all(shell)



async def test_socket_mode_connect_say_and_a_slash_command_cell(capsys, shell):
    """%rtm_connect --socket-mode on the simulated workspace; the same %%rtm_on and say(); /deploy answers."""
    from rtm_notebook.notebook.magics import session

    await ok(shell, "%rtm_connect --socket-mode --rate 0 --name app")
    client = shell.user_ns["app"]
    assert type(client).__name__ == "SocketModeClient"
    assert "no SLACK_APP_TOKEN set: connecting to the simulated workspace (Socket Mode)" in capsys.readouterr().out
    await connected(client)
    sim = session("app").sim
    human, channel = human_and_channel(sim)

    await ok(shell, '%%rtm_on message --match Hello\nawait say(f"Hi <@{event[\'user\']}>!")')
    await ok(shell, '%%rtm_on /deploy\nf"deploying {event[\'text\']}"')
    assert "handler 'deploy_" in capsys.readouterr().out
    sim.post_message(human, channel, "Hello app")
    async with asyncio.timeout(15):
        while not any(p["text"] == f"Hi <@{human}>!" for p in sim.posted):
            await asyncio.sleep(0.02)
    envelope_id = sim.slash_command("/deploy", "v3", channel=channel)
    ack = await asyncio.to_thread(sim.wait_for_ack, envelope_id, 10.0)
    assert ack["payload"] == {"text": "deploying v3"}
    await ok(shell, "%rtm_status")
    await ok(shell, "%rtm_handlers")
    assert "deploy_" in capsys.readouterr().out
    await stop_all(shell)


async def test_connect_picks_the_transport_by_the_tokens_found(shell, monkeypatch):
    monkeypatch.setenv("MY_APP", "")
    assert "MY_APP is not set or empty" in usage_error(shell, "%rtm_connect --app-token-env MY_APP")
    assert "--connect-method is RTM's" in usage_error(shell, "%rtm_connect --socket-mode --connect-method rtm.start")
    assert "--replay plays a recording" in usage_error(shell, "%rtm_connect --replay x.jsonl --socket-mode")
    monkeypatch.setenv("MY_BOT", "xoxb-1")
    assert "needs the app-level token" in usage_error(shell, "%rtm_connect --socket-mode --token-env MY_BOT")


async def test_a_slash_cell_ending_in_say_answers_nothing_and_star_handlers_do_not_answer(capsys, shell):
    from rtm_notebook.notebook.magics import session

    await ok(shell, "%rtm_connect --socket-mode --rate 0 --name app2")
    client = shell.user_ns["app2"]
    await connected(client)
    sim = session("app2").sim
    await ok(shell, "%%rtm_on *\n'a star handler sees it all but answers nothing'")
    await ok(shell, '%%rtm_on /ping\nawait say("pong")')
    envelope_id = sim.slash_command("/ping", "")
    ack = await asyncio.to_thread(sim.wait_for_ack, envelope_id, 10.0)
    assert ack["payload"] is None and not ack["late"]
    async with asyncio.timeout(15):
        while not any(p["text"] == "pong" for p in sim.posted):
            await asyncio.sleep(0.02)
    assert not client.counts["error"]  # no bad_answer for say()'s reply
    await stop_all(shell)
