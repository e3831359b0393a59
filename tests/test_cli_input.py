"""`rtm-notebook` answers bad input and failed connections with one line that says what to do.

Issue 14 items 6 and 13: tracebacks for bad options, `could not connect: `
with nothing after the colon, no `--version`, and `rtm-notebook sim` not
saying how to connect a notebook to it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_sim_cli import sim_cli

CLI = [sys.executable, "-m", "rtm_notebook.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SLACK_BOT_TOKEN", "SLACK_API_TOKEN")}
    env.update(extra)
    return env


def _run(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_one_line_refusal(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["demo", "--record-to", "/nonexistent/dir/x.jsonl"], ["--record-to", "/nonexistent/dir", "does not exist"]),
        (["demo", "--record-to", "."], ["--record-to", "is a directory"]),
        (["demo", "--seconds", "nan"], ["--seconds must be more than 0", "e.g. --seconds 20"]),
        (["demo", "--rate", "nan"], ["--rate must be 0 or more", "e.g. --rate 20"]),
        (["demo", "--base-url", "http://127.0.0.1:9/api/"], ["--base-url needs a token", "--token-env VAR"]),
        (["sim", "--rate", "-1"], ["--rate must be 0 or more", "e.g. --rate 5"]),
        (["sim", "--rate", "nan"], ["--rate must be 0 or more"]),
        (["sim", "--port", "99999"], ["--port must be from 0 to 65535", "e.g. --port 8080"]),
        (["sim", "--port", "-1"], ["--port must be from 0 to 65535"]),
        (["sim", "--host", "256.1.1.1"], ["cannot resolve --host 256.1.1.1", "--host 127.0.0.1"]),
    ],
)
def test_bad_options_get_one_line_and_status_2(tmp_path, args, needles):
    proc = _run(tmp_path, *args, "--seconds", "1") if args[0] == "demo" and "--seconds" not in args else _run(tmp_path, *args)
    _assert_one_line_refusal(proc, *needles)
    assert not list(tmp_path.iterdir()), "a refused command must not create files"


def test_demo_base_url_must_be_http(tmp_path):
    proc = _run(tmp_path, "demo", "--token-env", "HOME", "--base-url", "ftp://example.com/api/")
    _assert_one_line_refusal(proc, "--base-url must be an http(s) URL")


def test_sim_on_a_port_in_use_says_so(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _run(tmp_path, "sim", "--port", str(port))
    _assert_one_line_refusal(proc, f"port {port}", "address already in use", "pick another --port")


def test_demo_says_why_it_could_not_connect_when_nothing_listens(tmp_path):
    port = _free_port()
    proc = _run(tmp_path, "demo", "--token-env", "RTM_TEST_TOKEN", "--base-url", f"http://127.0.0.1:{port}/api/",
                "--seconds", "5", "--record-to", "x.jsonl", env=_env(RTM_TEST_TOKEN="xoxb-test"), timeout=30)
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"rtm-notebook demo: could not connect to http://127.0.0.1:{port}/api/: "), line
    reason = line.split(f"{port}/api/: ", 1)[1]
    assert "rtm.connect" in reason and "ConnectError" in reason, reason
    assert "xoxb-test" not in proc.stdout + proc.stderr


def test_demo_says_why_it_could_not_connect_with_a_bad_token(tmp_path):
    with sim_cli("--rate", "0") as (sim, lines):
        base_url = re.search(r"base URL: (\S+)", "".join(lines)).group(1)
        proc = _run(tmp_path, "demo", "--token-env", "RTM_TEST_TOKEN", "--base-url", base_url, "--seconds", "5",
                    "--record-to", "x.jsonl", env=_env(RTM_TEST_TOKEN="xoxb-wrong-token"), timeout=30)
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"rtm-notebook demo: could not connect to {base_url}: "), line
    assert "invalid_auth" in line and "bot token" in line, line
    assert "xoxb-wrong-token" not in proc.stdout + proc.stderr


def test_demo_runs_on_the_workspace_rtm_notebook_sim_serves(tmp_path):
    with sim_cli("--rate", "20") as (sim, lines):
        text = "".join(lines)
        demo_line = next(line.strip() for line in lines if "rtm-notebook demo" in line)
        env_part, _, command = demo_line.partition(" rtm-notebook ")
        var, _, token = env_part.partition("=")
        proc = _run(tmp_path, *command.split(), "--seconds", "2", "--record-to", "x.jsonl", env=_env(**{var: token}))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"base URL: (\S+)", text).group(1) in proc.stdout
    assert "Summary: done after" in proc.stdout


def test_version(tmp_path):
    proc = _run(tmp_path, "--version")
    assert proc.returncode == 0
    assert re.fullmatch(r"rtm-notebook \d+\.\d+\.\d+\S*\n", proc.stdout), proc.stdout
