"""The Web API clients (rtm_notebook.web).

Calls go over real loopback HTTP to the simulated workspace. Failures the
workspace has no reason to produce (HTTP 5xx, an HTML error page from a
proxy, a hung server, a closed port) come from a small aiohttp server in
this file. The pure request builder and response interpreter are also
fuzzed directly with hypothesis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from rtm_notebook.errors import SlackApiError, SlackClientError
from rtm_notebook.web import (
    MAX_RETRY_AFTER,
    AsyncWebClient,
    SlackResponse,
    WebClient,
    _build_request,
    _outcome,
    _parse,
    mask_token,
    retry_after,
)

SECRET = "xoxb-1111-2222-SeCrEtPaRt"


# --- a small HTTP server for the failures Slack's own servers rarely show -----


class FaultServer:
    """aiohttp on loopback in its own thread. ``plan(method, answers)`` queues
    answers ``(status, headers, body_bytes, delay)`` for a method; once they
    run out the method answers ``{"ok": true}``. ``calls`` records
    ``(method, authorization_header)`` of every request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.hosts: dict[str, str] = {}
        self._tls = tls
        self._plans: dict[str, list[tuple[int, dict, bytes, float]]] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "fault server did not start"
        self.base_url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/api/"

    def plan(self, method: str, answers: list[tuple[int, dict, bytes, float]]) -> None:
        self._plans[method] = list(answers)

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        await request.read()
        self.calls.append((method, request.headers.get("Authorization")))
        self.hosts[method] = request.host
        plan = self._plans.get(method)
        if plan:
            status, headers, body, delay = plan.pop(0)
            if delay:
                await asyncio.sleep(delay)
            return web.Response(status=status, headers=headers, body=body)
        return web.json_response({"ok": True, "method": method})

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._tls)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        # A handler still sleeping on a planned delay is cancelled, not left dangling.
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def faults():
    server = FaultServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A throwaway self-signed certificate for 127.0.0.1: (cert path, key path)."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def tls_server(certificate):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = FaultServer(tls=context)
    yield server
    server.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/"


# --- SlackResponse --------------------------------------------------------------


def test_response_reads_like_a_dict():
    resp = SlackResponse("chat.postMessage", {"ok": True, "ts": "1.2", "channel": "C1"}, 200, {"x": "y"})
    assert resp["ts"] == "1.2" and resp.get("channel") == "C1" and resp.get("nope", 5) == 5
    assert "ts" in resp and "nope" not in resp
    assert sorted(resp) == ["channel", "ok", "ts"] and len(resp) == 3
    assert dict(resp) == resp.data and resp == {"ok": True, "ts": "1.2", "channel": "C1"}
    assert resp.validate() is resp
    assert repr(resp) == "<SlackResponse chat.postMessage ok: ts, channel>"
    assert repr(SlackResponse("api.test", {"ok": True})) == "<SlackResponse api.test ok>"
    with pytest.raises(KeyError):
        resp["nope"]
    with pytest.raises(TypeError):
        resp["ts"] = "2"  # read-only


def test_validate_raises_with_the_response_and_a_hint():
    resp = SlackResponse("chat.postMessage", {"ok": False, "error": "not_in_channel"})
    with pytest.raises(SlackApiError) as info:
        resp.validate()
    assert info.value.response is resp and info.value.error == "not_in_channel"
    assert "chat.postMessage" in str(info.value) and "/invite" in str(info.value)
    scope = SlackResponse("users.list", {"ok": False, "error": "missing_scope", "needed": "users:read"})
    with pytest.raises(SlackApiError, match="users:read"):
        scope.validate()
    with pytest.raises(SlackApiError, match="no error code given"):
        SlackResponse("auth.test", {}, 404).validate()


def test_response_repr_never_shows_data():
    resp = SlackResponse("oauth.v2.access", {"ok": True, "access_token": SECRET})
    assert SECRET not in repr(resp) and SECRET not in str(resp)
    assert repr(resp) == "<SlackResponse oauth.v2.access ok: access_token>"


