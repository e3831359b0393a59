"""A real browser sees the live log: JupyterLab + headless Chromium (Playwright).

The test starts JupyterLab on loopback with a copy of
``notebooks/01-quickstart.ipynb``, runs all its cells from the Run menu the
way a person would, and checks what is on screen: the live log widget is
rendered, it shows event rows, and the number of events it reports grows
while the notebook runs. It saves ``docs/live-log.png`` (the README's
screenshot) while the log is live.

Every wait is a hang guard with a generous timeout, never a speed assertion.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01-quickstart.ipynb"
SCREENSHOT = ROOT / "docs" / "live-log.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# What the LiveLog widget puts in the page (rtm_notebook/notebook/livelog.py):
# a VBox of the status bar (first HTML widget), the controls and the rows table.
LOG = ".rtm-live-log"
LOG_ROW = ".rtm-live-log .rtm-log tr"
LOG_STATUS = ".rtm-live-log .widget-html"

SERVER_START_TIMEOUT = 90
LAB_LOAD_TIMEOUT_MS = 90_000
FIRST_ROWS_TIMEOUT_MS = 90_000
GROWTH_TIMEOUT = 30
RUN_ALL_TIMEOUT = 120
SCREENSHOT_EVENTS = 60
SCREENSHOT_WAIT = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_log_tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-40:])
    except OSError:
        return "(no server log)"


@contextmanager
def jupyterlab(root_dir: Path, state_dir: Path):
    """Run JupyterLab on 127.0.0.1 with private config/state; yield its base URL and token."""
    port, token = _free_port(), secrets.token_hex(16)
    settings = state_dir / "settings"
    # No news or update checks: they pop a notification over the notebook and reach the network.
    notif = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notif.parent.mkdir(parents=True)
    notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # Start the notebook's own kernel without the "Select Kernel" dialog.
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"autoStartDefaultKernel": True}))
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(state_dir / "config"),
        JUPYTER_RUNTIME_DIR=str(state_dir / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(state_dir / "workspaces"),
    )
    # A notebook that finds a token in the environment connects to the real workspace.
    for var in ("SLACK_BOT_TOKEN", "SLACK_API_TOKEN"):
        env.pop(var, None)
    log_path = state_dir / "jupyterlab.log"
    cmd = [
        str(Path(sys.executable).parent / "jupyter-lab"),
        "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root_dir)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{_server_log_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {SERVER_START_TIMEOUT} s:\n{_server_log_tail(log_path)}")
            time.sleep(0.25)
        yield base, token, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _event_count(page) -> int:
    """Events the live log has counted so far, read from its status bar.

    The rows are a bounded view (the newest 100), so growth is read from the
    counts by type ("message 42, user_typing 7, ..."): their sum only grows.
    """
    text = page.locator(LOG_STATUS).first.inner_text(timeout=10_000)
    for part in text.split(" · "):
        pairs = re.findall(r"(\S+) (\d+)(?:, |$)", part.strip())
        if pairs and re.fullmatch(r"\S+ \d+(, \S+ \d+)*", part.strip()):
            return sum(int(n) for _, n in pairs)
    return 0


def test_quickstart_live_log_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: apt-get install chromium (make test does it as root)"
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    state = tmp_path / "state"
    state.mkdir()

    with jupyterlab(root, state) as (base, token, log_path), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 950})
        try:
            page.set_default_timeout(30_000)
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?reset&token={token}", timeout=LAB_LOAD_TIMEOUT_MS)
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=LAB_LOAD_TIMEOUT_MS)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=LAB_LOAD_TIMEOUT_MS)
            page.wait_for_selector(".jp-StatusBar-Widget >> text=/\\| Idle/", timeout=LAB_LOAD_TIMEOUT_MS)

            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

            page.wait_for_selector(LOG_ROW, timeout=FIRST_ROWS_TIMEOUT_MS)
            log = page.locator(LOG).first
            assert log.is_visible()
            rows = page.locator(LOG_ROW).count()
            assert rows > 0
            deadline = time.monotonic() + GROWTH_TIMEOUT
            first = _event_count(page)
            while first == 0 and time.monotonic() < deadline:
                page.wait_for_timeout(250)
                first = _event_count(page)
            assert first > 0, "the live log shows rows but its status bar counts no events"

            # The log keeps growing while later cells wait for traffic.
            deadline = time.monotonic() + GROWTH_TIMEOUT
            later = first
            while later <= first and time.monotonic() < deadline:
                page.wait_for_timeout(250)
                later = _event_count(page)
            assert later > first, f"the live log stayed at {first} events for {GROWTH_TIMEOUT} s"
            assert page.locator(LOG_ROW).count() >= rows

            # A fuller log makes a better screenshot; the notebook may end first, which is fine.
            deadline = time.monotonic() + SCREENSHOT_WAIT
            while _event_count(page) < SCREENSHOT_EVENTS and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            log.evaluate("node => node.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))

            # Run All finishes: every code cell has an execution count and none shows an error.
            deadline = time.monotonic() + RUN_ALL_TIMEOUT
            while True:
                prompts = [t.strip() for t in page.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()]
                if prompts and all(re.fullmatch(r"\[\d+\]:", t) for t in prompts):
                    break
                assert time.monotonic() < deadline, f"Run All did not finish within {RUN_ALL_TIMEOUT} s: {prompts}"
                page.wait_for_timeout(250)
            stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
            assert not [t for t in stderr if "Error" in t or "Traceback" in t], stderr
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            print(f"screenshot of the failure: {tmp_path / 'failure.png'}")
            print(_server_log_tail(log_path))
            raise
        finally:
            browser.close()
