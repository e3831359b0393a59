"""Every notebook in notebooks/ runs top to bottom in demo mode, and is committed without outputs.

Each runs in a fresh python3 kernel of this environment (jupyter_client
starts the ``python3`` kernelspec with this interpreter), with no Slack
token in the environment, so the notebooks fall back to the simulated
workspace exactly as they do on Binder.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["01-quickstart", "02-prototyping-handlers", "03-exploring-traffic", "04-your-workspace",
            "05-socket-mode", "06-history-and-replay"]


def test_the_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear outputs before committing"
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    if any("%rtm_connect" in source for source in code):
        assert code[-1].strip() == "%rtm_stop", f"{path.name} must end with %rtm_stop"
    else:  # a notebook on the Python API stops its client and its simulated workspace itself
        last = code[-1]
        assert "await client.async_stop()" in last and "sim.stop()" in last, \
            f"{path.name} must end by stopping its client and workspace (await client.async_stop(); sim.stop())"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_runs_top_to_bottom(path, tmp_path, monkeypatch):
    for var in ("SLACK_BOT_TOKEN", "SLACK_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    nb = nbformat.read(path, as_version=4)
    # After the notebook's own %rtm_stop: nothing of the client may still run.
    nb.cells.append(nbformat.v4.new_code_cell(
        "import asyncio, threading\n"
        "await asyncio.sleep(0.5)\n"
        # The toolkit names every task and thread it makes "rtm-..." (by name,
        # not repr: a repr holds the coroutine's file path, which may say rtm).
        "_left = [t for t in asyncio.all_tasks() if t.get_name().startswith('rtm-')]\n"
        "assert not _left, _left\n"
        "_threads = [t.name for t in threading.enumerate() if t.name.startswith('rtm-')]\n"
        "assert not _threads, _threads\n"
        "print('clean')"
    ))
    client = NotebookClient(nb, kernel_name="python3", timeout=90, startup_timeout=60,
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{exc}")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert nb.cells[-1].outputs[-1]["text"].strip() == "clean"