def test_mask_token():
    assert mask_token(SECRET) == "xoxb-…"
    assert mask_token("nodashes") == "…"
    assert mask_token(None) is None


# --- the pure helpers -----------------------------------------------------------


def test_retry_after_defaults_and_cap():
    assert retry_after({"Retry-After": "3"}) == 3
    assert retry_after({"retry-after": "0.5"}) == 0.5
    for bad in ({}, {"Retry-After": ""}, {"Retry-After": "soon"}, {"Retry-After": "-4"}, {"Retry-After": "nan"}):
        assert retry_after(bad) == 1.0
    assert retry_after({"Retry-After": "86400"}) == MAX_RETRY_AFTER


def test_outcome_decides_retries_then_raises():
    rl = {"Retry-After": "2"}
    assert _outcome("rtm.connect", 429, rl, b"", 0, 2) == 2
    assert _outcome("rtm.connect", 429, rl, b"", 1, 2) == 2
    with pytest.raises(SlackApiError, match="rate limited.*after 2 retries") as info:
        _outcome("rtm.connect", 429, rl, b"", 2, 2)
    assert info.value.response.status_code == 429 and info.value.error == "ratelimited"
    assert _outcome("auth.test", 503, {}, b"", 0, 3) == 0.5
    assert _outcome("auth.test", 503, {}, b"", 2, 3) == 2.0
    ok = _outcome("auth.test", 200, {}, b'{"ok":true,"user_id":"U1"}', 0, 3)
    assert isinstance(ok, SlackResponse) and ok["user_id"] == "U1"


def test_request_building():
    form = _build_request("chat.postMessage", token=SECRET, base_url="http://h/api/", http_verb="POST",
                          params=None, json=None, data=None,
                          kwargs={"channel": "C1", "text": "hi", "thread_ts": None, "unfurl_links": False,
                                  "blocks": [{"type": "divider"}], "types": ["public_channel", "im"], "limit": 5})
    assert form["method"] == "POST" and form["url"] == "http://h/api/chat.postMessage"
    assert form["headers"] == {"Authorization": f"Bearer {SECRET}"}
    assert form["data"] == {"channel": "C1", "text": "hi", "unfurl_links": "false", "limit": "5",
                            "blocks": '[{"type":"divider"}]', "types": "public_channel,im"}
    body = _build_request("chat.postMessage", token=SECRET, base_url="http://h/api/", http_verb="POST",
                          params=None, json={"channel": "C1", "blocks": []}, data=None, kwargs={"text": "t"})
    assert json.loads(body["content"]) == {"channel": "C1", "blocks": [], "text": "t"}
    assert body["headers"]["Content-Type"].startswith("application/json")
    get = _build_request("users.list", token=None, base_url="http://h/api/", http_verb="get",
                         params={"limit": 2}, json=None, data=None, kwargs={"cursor": "abc"})
    assert get["method"] == "GET" and get["params"] == {"limit": "2", "cursor": "abc"} and get["headers"] == {}


@pytest.mark.parametrize("method", ["", "chat", "../admin.users", "chat.post Message", "chat.postMessage?x=1", None])
def test_bad_method_names_are_refused(method):
    with pytest.raises(SlackClientError, match="not a Slack Web API method name"):
        _build_request(method, token=None, base_url="http://h/", http_verb="POST", params=None, json=None,
                       data=None, kwargs={})


def test_bad_arguments_get_clear_errors():
    with pytest.raises(SlackClientError, match="http_verb"):
        WebClient().api_call("auth.test", http_verb="PUT")
    with pytest.raises(SlackClientError, match="json= needs"):
        WebClient().api_call("auth.test", http_verb="GET", json={})
    with pytest.raises(SlackClientError, match="argument when="):
        WebClient().api_call("chat.postMessage", when=object())
    with pytest.raises(SlackClientError, match="base_url"):
        WebClient(base_url="slack.com/api")
    with pytest.raises(SlackClientError, match="max_retries"):
        WebClient(max_retries=-1)


