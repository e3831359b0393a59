"""The simulated workspace's Web API over real HTTP: methods, errors, pagination."""

from __future__ import annotations

import re

import httpx
import pytest

from rtm_notebook.sim import SimWorkspace
from sim_support import api, channel_id, ok

TS = re.compile(r"^\d{10}\.\d{6}$")


@pytest.fixture(scope="module")
def sim():
    with SimWorkspace(seed=5) as s:
        yield s


def test_base_url_is_loopback_with_api_suffix(sim):
    assert re.match(r"^http://127\.0\.0\.1:\d+/api/$", sim.base_url)
    assert sim.token.startswith("xoxb-sim-")
    assert sim.token not in repr(sim)


def test_auth_test(sim):
    body = ok(sim, "auth.test")
    assert body["user_id"] == sim.bot_user_id and body["team_id"] == sim.team["id"]
    assert body["bot_id"].startswith("B")
    human = next(u for u in sim.users if not u["is_bot"])
    body = ok(sim, "auth.test", token=sim.user_token(human["id"]))
    assert body["user_id"] == human["id"] and "bot_id" not in body


def test_tokens_not_issued_here_are_rejected(sim):
    assert api(sim, "auth.test", token=None).json() == {"ok": False, "error": "not_authed"}
    assert api(sim, "auth.test", token="xoxb-real-looking-0000").json() == {"ok": False, "error": "invalid_auth"}
    with SimWorkspace(seed=5) as other:
        assert api(sim, "auth.test", token=other.token).json()["error"] == "invalid_auth"
        assert api(other, "auth.test", token=sim.token).json()["error"] == "invalid_auth"


def test_rtm_connect(sim):
    body = ok(sim, "rtm.connect")
    assert re.match(r"^ws://127\.0\.0\.1:\d+/websocket/\S+$", body["url"])
    assert body["self"]["id"] == sim.bot_user_id and body["team"]["id"] == sim.team["id"]


def test_chat_post_message(sim):
    general = channel_id(sim, "general")
    body = ok(sim, "chat.postMessage", channel=general, text="hello web")
    assert TS.match(body["ts"]) and body["channel"] == general
    assert body["message"]["text"] == "hello web" and body["message"]["user"] == sim.bot_user_id
    assert sim.posted[-1]["ts"] == body["ts"]
