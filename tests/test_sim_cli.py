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


def test_cli_sim_export_writes_a_slack_export_and_exits(tmp_path):
    from rtm_notebook.events import EventFrame

    out = subprocess.run([sys.executable, "-m", "rtm_notebook.cli", "sim", "--export", str(tmp_path / "x.zip")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "as a Slack export" in out.stdout
    assert len(EventFrame.from_slack_export(tmp_path / "x.zip")) > 100
    bad = subprocess.run([sys.executable, "-m", "rtm_notebook.cli", "sim", "--export", str(tmp_path / "no" / "x.zip")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_sim_replay_serves_a_recording_over_rtm(tmp_path):
    import asyncio

    from rtm_notebook import RTMClient
    from rtm_notebook.events import EventFrame

    path = tmp_path / "rec.jsonl"
    frame = EventFrame(record_to=path)
    for i in range(20):
        frame.append({"type": "message", "channel": "C1", "user": "U1", "text": f"played {i}", "ts": f"{1e9 + i}"})
    frame.close()
    with sim_cli("--replay", str(path), "--speed", "50") as (proc, lines):
        text = "".join(lines)
        assert "replaying 20 recorded events" in text
        base_url = re.search(r"base URL: (http://127\.0\.0\.1:\d+/api/)", text).group(1)
        token = re.search(r"token:\s+(xoxb-sim-\S+)", text).group(1)

        async def listen():
            rtm = RTMClient(token=token, base_url=base_url)
            seen = []
            rtm.on("message")(lambda c, e: seen.append(e["text"]))
            await rtm.connect()
            async with asyncio.timeout(15):
                while len({t for t in seen if t.startswith("played ")}) < 20:
                    await asyncio.sleep(0.05)
            await rtm.async_stop()
            return seen

        seen = asyncio.run(listen())
        assert {f"played {i}" for i in range(20)} <= set(seen)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