def test_token_with_control_characters_is_refused_without_echo():
    with pytest.raises(SlackClientError) as info:
        WebClient("xoxb-12 34")
    assert "xoxb-12" not in str(info.value)
    with pytest.raises(SlackClientError) as info:
        WebClient().api_call("auth.test", token="xoxb-9\r\nX-Evil: 1")
    assert "xoxb-9" not in str(info.value)
    # A trailing newline from a file or a paste is forgiven.
    assert "\n" not in _build_request("auth.test", token=None, base_url="http://h/", http_verb="POST", params=None,
                                      json=None, data=None, kwargs={"token": SECRET + "\n"})["headers"]["Authorization"]


def test_snake_case_attributes_are_methods_and_nothing_else():
    client = WebClient(SECRET)
    assert client.chat_postMessage.__name__ == "chat_postMessage"
    assert "chat.postMessage" in client.chat_postMessage.__doc__
    assert "oauth.v2.access" in client.oauth_v2_access.__doc__
    for name in ("token", "_private", "__wrapped__", "clsoe", "chat_", "chat__post"):
        with pytest.raises(AttributeError):
            getattr(client, name)
    assert repr(client) == "WebClient(token='xoxb-…', base_url='https://slack.com/api/')"
    client.close()
    with pytest.raises(SlackClientError, match="closed"):
        client.auth_test()


# --- hypothesis: the response interpreter never fails in an unexpected way -----

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20) | st.floats(
    allow_nan=False, allow_infinity=False)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                           max_leaves=20)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.text(max_size=8), json_values, max_size=5).map(lambda d: json.dumps(d).encode()),
    st.builds(lambda error, extra: json.dumps({"ok": False, "error": error, **extra}).encode(),
              st.text(max_size=30), st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
    st.just(b"[" * 5000 + b"]" * 5000),
    st.binary(max_size=60).map(lambda b: b + SECRET.encode() + b),
)
statuses = st.sampled_from([200, 201, 204, 301, 400, 403, 404, 429, 500, 502, 503, 504]) | st.integers(100, 599)
header_maps = st.dictionaries(st.sampled_from(["Retry-After", "retry-after", "content-type", "x-other"]),
                              st.text(max_size=12), max_size=3)


@settings(max_examples=300, deadline=None)
@given(status=statuses, headers=header_maps, body=bodies, attempt=st.integers(0, 5), max_retries=st.integers(0, 5))
def test_outcome_is_a_response_a_delay_or_a_clear_error(status, headers, body, attempt, max_retries):
    try:
        result = _outcome("chat.postMessage", status, headers, body, attempt, max_retries, SECRET)
    except SlackApiError as exc:
        message = str(exc)
        assert "chat.postMessage" in message and SECRET not in message
        assert isinstance(exc.response, SlackResponse) and exc.response.ok is False
        assert SECRET not in repr(exc.response)
        return
    if isinstance(result, float):
        assert (status == 429 or status >= 500) and attempt < max_retries
        assert 0 <= result <= MAX_RETRY_AFTER
    else:
        assert isinstance(result, SlackResponse) and result.ok and result.status_code == status
        assert result.data == json.loads(body)
        assert SECRET not in repr(result)


@settings(max_examples=100, deadline=None)
@given(data=st.dictionaries(st.text(max_size=10), json_values, max_size=6), status=statuses)
def test_any_json_object_parses_to_exactly_that_data(data, status):
    resp = _parse("users.list", status, {}, json.dumps(data).encode())
    assert resp.data == data and dict(resp) == data and len(resp) == len(data)


@settings(max_examples=100, deadline=None)
@given(fields=st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k != "token"),
                              json_values | st.lists(st.text(max_size=5), max_size=3), max_size=6),
       verb=st.sampled_from(["GET", "POST"]), as_json=st.booleans())
