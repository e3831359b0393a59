"""A live-log Dropdown changed while an async cell runs must keep reaching the kernel.

JupyterLab's widget manager sends a widget's next change only after the
kernel's ``idle`` status for the previous one. ipykernel 7.4.0 dispatches a
comm message that arrives while an async cell holds the shell without
publishing any status, so every later change of that widget stays in the
browser (issue 14 item 15; ``tests/repro_widget_throttle_browser.py`` shows it
in JupyterLab). pyproject.toml keeps ipykernel below 7.4; this test speaks
the browser's side of the protocol to a real kernel and fails on 7.4.0.
"""

from __future__ import annotations

import queue
import time

import pytest
from jupyter_client.manager import start_new_kernel


@pytest.mark.timeout(120)
def test_a_widget_change_during_an_async_cell_gets_busy_and_idle():
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        def run(code: str, wait: bool = True) -> None:
            kc.execute(code)
            if wait:
                kc.get_shell_msg(timeout=30)

        def drain(seconds: float) -> list[dict]:
            msgs, end = [], time.time() + seconds
            while time.time() < end:
                try:
                    msgs.append(kc.get_iopub_msg(timeout=0.1))
                except queue.Empty:
                    pass
            return msgs

        run("import ipywidgets, asyncio\nseen = []\nw = ipywidgets.Dropdown(options=['a','b','c'], value='a')\n"
            "w.observe(lambda ch: seen.append(ch['new']), names='value')\ndisplay(w)")
        comm_id = [m for m in drain(1.0) if m["msg_type"] == "comm_open"][-1]["content"]["comm_id"]

        def change_during_an_async_cell(index: int) -> list[str]:
            run("await asyncio.sleep(2)", wait=False)
            time.sleep(0.5)
            msg = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {
                "method": "update", "state": {"index": index}, "buffer_paths": []}})
            kc.shell_channel.send(msg)
            mid = msg["header"]["msg_id"]
            found = [m["content"]["execution_state"] for m in drain(3.0)
                     if m["msg_type"] == "status" and m["parent_header"].get("msg_id") == mid]
            kc.get_shell_msg(timeout=10)
            return found

        assert change_during_an_async_cell(1) == ["busy", "idle"]
        run("w.options = ['a', 'b', 'c', 'd']")  # the kernel updates the widget, as the live log's timer does
        drain(0.5)
        assert change_during_an_async_cell(3) == ["busy", "idle"]
        run("print(seen)")
        out = "".join(m["content"]["text"] for m in drain(1.0)
                      if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")
        # both changes reached the kernel (setting the options resets the value to 'a' in between)
        assert out.strip() == "['b', 'a', 'd']"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
