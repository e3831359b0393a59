"""Case 5, security: tokens never leak, the workspace stays on loopback and
refuses tokens it did not issue, and event text cannot inject HTML.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import traceback

import httpx
import psutil
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from rtm_notebook import RTMClient
from rtm_notebook.errors import RTMConnectError, SlackApiError
from rtm_notebook.notebook.livelog import LiveLog
from rtm_notebook.sim import SimWorkspace
from rtm_notebook.web import AsyncWebClient, WebClient

from rel_support import GUARD, general, human, until
from rel_support import reachable as _reachable


def test_no_token_anywhere(sim, shell, monkeypatch, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)  # the root logger: ours, httpx, websockets, aiohttp
    people = [u["id"] for u in sim.users if not u.get("is_bot") and u["id"] != sim.bot_user_id]
    ctor_token, env_token, web_token = sim.token, sim.user_token(people[0]), sim.user_token(people[1])
    bad_token = "xoxb-" + secrets.token_hex(20)  # never issued: its errors must not echo it
    tokens = [ctor_token, env_token, web_token, bad_token]
    record = tmp_path / "events.jsonl"
    found: list = []

    # 1. the environment variable, through %rtm_connect (a background loop: no loop runs here)
    monkeypatch.setenv("SLACK_BOT_TOKEN", env_token)
    result = shell.run_cell(f"%rtm_connect --base-url {sim.base_url}", silent=True)
    assert result.error_in_exec is None, result.error_in_exec
    magic_client = shell.user_ns["rtm"]
    from rtm_notebook.notebook.magics import session

    magic_session = session()

    # 2. the constructor, recording to a file, with handlers that touch the web client
    async def scenario():
        rtm = RTMClient(token=ctor_token, base_url=sim.base_url, record_to=record, ping_interval=5)
        log = LiveLog(rtm, widgets=True, interval=0.01)

        @rtm.on("message")
        def sync_handler(client, event):
            found.append(client.web_client)  # the sync WebClient, on this worker thread
            raise RuntimeError(f"handler failed; web client {client.web_client!r}")

        def seed(**payload):
            found.append(payload)

        rtm.on(event="message", callback=seed)
        await asyncio.wait_for(rtm.connect(), GUARD)
        sim.post_message(human(sim), "general", "hello <b>there</b>")
        await until(lambda: rtm.handlers["sync_handler"].errors >= 1 and len(found) >= 2, "the handlers")
        found.append(await rtm.web_client.auth_test())
        found.append(await asyncio.wait_for(rtm.send_message(general(sim), "sent over the socket"), GUARD))
        log.flush()
        html = log.widget.children[0].value + log._rows_html.value
        await rtm.stop()

        # 3. a token that was never issued: the errors must not carry it
        bad = RTMClient(token=bad_token, base_url=sim.base_url)
        with pytest.raises(RTMConnectError) as info:
            await asyncio.wait_for(bad.connect(), GUARD)
        await bad.async_stop()
        async with AsyncWebClient(bad_token, base_url=sim.base_url) as aweb:
            with pytest.raises(SlackApiError) as ainfo:
                await aweb.auth_test()
        return rtm, bad, log, html, [info.value, ainfo.value]

    def run_scenario():
        holder = {}
        thread = threading.Thread(target=lambda: holder.setdefault("r", asyncio.run(scenario())))
        thread.start()
        thread.join(GUARD * 2)
        return holder["r"]

    rtm, bad, log, html, exceptions = run_scenario()

    # 4. the Web API clients, sync, with the token passed directly
    with WebClient(web_token, base_url=sim.base_url) as web:
        found.append(web)
        found.append(web.auth_test())
        found.append(web.chat_postMessage(channel=general(sim), text="from the web client"))
        found.extend(list(web.paginate("users.list", limit=2))[:2])
    with WebClient(bad_token, base_url=sim.base_url) as web_bad:
        with pytest.raises(SlackApiError) as info:
            web_bad.auth_test()
        exceptions.append(info.value)
        found.append(web_bad)
    magic_log_text = magic_session.run(magic_session.log.text, 50)

    # -- scan everything ------------------------------------------------------
    roots = [rtm, bad, log, magic_client, magic_session, found, exceptions, rtm.handlers, rtm.event_frame]
    rendered = []
    for obj in _reachable(roots):
        rendered += [repr(obj), str(obj)]
    assert len(rendered) > 40  # the walk really reached the objects
    for exc in exceptions:
        rendered.append("".join(traceback.format_exception(exc)))
    for record_ in caplog.records:
        rendered.append(logging.Formatter().format(record_))
    for frame in (rtm.events, bad.events, magic_client.events):
        for column in frame.columns:
            rendered.extend(frame[column].astype("string").fillna("").tolist())
    rendered += [html, log.text(100), log.status_html(), magic_log_text, record.read_text()]
    assert len(caplog.records) > 20 and any(r.levelno == logging.DEBUG for r in caplog.records)
    assert "&lt;b&gt;there" in html and record.stat().st_size > 0

    blob = "\n".join(rendered)
    for token in tokens:
        assert token not in blob, f"a token leaked ({token[:5]}…)"
        # nor a recognisable part of it
        assert token[-16:] not in blob


def test_workspace_listens_on_loopback_only_by_default(sim):
    port = int(sim.base_url.rsplit(":", 1)[1].split("/")[0])
    listening = [c for c in psutil.Process().net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert listening and all(c.laddr.ip in ("127.0.0.1", "::1") for c in listening)
    assert sim.base_url.startswith("http://127.0.0.1:")


async def test_workspace_rejects_tokens_it_did_not_issue(sim):
    with SimWorkspace(seed=7) as other:  # same seed: same people, different tokens
        strangers = [other.token, other.user_token(human(other)), "xoxb-" + secrets.token_hex(12), "xoxb-", "Bearer"]
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=GUARD) as http:
        for token in strangers:
            answer = (await http.post("rtm.connect", headers={"Authorization": f"Bearer {token}"})).json()
            assert answer == {"ok": False, "error": "invalid_auth"} or answer["error"] == "not_authed", (token[:5], answer)
        # a real token in the query string is not accepted (Slack stopped that in 2021)
        answer = (await http.post(f"rtm.connect?token={sim.token}")).json()
        assert answer["error"] == "not_authed"
        ok = (await http.post("rtm.connect", headers={"Authorization": f"Bearer {sim.token}"})).json()
        assert ok["ok"] is True
    # a socket URL the workspace did not hand out is refused at the handshake
    forged = ok["url"].rsplit("/", 1)[0] + "/" + secrets.token_urlsafe(18)
    with pytest.raises(InvalidStatus):
        await websockets.connect(forged, open_timeout=GUARD)
    assert sim.open_sockets == 0


async def test_html_in_event_text_renders_as_text_in_the_live_log(sim):
    rtm = RTMClient(token=sim.token, base_url=sim.base_url)
    log = LiveLog(rtm, widgets=True, interval=0.01)
    await asyncio.wait_for(rtm.connect(), GUARD)
    evil = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
    sim.post_message(human(sim), "general", evil)
    await rtm.wait_for("message", timeout=GUARD)
    log.flush()
    html = log._rows_html.value
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    # the record keeps exactly what was said
    assert (rtm.events["text"] == evil).sum() == 1
    await rtm.stop()
    log.close()