def test_token_travels_only_in_the_authorization_header(fields, verb, as_json):
    request = _build_request("chat.postMessage", token=SECRET, base_url="http://h/api/", http_verb=verb,
                             params=None, json={} if as_json and verb == "POST" else None, data=None,
                             kwargs=dict(fields))
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    elsewhere = {k: v for k, v in request.items() if k != "headers"}
    assert SECRET not in repr(elsewhere)


@settings(max_examples=150, deadline=None)
@given(method=st.text(max_size=30) | st.sampled_from(["chat.postMessage", "users.list", "a.b.c"]),
       verb=st.text(max_size=5) | st.sampled_from(["GET", "post"]),
       fields=st.dictionaries(st.text(max_size=8), json_values | st.builds(object) | st.binary(max_size=4)
                              | st.sets(st.integers(), max_size=2), max_size=4),
       as_json=st.booleans())
def test_request_building_fails_only_with_a_clear_client_error(method, verb, fields, as_json):
    try:
        request = _build_request(method, token=SECRET, base_url="http://h/api/", http_verb=verb, params=None,
                                 json={} if as_json else None, data=None, kwargs=fields)
    except SlackClientError as exc:
        assert SECRET not in str(exc)
        return
    assert request["url"] == "http://h/api/" + method and request["method"] in ("GET", "POST")


# --- failures over real HTTP (the fault server) ---------------------------------

HTML_502 = (502, {"Content-Type": "text/html"}, b"<html><body><h1>502 Bad Gateway</h1></body></html>", 0)
JSON_503 = (503, {"Content-Type": "application/json"}, b'{"ok":false,"error":"service_unavailable"}', 0)


def test_5xx_is_retried_then_succeeds(faults):
    faults.plan("flaky.sync", [JSON_503, HTML_502])
    with WebClient(SECRET, base_url=faults.base_url, max_retries=2) as client:
        assert client.flaky_sync()["method"] == "flaky.sync"
    assert [m for m, _ in faults.calls].count("flaky.sync") == 3


async def test_5xx_is_retried_then_succeeds_async(faults):
    faults.plan("flaky.async", [HTML_502])
    async with AsyncWebClient(SECRET, base_url=faults.base_url, max_retries=1) as client:
        assert (await client.flaky_async()).ok
    assert [m for m, _ in faults.calls].count("flaky.async") == 2


def test_non_json_answer_is_a_clear_error_after_bounded_retries(faults):
    faults.plan("proxy.page", [HTML_502] * 3)
    with WebClient(SECRET, base_url=faults.base_url, max_retries=1) as client, pytest.raises(SlackApiError) as info:
        client.proxy_page()
    message = str(info.value)
    assert "proxy.page" in message and "HTTP 502" in message and "not JSON" in message and "Bad Gateway" in message
    assert info.value.error == "invalid_response" and info.value.response.status_code == 502
    assert [m for m, _ in faults.calls].count("proxy.page") == 2  # first try + max_retries


def test_429_without_body_from_a_proxy_is_a_rate_limit(faults):
    faults.plan("busy.method", [(429, {"Retry-After": "0"}, b"", 0)] * 2)
    with WebClient(SECRET, base_url=faults.base_url, max_retries=1) as client, pytest.raises(SlackApiError) as info:
        client.busy_method()
    assert info.value.error == "ratelimited" and info.value.response.status_code == 429
    assert "rate limited" in str(info.value)


def test_a_body_echoing_the_token_is_masked_in_the_error(faults):
    faults.plan("echo.token", [(400, {}, f"bad request for token {SECRET}".encode(), 0)])
    with WebClient(SECRET, base_url=faults.base_url) as client, pytest.raises(SlackApiError) as info:
        client.echo_token()
    assert SECRET not in str(info.value) and "xoxb-…" in str(info.value)


