"""Browser reproduction for issue 14 item 15 (not a test: pytest does not collect it).

JupyterLab + headless chromium (Playwright, as tests/test_browser.py). A
Dropdown is changed twice while a cell waits, then once after the cell has
ended; the script prints what the kernel received and which widget updates
the browser really sent over the kernel's websocket.

    .venv/bin/python tests/repro_widget_throttle_browser.py plain async    # plain ipywidgets.Dropdown
    .venv/bin/python tests/repro_widget_throttle_browser.py plain sync     # the cell waits with time.sleep
    .venv/bin/python tests/repro_widget_throttle_browser.py livelog async  # the live log's type filter and search box

Measured with JupyterLab 4.6.6, ipywidgets 8.1.9, jupyterlab_widgets 3.0.17:
with ipykernel 7.4.0, "plain async" gets only the first change (the browser
sends one update, then none); "plain sync" gets all three; with ipykernel
7.3.0 "plain async" and "livelog async" get every change. See
tests/repro_ipykernel_comm_idle.py for why.
"""
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_browser as tb  # noqa: E402  (its JupyterLab fixture and chromium flags)
from playwright.sync_api import sync_playwright  # noqa: E402

what = sys.argv[1] if len(sys.argv) > 1 else "plain"
mode = sys.argv[2] if len(sys.argv) > 2 else "async"
wait = "await asyncio.sleep(15)" if mode == "async" else "time.sleep(15)"
if what == "plain":
    cells = ["import asyncio, time\nimport ipywidgets as w\nseen = []\n"
             "d = w.Dropdown(options=['a', 'b', 'c', 'd'], value='a')\n"
             "d.observe(lambda change: seen.append(change['new']), names='value')\nd",
             wait, "print('kernel received:', seen)"]
    during, after, scope = [("select", "b"), ("select", "c")], [("select", "d")], ""
else:
    cells = ["import asyncio, time\n%load_ext rtm_notebook\n%rtm_connect --demo --rate 20", wait,
             "print('kernel has: type filter', repr(rtm.log.type_filter), 'search', repr(rtm.log.search))\n%rtm_stop"]
    during, after, scope = [("select", "message"), ("text", "Hello")], [("select", "user_typing"), ("text", "ok")], ".rtm-live-log "

nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
                 "source": s} for i, s in enumerate(cells)],
      "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}},
      "nbformat": 4, "nbformat_minor": 5}
tmp = Path(tempfile.mkdtemp(prefix="rtm-widget-repro-"))
(tmp / "root").mkdir()
(tmp / "state").mkdir()
(tmp / "root" / "w.ipynb").write_text(json.dumps(nb))


def run_cell(page, i):
    page.locator(".jp-Notebook .jp-CodeCell").nth(i).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


try:
    with tb.jupyterlab(tmp / "root", tmp / "state") as (base, token, _log), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=tb.CHROMIUM, args=tb.CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(60_000)
        sent = []

        def on_ws(ws):
            def on_sent(payload):
                text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
                if '"comm_msg"' in text and '"update"' in text:
                    m = re.search(r'"state":\s*(\{[^}]*\})', text)
                    sent.append(m.group(1) if m else "?")
            ws.on("framesent", on_sent)

        page.on("websocket", on_ws)
        page.goto(f"{base}/lab/tree/w.ipynb?reset&token={token}", timeout=90_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
        page.wait_for_selector(".jp-StatusBar-Widget >> text=/\\| Idle/", timeout=90_000)
        page.wait_for_timeout(1000)
        run_cell(page, 0)
        select = page.locator(scope + ".widget-dropdown select").first
        box = page.locator(scope + "input[type=text]").first
        select.wait_for()
        if what == "livelog":
            page.wait_for_function("() => document.querySelector('.rtm-live-log select').options.length > 4")
        page.wait_for_timeout(1000)

        def act(steps):
            for kind, value in steps:
                select.select_option(value) if kind == "select" else box.fill(value)
                page.wait_for_timeout(1500)

        run_cell(page, 1)
        page.wait_for_timeout(2000)
        act(during)
        page.wait_for_function("() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')][1]"
                               ".textContent.trim() === '[2]:'")
        page.wait_for_timeout(1000)
        act(after)
        run_cell(page, 2)
        page.wait_for_function("() => [...document.querySelectorAll('.jp-CodeCell')][2].innerText.includes('kernel')")
        out = page.locator(".jp-Notebook .jp-CodeCell").nth(2).locator(".jp-OutputArea").inner_text().splitlines()[0]
        print(f"{what} {mode} ({wait}): during the cell {during}, after it {after}")
        print(f"  {out}")
        print(f"  widget updates the browser sent: {sent}")
        browser.close()
finally:
    shutil.rmtree(tmp, ignore_errors=True)
