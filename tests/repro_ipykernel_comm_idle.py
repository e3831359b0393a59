"""Reproduction for issue 14 item 15 (not a test: pytest does not collect it).

In JupyterLab with ipykernel 7.4.0, a live-log Dropdown or Text changed while
an *async* cell runs stops reaching the kernel, even after the cell ends;
buttons keep working. It needs no rtm_notebook: a plain ipywidgets Dropdown
does the same. The cause is in ipykernel 7.4.0, not in livelog.py:

* ``Kernel.shell_channel_thread_main`` routes a widget's ``comm_msg`` to the
  subshell of the last message that published on that comm
  (``BaseComm._reply_subshell_for``). A widget displayed or updated by cell
  code, or by a timer on the kernel's loop (the live log's renders), last
  published from the main shell, so the frontend's change goes to the main
  shell whatever subshell JupyterLab addressed it to.
* ``Kernel.shell_main``: while the main shell's lock is held (an async cell is
  awaiting), a comm message is dispatched "concurrently" with
  ``dispatch_shell(..., concurrent=True)``, and ``dispatch_shell`` then
  publishes no ``status: busy`` / ``status: idle`` for it.
* ipywidgets' frontend throttle (``_pending_msgs`` in the JupyterLab widget
  manager) sends a model's next state update only after the ``idle`` status
  of the previous one. That idle never comes, so every later change of that
  widget stays in the frontend's buffer. Button clicks are custom messages,
  which are not throttled.

Run: ``.venv/bin/python tests/repro_ipykernel_comm_idle.py``. With ipykernel
7.4.0 the first and fifth changes get no status; with 7.3.0 (e.g.
``pip install --target DIR ipykernel==7.3.0`` and ``PYTHONPATH=DIR``) every
change gets ``['busy', 'idle']``.
"""
import queue
import time

from jupyter_client.manager import start_new_kernel


def main() -> None:
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        def run(code, wait=True):
            mid = kc.execute(code)
            if wait:
                kc.get_shell_msg(timeout=30)
            return mid

        def drain(seconds):
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
        # A subshell, as JupyterLab makes one per comm target when the kernel supports subshells.
        kc.control_channel.send(kc.session.msg("create_subshell_request", {}))
        subshell = kc.control_channel.get_msg(timeout=10)["content"].get("subshell_id")
        print("ipykernel supports subshells:", subshell is not None)

        def change(index):
            """What the browser sends when a person picks option ``index``."""
            msg = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {
                "method": "update", "state": {"index": index}, "buffer_paths": []}})
            if subshell:
                msg["header"]["subshell_id"] = subshell
            kc.shell_channel.send(msg)
            return msg["header"]["msg_id"]

        def statuses(msgs, mid):
            return [m["content"]["execution_state"] for m in msgs
                    if m["msg_type"] == "status" and m["parent_header"].get("msg_id") == mid]

        def during_async_cell(index):
            run("await asyncio.sleep(3)", wait=False)
            time.sleep(0.5)
            mid = change(index)
            found = statuses(drain(4.0), mid)
            kc.get_shell_msg(timeout=10)
            return found

        print("1st change, during an async cell:", during_async_cell(1), " <- the frontend waits for 'idle'")
        mid = change(2)
        print("2nd change, kernel idle:         ", statuses(drain(1.5), mid))
        print("3rd change, during an async cell:", during_async_cell(0),
              " (its route moved to the subshell with the last echo)")
        run("w.options = ['a', 'b', 'c', 'd']")  # the kernel updates the widget, as the live log's timer does
        drain(0.5)
        print("4th change, during an async cell after a kernel-side update:", during_async_cell(3))
        run("print(seen)")
        out = [m["content"]["text"] for m in drain(1.0) if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"]
        print("values the kernel received:", "".join(out).strip())
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


if __name__ == "__main__":
    main()