def test_closed_port_retries_boundedly_then_says_what_failed():
    url = closed_port_url()
    with WebClient(SECRET, base_url=url, max_retries=1) as client, pytest.raises(SlackApiError) as info:
        client.auth_test()
    message = str(info.value)
    assert "auth.test" in message and url in message and "ConnectError" in message and "1 retry" in message
    assert SECRET not in message


async def test_closed_port_async():
    async with AsyncWebClient(SECRET, base_url=closed_port_url(), max_retries=0) as client:
        with pytest.raises(SlackApiError, match="ConnectError.*0 retries"):
            await client.auth_test()


def test_read_timeout_is_not_retried_because_slack_may_have_acted(faults):
    faults.plan("chat.slowPost", [(200, {}, b'{"ok":true}', 3.0)])
    with WebClient(SECRET, base_url=faults.base_url, timeout=0.5, max_retries=3) as client:
        with pytest.raises(SlackApiError, match="may or may not have carried it out"):
            client.chat_slowPost(channel="C1", text="once")
    assert [m for m, _ in faults.calls].count("chat.slowPost") == 1


def test_token_is_sent_as_bearer_and_can_be_overridden_per_call(faults):
    with WebClient(SECRET, base_url=faults.base_url) as client:
        client.api_call("who.am", params={"a": 1})
        client.api_call("who.else", token="xoxp-other")
        client.api_call("who.json", json={"token": "xoxb-in-json", "x": 1})
    sent = dict(faults.calls)
    assert sent["who.am"] == f"Bearer {SECRET}"
    assert sent["who.else"] == "Bearer xoxp-other"
    assert sent["who.json"] == "Bearer xoxb-in-json"
    with WebClient(base_url=faults.base_url) as anonymous:
        anonymous.api_call("who.nobody")
    assert dict(faults.calls)["who.nobody"] is None



def test_ssl_context_and_verification(tls_server, certificate, caplog):
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    with WebClient(SECRET, base_url=tls_server.base_url, ssl=trusting) as client:
        assert client.auth_test()["method"] == "auth.test"
    with WebClient(SECRET, base_url=tls_server.base_url, ssl=False) as client:
        assert client.auth_test().ok
    before = len(tls_server.calls)
    caplog.set_level(logging.INFO, logger="rtm_notebook.web")
    with WebClient(SECRET, base_url=tls_server.base_url, max_retries=3) as client, pytest.raises(SlackApiError) as info:
        client.auth_test()
    # Refused at the handshake, at once: an untrusted certificate is not retried.
    assert "certificate is not trusted" in str(info.value) and "ssl=" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(tls_server.calls) == before
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


async def test_proxy_carries_the_request(faults):
    # The fault server stands in for an HTTP proxy: httpx sends it the absolute
    # URL, and a host that does not resolve proves the request went via it.
    async with AsyncWebClient(SECRET, base_url="http://slack.invalid/api/", proxy=faults.base_url.removesuffix("/api/")) as client:
        assert (await client.api_call("via.proxy"))["method"] == "via.proxy"
    assert faults.hosts["via.proxy"] == "slack.invalid"
    assert dict(faults.calls)["via.proxy"] == f"Bearer {SECRET}"


# --- against the simulated workspace --------------------------------------------


SIM_SEED = 7


@pytest.fixture
def client(sim):
    with WebClient(sim.token, base_url=sim.base_url) as c:
        yield c


def channel_id(client, name):
    page = client.conversations_list(types=["public_channel", "private_channel"], limit=1000)
    return next(c["id"] for c in page["channels"] if c["name"] == name)


def test_auth_test_sync(sim, client):
    resp = client.auth_test()
    assert resp.ok and resp["user_id"] == sim.bot_user_id and resp.status_code == 200
    assert resp.method == "auth.test" and repr(resp).startswith("<SlackResponse auth.test ok: url, team, user")


async def test_auth_test_async(sim):
    async with AsyncWebClient(sim.token, base_url=sim.base_url) as client:
        resp = await client.auth_test()
        assert resp["user_id"] == sim.bot_user_id
        assert (await client.api_call("auth.test"))["team_id"] == resp["team_id"]


