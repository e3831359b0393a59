"""`rtm-notebook sim`: serves in the foreground, prints base URL, token and app token, stops on Ctrl-C."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys

import httpx


@contextlib.contextmanager
def sim_cli(*args: str):
    """Run ``rtm-notebook sim ARGS`` and yield it with its banner lines (up to the
    Ctrl-C hint); the process is killed if the test leaves it running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtm_notebook.cli", "sim", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = []
        while not any("Ctrl-C" in line for line in lines):
            line = proc.stdout.readline()
            assert line, f"sim exited early: {proc.stderr.read()}"
            lines.append(line)
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_sim_serves_until_interrupted():
    with sim_cli("--rate", "5", "--seed", "2") as (proc, lines):
        text = "".join(lines)
        base_url = re.search(r"base URL: (http://127\.0\.0\.1:\d+/api/)", text).group(1)
        token = re.search(r"token:\s+(xoxb-sim-\S+)", text).group(1)
        body = httpx.post(base_url + "auth.test", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        assert body["ok"] is True and body["team"] == "Sim Workspace 2"
        app_token = re.search(r"app token \(Socket Mode\):\s+(xapp-\S+)", text).group(1)
        body = httpx.post(base_url + "apps.connections.open", headers={"Authorization": f"Bearer {app_token}"},
                          timeout=10).json()
        assert body["ok"] is True and "/link/?ticket=" in body["url"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0


def test_cli_sim_warns_when_not_loopback():
    with sim_cli("--host", "0.0.0.0") as (proc, lines):
        assert any("warning: bound to 0.0.0.0" in line for line in lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
