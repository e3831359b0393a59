"""`rtm-notebook demo` end to end: a real subprocess, the simulated workspace, the seed's bot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rtm_notebook.events import EventFrame

CLI = [sys.executable, "-m", "rtm_notebook.cli"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("SLACK_BOT_TOKEN", "SLACK_API_TOKEN"):
        env.pop(var, None)
    return env


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "demo", *args], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=90)


def _row(output: str, label: str) -> float:
    m = re.search(rf"^{re.escape(label)}\s+([\d.]+)\s*$", output, re.M)
    assert m, f"no {label!r} row in the summary:\n{output[-2000:]}"
    return float(m.group(1))


def test_demo_runs_the_hello_bot_and_records_events(tmp_path):
    record = tmp_path / "events.jsonl"
    proc = _demo(tmp_path, "--seconds", "3", "--rate", "30", "--seed", "1", "--record-to", str(record))
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr + out[-2000:]

    # Streamed: event lines and plain (non-TTY) summary lines, no terminal control codes.
    assert re.search(r"^\d\d:\d\d:\d\d  message\s+#\w+", out, re.M), out[:2000]
    assert re.search(r"^-- +[\d.]+s  \d+ events \([\d.]+/s\)", out, re.M), out[:2000]
    assert "\x1b" not in out and "\r" not in out

    # The summary table.
    assert "Summary: done after" in out
    received = _row(out, "events received")
    assert received > 0
    assert _row(out, "  message") > 0
    assert _row(out, '"Hello" messages seen') > 0
    replies = _row(out, "replies sent")
    assert replies > 0
    assert _row(out, "handler errors") == 0
    # The seed's bot answers in a thread, and its answers come back over the socket.
    assert re.search(r"^\d\d:\d\d:\d\d  message\s+#\w+\s+rtmbot\s+Hi <@[UW][A-Z0-9]+>!$", out, re.M)

    # Where the events went, and that the file loads back.
    m = re.search(r"^Recorded (\d+) events of this run to (.+?) \(", out, re.M)
    assert m and Path(m.group(2)) == record
    frame = EventFrame.read(record)
    assert len(frame) == int(m.group(1)) >= received
    df = frame.to_pandas()
    hi = df[(df["type"] == "message") & df["text"].str.startswith("Hi <@", na=False)]
    assert len(hi) >= replies
    assert (hi["thread_ts"].notna()).all()
    # No token on screen or on disk.
    assert "xoxb-" not in out and "xoxb-" not in proc.stderr
    assert "xoxb-" not in record.read_text()


def test_demo_appends_to_an_existing_recording(tmp_path):
    record = tmp_path / "events.jsonl"
    first = _demo(tmp_path, "--seconds", "1", "--record-to", str(record))
    assert first.returncode == 0, first.stderr
    before = len(EventFrame.read(record))
    second = _demo(tmp_path, "--seconds", "1", "--record-to", str(record))
    assert second.returncode == 0, second.stderr
    n = int(re.search(r"^Recorded (\d+) events of this run", second.stdout, re.M).group(1))
    after = EventFrame.read(record).to_pandas()
    assert len(after) == before + n
    assert after["seq"].is_unique


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token-env", "RTM_NOTEBOOK_TEST_UNSET_VAR"], "RTM_NOTEBOOK_TEST_UNSET_VAR is not set"),
        (["--seconds", "0"], "--seconds must be more than 0"),
        (["--rate", "-1"], "--rate must be 0 or more"),
    ],
)
def test_demo_bad_options_say_what_to_do(tmp_path, args, message):
    proc = _demo(tmp_path, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not list(tmp_path.iterdir()), "a refused demo must not create files"