def test_post_as_form_as_json_and_read_with_get(sim, client):
    general = channel_id(client, "general")
    form = client.chat_postMessage(channel=general, text="posted as form fields")
    assert form["channel"] == general and form["message"]["text"] == "posted as form fields"
    reply = client.chat_postMessage(channel=general, text="a thread reply", thread_ts=form["ts"])
    assert reply["message"]["thread_ts"] == form["ts"]
    as_json = client.api_call("chat.postMessage", json={"channel": general, "text": "posted as a JSON body"})
    assert as_json["ts"] > form["ts"]
    seed_style = client.api_call("chat.postMessage", data={"channel": general, "text": "posted with data="})
    assert seed_style["message"]["text"] == "posted with data="
    posted = {m["text"] for m in sim.posted}
    assert {"posted as form fields", "a thread reply", "posted as a JSON body", "posted with data="} <= posted
    info = client.api_call("conversations.info", http_verb="GET", channel=general)
    assert info["channel"]["id"] == general and info["channel"]["name"] == "general"
    history = client.conversations_history(channel=general, limit=3)
    assert history["messages"][0]["text"] == "posted with data="


@pytest.mark.parametrize("call, error", [
    (lambda c: c.chat_postMessage(channel="C0NOSUCHONE", text="hi"), "channel_not_found"),
    (lambda c: c.api_call("chat.noSuchMethod"), "unknown_method"),
    (lambda c: c.users_info(user="U0NOBODY"), "user_not_found"),
])
def test_ok_false_raises_slack_api_error_carrying_the_response(client, call, error):
    with pytest.raises(SlackApiError) as info:
        call(client)
    assert info.value.error == error and info.value.response["error"] == error
    assert isinstance(info.value.response, SlackResponse) and not info.value.response.ok
    assert error in str(info.value) and info.value.response.method in str(info.value)


async def test_bad_or_missing_token_async(sim):
    async with AsyncWebClient("xoxb-not-a-real-token", base_url=sim.base_url) as bad:
        with pytest.raises(SlackApiError, match="invalid_auth") as info:
            await bad.auth_test()
        assert "xoxb-not-a-real-token" not in str(info.value)
    async with AsyncWebClient(base_url=sim.base_url) as anonymous:
        with pytest.raises(SlackApiError) as info:
            await anonymous.auth_test()
        assert info.value.error == "not_authed" and "token=" in str(info.value)


def test_429_waits_retry_after_then_succeeds(sim, client):
    before = len(sim.connect_calls)
    sim.rate_limit_connect(2, retry_after=1)
    resp = client.rtm_connect()
    assert resp.ok and resp["url"].startswith("ws")
    calls = sim.connect_calls[before:]
    assert len(calls) == 3
    # Causality, not speed: no retry reached the server before Retry-After had passed.
    assert all(later - earlier >= 1 - 0.01 for earlier, later in zip(calls, calls[1:]))


async def test_429_is_bounded_and_raises_with_the_429_response(sim):
    before = len(sim.connect_calls)
    sim.rate_limit_connect(2, retry_after=1)
    async with AsyncWebClient(sim.token, base_url=sim.base_url, max_retries=1) as client:
        with pytest.raises(SlackApiError) as info:
            await client.rtm_connect()
        assert info.value.response.status_code == 429 and info.value.error == "ratelimited"
        assert "after 1 retry" in str(info.value)
        calls = sim.connect_calls[before:]
        assert len(calls) == 2 and calls[1] - calls[0] >= 1 - 0.01
        # The limit is used up: the next call goes through at once.
        assert (await client.rtm_connect()).ok
    assert len(sim.connect_calls) == before + 3


