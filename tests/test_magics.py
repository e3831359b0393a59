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
import sys
import threading

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from rtm_notebook.handlers import HandlerRegistry
from rtm_notebook.notebook.magics import compile_handler
from rtm_notebook.notebook.output import HandlerSink, install_routing, uninstall_routing


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    for var in ("SLACK_BOT_TOKEN", "SLACK_API_TOKEN"):
        assert var not in __import__("os").environ, f"unset {var} to run these tests (they use the simulated workspace)"
    shell.run_line_magic("load_ext", "rtm_notebook")
    yield shell
    shell.run_line_magic("unload_ext", "rtm_notebook")
    for name in [n for n in shell.user_ns if n.startswith(("rtm", "bot", "_test_"))]:
        del shell.user_ns[name]


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


def test_help_shows_docstring_and_options(shell, capsys):
    shell.run_cell("%rtm_on?")
    shown = capsys.readouterr().out
    assert "say(text, thread=False)" in shown and "--match REGEX" in shown and "--channel C" in shown
