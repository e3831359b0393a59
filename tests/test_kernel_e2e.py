"""End to end in a real Jupyter kernel (ipykernel, driven by nbclient).

The notebook loads the extension, connects to the simulated workspace with
``%rtm_connect --demo``, registers a ``%%rtm_on message --match Hello``
handler that replies with ``say`` (and one that fails), then, in a later
cell, posts "Hello" as a person and waits on the kernel's loop for the reply.
The test checks ``rtm.events``, what the workspace received over the socket,
and that handler output and tracebacks landed under the registering cells,
not in the cell that was running.
"""

from __future__ import annotations

import json
import os
import re

import nbformat
from nbclient import NotebookClient

CELLS = [
    "%load_ext rtm_notebook",
    "%rtm_connect --demo --rate 5",
    '%%rtm_on message --match "^Hello from" --name greeter\nprint("greeting", event["text"])\nsay(f"Hi <@{event[\'user\']}>!")',
    "%%rtm_on message --match \"^Hello from\" --name broken\nraise ValueError('broken on purpose')",
    """\
import asyncio, json
from rtm_notebook.notebook import magics
sim = magics.session().sim
await rtm.connect()
human = next(u["id"] for u in sim.users if not u["is_bot"])
channel = next(c["id"] for c in sim.channels if c["is_member"])
sim.post_message(human, channel, "Hello from the e2e test")
reply = f"Hi <@{human}>!"
async with asyncio.timeout(60):  # hang guard
    while not any(m.get("text") == reply and m.get("channel") == channel for m in sim.received):
        await asyncio.sleep(0.05)
    while not magics.session().sinks["greeter"].output.outputs or not magics.session().sinks["broken"].output.outputs:
        await asyncio.sleep(0.05)
print("the waiting cell is done")""",
    """\
ev = rtm.events
print(json.dumps({
    "hello_rows": int(((ev["type"] == "message") & (ev["direction"] == "in") & (ev["text"] == "Hello from the e2e test")).sum()),
    "out_texts": list(ev.loc[ev["direction"] == "out", "text"]),
    "reply": reply,
    "channel": channel,
    "socket_messages": [m for m in sim.received if m.get("type") == "message"],
    "posted_by_bot": [p["text"] for p in sim.posted if p.get("user") == sim.bot_user_id],
    "columns": list(ev.columns),
    "greeter_area": list(magics.session().sinks["greeter"].output.outputs),
    "broken_area": list(magics.session().sinks["broken"].output.outputs),
    "log_errors": rtm.log.status()["handler_errors"],
    "log_html_has_error": "broken on purpose" in rtm.log._rows_html.value,
    "state": rtm.state,
}))""",
    "%rtm_stop\nawait asyncio.gather(*magics._pending)\nprint(rtm.state, sim.base_url == '')",
]


def texts(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_notebook_connects_handles_and_replies(tmp_path):
    env_tokens = [v for v in ("SLACK_BOT_TOKEN", "SLACK_API_TOKEN") if v in os.environ]
    assert not env_tokens, f"unset {env_tokens} to run this test (it uses the simulated workspace)"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    cells = nb.cells

    # %rtm_connect says it uses the simulated workspace and shows the live log widget.
    assert "--demo: connecting to the simulated workspace" in texts(cells[1])
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cells[1].outputs)
    # Each %%rtm_on cell shows its handler's output area (an Output widget).
    for cell in cells[2:4]:
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cell.outputs)

    result = json.loads(texts(cells[5]))
    assert result["hello_rows"] == 1
    assert result["reply"] in result["out_texts"]
    assert {"type": "message", "channel": result["channel"], "text": result["reply"]}.items() <= next(
        m for m in result["socket_messages"] if m["text"] == result["reply"]
    ).items()
    assert result["reply"] in result["posted_by_bot"]
    assert result["columns"][:3] == ["received_at", "type", "subtype"]
    assert result["state"] == "connected"

    # Handler output went to the registering cells' areas...
    greeter = "".join(o["text"] for o in result["greeter_area"] if o["name"] == "stdout")
    assert "greeting Hello from the e2e test\n" in greeter
    broken = "".join(o["text"] for o in result["broken_area"] if o["name"] == "stderr")
    assert "Handler 'broken' failed" in broken and "ValueError: broken on purpose" in broken
    assert result["log_errors"] >= 1 and result["log_html_has_error"]
    # ...and never into the cell that was running meanwhile.
    assert texts(cells[4]) == "the waiting cell is done\n"
    shown = [texts(c) for i, c in enumerate(cells) if i != 5]  # cell 5 prints the areas on purpose
    assert all("greeting" not in t and "broken on purpose" not in t for t in shown)

    assert texts(cells[6]).strip().endswith("stopped True")
    # No token anywhere in what the notebook shows.
    assert not re.search(r"xox[bp]-sim-[0-9a-f]{6}", nbformat.writes(nb))
