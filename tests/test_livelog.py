"""LiveLog: state after events, filters, pause/resume/clear, throttling,
thread hand-off, escaping, text fallback.

Events go in through ``LiveLog.tap``, the method the client calls on its loop
for every recorded event: that is the widget's real input.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from rtm_notebook.notebook.livelog import LiveLog


def message(i: int, *, channel: str = "C1", user: str = "U1", text: str | None = None) -> dict:
    return {"type": "message", "channel": channel, "user": user, "text": text if text is not None else f"msg {i}", "ts": f"1700000000.{i:06d}"}


@pytest.fixture
async def log():
    log = LiveLog(widgets=True, loop=asyncio.get_running_loop(), interval=0.01)
    yield log
    log.close()


async def rendered(log: LiveLog, at_least: int = 1) -> None:
    """Wait (hang guard only) until the timer has rendered ``at_least`` times."""
    async with asyncio.timeout(10):
        while log.renders < at_least:
            await asyncio.sleep(0.005)


async def test_rows_newest_first_with_names(log):
    log.set_names(users=[{"id": "U1", "name": "alice"}], channels={"C1": "general"})
    for i in range(3):
        log.tap(message(i))
    await rendered(log)
    html = log._rows_html.value
    assert html.index("msg 2") < html.index("msg 1") < html.index("msg 0")
    assert "#general" in html and "alice" in html
    assert "<td>U1</td>" not in html and "#C1" not in html  # names shown, not ids
    assert log._type.options == (("all types", ""), ("message", "message"))
    assert ("#general", "C1") in log._channel.options


async def test_html_is_escaped(log):
    log.tap(message(1, text='<script>alert("x")</script> & <b>bold</b>'))
    log.tap({"type": "error", "handler": "h<i>", "error": "ValueError('<img>')", "traceback": "Traceback\n  <iframe>\nValueError"})
    await rendered(log)
    html = log._rows_html.value
    for raw in ("<script>", "<b>bold", "<img>", "<iframe>", "h<i>"):
        assert raw not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html


async def test_handler_error_red_with_folded_traceback(log):
    log.tap({"type": "error", "handler": "greeter", "error": "ZeroDivisionError('division by zero')", "traceback": "Traceback (most recent call last):\nZeroDivisionError"})
    log.tap(message(1))
    await rendered(log)
    html = log._rows_html.value
    assert '<tr class="err">' in html
    # The message first, then the handler (issue 14 item 7: a long handler name hid the message).
    assert "<details><summary>ZeroDivisionError(&#x27;division by zero&#x27;)  · greeter</summary><pre>Traceback (most recent call last):" in html


async def test_filters_type_channel_search(log):
    log.tap(message(1, channel="C1", text="hello world"))
    log.tap(message(2, channel="C2", text="Hello there"))
    log.tap({"type": "user_typing", "channel": "C1", "user": "U2"})
    log.tap({"type": "reaction_added", "user": "U2", "reaction": "tada", "item": {"channel": "C1"}})

    log.set_filter(type="message")
    log.flush()
    assert "hello world" in log._rows_html.value and "user_typing" not in log._rows_html.value
    assert log._type.value == "message"

    log.set_filter(channel="C2")
    log.flush()
    assert "Hello there" in log._rows_html.value and "hello world" not in log._rows_html.value

    log.set_filter(type=None, channel=None, search="HELLO")
    log.flush()
    html = log._rows_html.value
    assert "hello world" in html and "Hello there" in html and "user_typing" not in html and "tada" not in html

    log.set_filter(search="")
    log.flush()
    assert "user_typing" in log._rows_html.value and ":tada:" in log._rows_html.value


async def test_pause_resume_clear(log):
    log.tap(message(1))
    log.flush()
    log.pause()
    assert log._pause.description == "resume"
    log.tap(message(2))
    log.flush()
    assert "msg 2" not in log._rows_html.value and "PAUSED" in log._status.value
    log.resume()
    log.flush()
    assert "msg 2" in log._rows_html.value and log._pause.description == "pause"
    log.clear()
    log.flush()
    assert "msg" not in log._rows_html.value
    log.tap(message(3))
    log.flush()
    assert "msg 3" in log._rows_html.value


async def test_render_count_does_not_grow_with_events(log):
    # Everything arrives before the timer fires once: many events, one render.
    for i in range(20_000):
        log.tap(message(i))
    assert log.renders == 0  # the tap never renders
    await rendered(log)
    # More timer ticks with nothing new render nothing.
    ticks_before = log.renders
    await asyncio.sleep(0.1)
    assert log.renders == ticks_before == 1
    # The ring buffer and the rendered rows stay bounded.
    assert len(log._rows) == log.maxlen
    assert log._rows_html.value.count("<tr") == log.visible


async def test_widget_callbacks_run_on_the_loop_thread(log):
    log.tap(message(1))
    log.flush()

    def click_and_choose():
        log._pause._click_handlers(log._pause)  # what a button click runs
        log._type.value = "message"

    # Block the loop thread while another thread fires the callbacks: had they
    # run on that thread, the state would have changed by the time it ends.
    worker = threading.Thread(target=click_and_choose)
    worker.start()
    worker.join()
    assert log.paused is False and log.type_filter is None
    await asyncio.sleep(0)  # the loop runs the handed-over callbacks
    await asyncio.sleep(0)
    assert log.paused is True and log.type_filter == "message"


async def test_text_fallback_without_widgets():
    log = LiveLog(widgets=False, loop=asyncio.get_running_loop())
    try:
        assert log.widget is None
        log.set_names(users={"U1": "alice"}, channels={"C1": "general"})
        for i in range(30):
            log.tap(message(i, text=f"line {i} <b>"))
        text = log.text(5)
        lines = text.splitlines()
        assert len(lines) == 6 and lines[0].startswith("state: no client")
        assert "line 29 <b>" in lines[1] and "#general" in lines[1] and "alice" in lines[1]
        assert "line 25" in lines[5]
        assert str(log) == log.text()
    finally:
        log.close()


async def test_handler_output_rows(log):
    log.add_output("greeter", "stdout", "said hi\n")
    log.flush()
    assert '<tr class="out">' in log._rows_html.value and "said hi" in log._rows_html.value


async def test_with_a_real_client_status_names_and_no_token():
    from rtm_notebook.seed import RTMClient
    from rtm_notebook.sim import SimWorkspace

    with SimWorkspace(rate=0) as sim:
        client = RTMClient(token=sim.token, base_url=sim.base_url)
        log = LiveLog(client, widgets=True, interval=0.01)
        client.start()
        try:
            async with asyncio.timeout(15):  # hang guard
                await client.connect()
                while not client.channel_names:
                    await asyncio.sleep(0.01)
                sim.burst(3000)
                while client.counts.total() < 3000:
                    await asyncio.sleep(0.01)
            await rendered(log)
            log.flush()
            status = log._status.value
            assert "state: connected" in status and "team: " + sim.team["name"] in status and "connection #1" in status
            assert "handler errors: 0" in status and "message " in status
            html = log._rows_html.value
            assert html.count("<tr") == log.visible
            assert any(f"#{name}</td>" in html for name in client.channel_names.values())
            everything = html + status + repr(log) + log.text(50) + str(log._channel.options) + str(log._type.options)
            assert sim.token not in everything and "xoxb-sim" not in everything
        finally:
            await client.async_stop()
            log.close()
        assert "state: stopped" in log._status.value


async def test_displaying_the_client_shows_its_live_log(capsys):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import display

    from rtm_notebook.seed import RTMClient
    from rtm_notebook.sim import SimWorkspace

    InteractiveShell.instance()  # display() as in IPython; no kernel, so the log is text
    with SimWorkspace(rate=0) as sim:
        client = RTMClient(token=sim.token, base_url=sim.base_url)
        try:
            async with asyncio.timeout(15):  # hang guard
                await client.connect()
            capsys.readouterr()
            display(client)
            out = capsys.readouterr().out
            assert out.startswith("state: connected") and "hello" in out
            assert "<RTMClient" not in out and sim.token not in out
            assert repr(client).startswith("<RTMClient")  # plain repr is unchanged
        finally:
            await client.async_stop()


async def test_reaction_rows_show_the_channel_of_their_item(log):
    log.set_names(users={"U1": "alice"}, channels={"C1": "general", "C2": "random"})
    log.tap({"type": "reaction_added", "user": "U1", "reaction": "tada",
             "item": {"type": "message", "channel": "C1", "ts": "1700000000.000001"}})
    log.tap(message(2, channel="C2"))
    lines = log.text(2).splitlines()
    assert "#random" in lines[1] and "#general" in lines[2] and ":tada:" in lines[2]
    # The channel filter sees it too (the same rule as EventFrame's channel column).
    log.set_filter(channel="C1")
    await rendered(log)
    assert ":tada:" in log._rows_html.value and "msg 2" not in log._rows_html.value
    assert ("#general", "C1") in log._channel.options
