"""The seed example in a real Jupyter kernel (ipykernel, driven by nbclient).

The seed's own example, unchanged but for the import and the base_url, is a
cell of its own: ``start()`` must return at once on the kernel's running loop
(with slackclient it raised ``RuntimeError: This event loop is already
running``), and the bot must answer "Hello" while later cells run.
"""

from __future__ import annotations

import json

import nbformat
from nbclient import NotebookClient

SETUP = """\
import os
from rtm_notebook.sim import SimWorkspace
sim = SimWorkspace(seed=21).start()
os.environ["SLACK_API_TOKEN"] = sim.token
BASE_URL = sim.base_url"""

SEED_CELL = """\
import os
from rtm_notebook import RTMClient

@RTMClient.run_on(event="message")
def say_hello(**payload):
    data = payload['data']; web_client = payload['web_client']
    if 'text' in data and 'Hello' in data['text']:
        web_client.chat_postMessage(channel=data['channel'], text=f"Hi <@{data['user']}>!", thread_ts=data['ts'])
rtm_client = RTMClient(token=os.environ["SLACK_API_TOKEN"], connect_method='rtm.start', base_url=BASE_URL)
rtm_client.start()
print("start returned while", rtm_client.state)"""

WAIT_CELL = """\
import asyncio
await rtm_client.connect()
human = next(u["id"] for u in sim.users if not u["is_bot"])
original = sim.post_message(human, "general", "Hello from a notebook")
async with asyncio.timeout(30):  # hang guard
    while not any(p.get("thread_ts") == original["ts"] for p in sim.posted):
        await asyncio.sleep(0.05)
print("answered")"""

STOP_CELL = """\
import json, threading
await rtm_client.stop()
ev = rtm_client.events
print(json.dumps({
    "state": rtm_client.state,
    "threads": sorted(t.name for t in threading.enumerate() if t.name.startswith("rtm-handler")),
    "pending": sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("rtm-")),
    "answer": [p["text"] for p in sim.posted if p.get("thread_ts") == original["ts"]],
    "expected": f"Hi <@{human}>!",
    "hello_rows": int(((ev["type"] == "message") & (ev["text"] == "Hello from a notebook")).sum()),
    "token_in_repr": sim.token in repr(rtm_client),
}))
sim.stop()"""


def stream(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_seed_example_in_a_jupyter_kernel(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (SETUP, SEED_CELL, WAIT_CELL, STOP_CELL)])
    NotebookClient(nb, timeout=90, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    cells = nb.cells
    # start() returned on the kernel's running loop instead of raising or blocking
    assert "start returned while connecting" in stream(cells[1])
    assert not any(o.output_type == "error" for c in cells for o in c.outputs)
    assert "answered" in stream(cells[2])
    result = json.loads(stream(cells[3]))
    assert result["state"] == "stopped"
    assert result["threads"] == [] and result["pending"] == []
    assert result["answer"] == [result["expected"]]
    assert result["hello_rows"] == 1
    assert result["token_in_repr"] is False
