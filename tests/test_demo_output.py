"""What `rtm-notebook demo` prints: names from the first row, --seconds kept at a
high rate, and error rows that show the message before the handler.

Issue 14 items 7 and 13.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time

CLI = [sys.executable, "-m", "rtm_notebook.cli"]
ID = r"[UWCGD][A-Z0-9]{10}"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("SLACK_BOT_TOKEN", "SLACK_API_TOKEN")}


def test_rows_show_names_from_the_first_row(tmp_path):
    proc = subprocess.run([*CLI, "demo", "--seconds", "2", "--rate", "50", "--record-to", "x.jsonl"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if re.match(r"^\d\d:\d\d:\d\d  ", line)]
    assert len(rows) > 20
    # An id in the channel or user column (ids inside a message's text, <@U…> mentions, are the text).
    raw = [line for line in rows if re.match(rf"^\S+  \S+\s+(#{ID}\b|(#\S+\s+)?{ID}\b)", line)]
    assert raw == [], "\n".join(raw[:5])
    assert any(re.match(r"^\S+  open\s+rtmbot\b", line) for line in rows), rows[:5]


def test_seconds_is_kept_at_a_high_rate_with_a_slow_terminal(tmp_path):
    """A terminal (or pipe) that takes output slowly must not stretch the run."""
    proc = subprocess.Popen([*CLI, "demo", "--seconds", "2", "--rate", "10000", "--record-to", "x.jsonl"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks: list[bytes] = []

    def slow_reader() -> None:  # about 400 KB/s
        while block := proc.stdout.read1(4096):
            chunks.append(block)
            time.sleep(0.01)

    reader = threading.Thread(target=slow_reader, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=30)
    out = b"".join(chunks).decode()
    assert proc.returncode == 0, proc.stderr.read().decode()
    done = float(re.search(r"Summary: done after ([\d.]+) s", out).group(1))
    assert done < 2.6, f"--seconds 2 ran {done} s"
    assert "more events not shown" in out  # said, not hidden


def _error_event() -> dict:
    return {"type": "error", "handler": "seed:message:rtm_notebook.cli._install_seed_bot.<locals>.say_hello",
            "error": "ZeroDivisionError('division by zero')", "traceback": "Traceback…"}


def test_demo_error_row_shows_the_message_then_the_handler():
    from rtm_notebook.cli import _DemoOutput, _EventLines

    out = _DemoOutput(io.StringIO())
    line = _EventLines(out, {}, {}).format(time.time(), _error_event())
    assert line.endswith("ZeroDivisionError('division by zero')  · say_hello"), line
    assert "[seed:" not in line and len(line) <= out.width - 1


def test_demo_error_row_cuts_a_long_message_not_the_handler():
    from rtm_notebook.cli import _DemoOutput, _EventLines

    out = _DemoOutput(io.StringIO())
    event = dict(_error_event(), error="SlackApiError(\"Slack's chat.postMessage failed: " + "x" * 300 + '")')
    out.lines([_EventLines(out, {}, {}).format(time.time(), event)])
    printed = out.stream.getvalue().rstrip("\n")
    assert printed.endswith("…  · say_hello") and "chat.postMessage failed" in printed, printed


def test_live_log_error_row_shows_the_message_then_the_handler():
    from rtm_notebook.notebook.livelog import LiveLog

    log = LiveLog(widgets=False)
    log.tap(_error_event())
    log.tap({"type": "error", "handler": "greeter", "error": "KeyError('user')"})
    log.tap({"type": "output", "handler": "seed:message:mod.f.<locals>.say_hello", "stream": "stdout", "text": "hi"})
    rows = log.text().splitlines()[1:]
    assert rows[2].endswith("ZeroDivisionError('division by zero')  · say_hello"), rows[2]
    assert rows[1].endswith("KeyError('user')  · greeter"), rows[1]
    assert "[say_hello]" in rows[0] and "seed:" not in "".join(rows), rows