def test_paginate_users_list_yields_every_member_once(sim, client):
    pages = list(client.paginate("users.list", limit=3))
    ids = [m["id"] for page in pages for m in page["members"]]
    assert len(pages) > 2 and len(ids) == len(set(ids))
    assert set(ids) == {u["id"] for u in client.users_list()["members"]}
    assert sim.bot_user_id in ids
    assert all(len(page["members"]) <= 3 for page in pages)


async def test_paginate_conversations_list_async(sim):
    async with AsyncWebClient(sim.token, base_url=sim.base_url) as client:
        everything = await client.conversations_list(types="public_channel,private_channel,im", limit=1000)
        pages = [page async for page in client.paginate("conversations.list", types="public_channel,private_channel,im", limit=2)]
    ids = [c["id"] for page in pages for c in page["channels"]]
    assert len(pages) > 2 and len(ids) == len(set(ids))
    assert ids == [c["id"] for c in everything["channels"]]


def test_sync_client_from_many_threads_at_once(sim, client):
    general = channel_id(client, "general")
    start = threading.Barrier(8)

    def work(worker):
        start.wait(10)
        out = []
        for i in range(5):
            out.append(client.chat_postMessage(channel=general, text=f"thread {worker} message {i}")["ts"])
            out.append(client.users_info(user=sim.bot_user_id)["user"]["id"])
        return out

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    ts_values = [ts for r in results for ts in r[0::2]]
    assert len(set(ts_values)) == 40
    assert all(uid == sim.bot_user_id for r in results for uid in r[1::2])
    posted = {m["text"] for m in sim.posted}
    assert {f"thread {w} message {i}" for w in range(8) for i in range(5)} <= posted


def test_tokens_never_reach_logs_reprs_or_errors(sim, caplog):
    caplog.set_level(logging.DEBUG)
    human = sim.users[0]["id"]
    tokens = [sim.token, sim.user_token(human), "xoxb-999-wrong-token"]
    seen = []
    with WebClient(sim.token, base_url=sim.base_url) as client:
        seen.append(repr(client))
        seen.append(repr(client.auth_test()))
        seen.append(repr(client.auth_test(token=sim.user_token(human))))
        sim.rate_limit_connect(1, retry_after=1)
        seen.append(repr(client.rtm_connect()))
        for call in (lambda: client.chat_postMessage(channel="C0NOSUCHONE", text="x"),
                     lambda: client.auth_test(token="xoxb-999-wrong-token")):
            with pytest.raises(SlackApiError) as info:
                call()
            seen += [str(info.value), repr(info.value), repr(info.value.response)]
    with WebClient(sim.token, base_url=closed_port_url(), max_retries=0) as dead:
        with pytest.raises(SlackApiError) as info:
            dead.auth_test()
        seen += [str(info.value), repr(dead)]
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert "chat.postMessage -> HTTP 200" in logged and "rtm.connect answered HTTP 429" in logged
    for token in tokens:
        assert token not in logged
        assert not [text for text in seen if token in text]


async def test_async_client_with_many_calls_in_flight(sim):
    async with AsyncWebClient(sim.token, base_url=sim.base_url) as client:
        channels = (await client.conversations_list(limit=1000))["channels"]
        general = next(c["id"] for c in channels if c["name"] == "general")
        posts = [client.chat_postMessage(channel=general, text=f"gathered {i}") for i in range(30)]
        reads = [client.users_info(user=sim.bot_user_id) for _ in range(10)]
        results = await asyncio.gather(*posts, *reads)
    assert len({r["ts"] for r in results[:30]}) == 30
    assert all(r["user"]["id"] == sim.bot_user_id for r in results[30:])
    assert {f"gathered {i}" for i in range(30)} <= {m["text"] for m in sim.posted}


def test_paginate_with_get_puts_the_cursor_in_the_query(client):
    pages = list(client.paginate("users.list", http_verb="GET", limit=4))
    ids = [m["id"] for page in pages for m in page["members"]]
    assert len(pages) > 1 and len(ids) == len(set(ids)) == len(client.users_list()["members"])
