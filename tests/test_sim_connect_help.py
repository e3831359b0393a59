"""`rtm-notebook sim` prints the exact lines that connect a notebook (and Python) to it, and they work.

Issue 14 item 13: it printed the URL and the token but not how to use them.
The lines are run here as printed: the notebook cell in a real IPython
shell, the Python lines with exec.
"""

from __future__ import annotations

import asyncio
import re
import signal

from IPython.core.interactiveshell import InteractiveShell
from test_sim_cli import sim_cli


def _block(lines: list[str], heading: str) -> list[str]:
    """The indented lines under ``heading`` in the banner."""
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        out.append(line[2:].rstrip("\n"))
    return out


def test_printed_notebook_lines_connect_rtm_connect_to_the_sim():
    with sim_cli("--rate", "20", "--seed", "3") as (proc, lines):
        cell = _block(lines, "Connect a notebook")
        assert cell[0] == "%load_ext rtm_notebook"
        assert re.fullmatch(r"%env (\w+)=xoxb-sim-\w+", cell[1])
        assert re.fullmatch(r"%rtm_connect --token-env \w+ --base-url http://127\.0\.0\.1:\d+/api/", cell[2])
        shell = InteractiveShell.instance()
        try:
            result = shell.run_cell("\n".join(cell))
            assert result.success, result.error_in_exec
            rtm = shell.user_ns["rtm"]
            assert rtm.state == "connected" and rtm.team["name"] == "Sim Workspace 3"
        finally:
            shell.run_cell("%rtm_stop")
            shell.run_line_magic("unload_ext", "rtm_notebook")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0


def test_printed_python_lines_connect_a_client_to_the_sim():
    with sim_cli("--rate", "20", "--seed", "3") as (proc, lines):
        code = _block(lines, "or from Python")
        assert code[0] == "from rtm_notebook import RTMClient"
        assert code[1].startswith('rtm = RTMClient(token="xoxb-sim-') and 'base_url="http://127.0.0.1:' in code[1]
        scope: dict = {}
        exec("\n".join(code[:2]), scope)
        rtm = scope["rtm"]

        async def connect():
            await rtm.connect()
            try:
                return rtm.team["name"]
            finally:
                await rtm.async_stop()

        assert asyncio.run(connect()) == "Sim Workspace 3"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
