"""The simulated workspace's Web API over real HTTP: methods, errors, pagination."""

from __future__ import annotations

import re

import httpx

from rtm_notebook.sim import SimWorkspace

from sim_support import api, channel_id, ok

TS = re.compile(r"^\d{10}\.\d{6}$")


SIM_SEED = 5


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


def human(sim, index=0):
    return [u for u in sim.users if not u["is_bot"]][index]


def test_json_body_get_query_and_token_field(sim):
    general = channel_id(sim, "general")
    r = httpx.post(sim.base_url + "conversations.info", json={"channel": general},
                   headers={"Authorization": f"Bearer {sim.token}"})
    assert r.json()["channel"]["id"] == general
    r = httpx.get(sim.base_url + "users.info", params={"user": sim.bot_user_id},
                  headers={"Authorization": f"Bearer {sim.token}"})
    assert r.json()["user"]["is_bot"] is True
    r = httpx.post(sim.base_url + "auth.test", data={"token": sim.token})
    assert r.json()["ok"] is True
    r = httpx.post(sim.base_url + "auth.test", json={"token": sim.token})
    assert r.json()["ok"] is True
    # Like Slack since 2021: a token in the query string is not accepted.
    r = httpx.get(sim.base_url + "auth.test", params={"token": sim.token})
    assert r.json() == {"ok": False, "error": "not_authed"}


def test_bad_requests_get_slack_envelopes_and_server_keeps_serving(sim):
    url = sim.base_url
    auth = {"Authorization": f"Bearer {sim.token}"}
    r = httpx.post(url + "no.such_method", headers=auth)
    assert r.json() == {"ok": False, "error": "unknown_method", "req_method": "no.such_method"}
    r = httpx.post(url + "auth.test", content=b"{not json", headers={**auth, "Content-Type": "application/json"})
    assert r.json() == {"ok": False, "error": "invalid_json"}
    r = httpx.post(url + "auth.test", content=b"[1, 2]", headers={**auth, "Content-Type": "application/json"})
    assert r.json() == {"ok": False, "error": "json_not_object"}
    r = httpx.post(url + "auth.test", content=b"\xff\xfe=\x00", headers={**auth, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.json() == {"ok": False, "error": "invalid_form_data"}
    r = httpx.post(url + "auth.test", content=b"hello", headers={**auth, "Content-Type": "text/plain"})
    assert r.json() == {"ok": False, "error": "invalid_post_type"}
    r = httpx.post(url + "chat.postMessage", json={"channel": "general", "text": "x" * (2 << 20)}, headers=auth)
    assert r.status_code == 413 and r.json() == {"ok": False, "error": "request_too_large"}
    r = httpx.post(url + "chat.postMessage", json={"channel": {"id": "C1"}, "text": "hi"}, headers=auth)
    body = r.json()
    assert body["error"] == "invalid_arguments" and "channel" in body["response_metadata"]["messages"][0]
    r = httpx.post(url + "conversations.history", data={}, headers=auth)
    assert r.json()["error"] == "invalid_arguments"
    r = httpx.post(url + "conversations.list", data={"limit": "lots"}, headers=auth)
    assert r.json()["error"] == "invalid_limit"
    r = httpx.post(url + "conversations.list", json={"limit": 5000}, headers=auth)
    assert r.json()["error"] == "invalid_limit"
    # A broken HTTP request is refused, and the server goes on.
    import socket
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GARBAGE\x00\x01 / NOTHTTP\r\n\r\n")
        assert s.recv(100).split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert ok(sim, "auth.test")["ok"]


def test_chat_post_message_errors(sim):
    general = channel_id(sim, "general")
    assert api(sim, "chat.postMessage", text="hi").json()["error"] == "channel_not_found"
    assert api(sim, "chat.postMessage", channel="CNOPE", text="hi").json()["error"] == "channel_not_found"
    assert api(sim, "chat.postMessage", channel=general).json()["error"] == "no_text"
    assert api(sim, "chat.postMessage", channel=general, text="x" * 40_001).json()["error"] == "msg_too_long"
    # The bot cannot see the private channel it is not in.
    assert api(sim, "chat.postMessage", channel=channel_id(sim, "incident-room"), text="hi").json()["error"] == "channel_not_found"
    # By name, with '#', as Slack allows.
    assert ok(sim, "chat.postMessage", channel="#general", text="by name")["channel"] == general


def test_not_in_channel(sim):
    """A person posting in a public channel they have not joined."""
    for ch in sim.channels:
        for u in sim.users:
            if u["is_bot"]:
                continue
            r = api(sim, "chat.postMessage", token=sim.user_token(u["id"]), channel=ch["id"], text="x").json()
            if not r["ok"]:
                assert r["error"] == "not_in_channel"
                return
    raise AssertionError("every human is in every channel")


def test_threads_update_delete_reactions(sim):
    general = channel_id(sim, "general")
    parent = ok(sim, "chat.postMessage", channel=general, text="parent")
    r1 = ok(sim, "chat.postMessage", channel=general, text="reply 1", thread_ts=parent["ts"])
    r2 = ok(sim, "chat.postMessage", channel=general, text="reply 2", thread_ts=r1["ts"])  # joins the parent's thread
    assert r1["message"]["thread_ts"] == r2["message"]["thread_ts"] == parent["ts"]
    assert api(sim, "chat.postMessage", channel=general, text="x", thread_ts="1.1").json()["error"] == "invalid_thread_ts"
    thread = ok(sim, "conversations.replies", channel=general, ts=parent["ts"])
    assert [m["text"] for m in thread["messages"]] == ["parent", "reply 1", "reply 2"]
    assert thread["messages"][0]["reply_count"] == 2
    page1 = ok(sim, "conversations.replies", channel=general, ts=parent["ts"], limit=1)
    assert page1["has_more"] and [m["text"] for m in page1["messages"]] == ["parent", "reply 1"]
    page2 = ok(sim, "conversations.replies", channel=general, ts=parent["ts"], limit=1, cursor=page1["response_metadata"]["next_cursor"])
    assert [m["text"] for m in page2["messages"]] == ["parent", "reply 2"] and page2["response_metadata"]["next_cursor"] == ""
    assert api(sim, "conversations.replies", channel=general, ts="1234567890.000000").json()["error"] == "thread_not_found"

    updated = ok(sim, "chat.update", channel=general, ts=parent["ts"], text="parent (edited)")
    assert updated["text"] == "parent (edited)" and updated["message"]["edited"]["user"] == sim.bot_user_id
    assert api(sim, "chat.update", channel=general, ts="1234567890.000000", text="x").json()["error"] == "message_not_found"
    someone = sim.post_message(human(sim)["id"], general, "not yours")
    assert api(sim, "chat.update", channel=general, ts=someone["ts"], text="x").json()["error"] == "cant_update_message"
    assert api(sim, "chat.delete", channel=general, ts=someone["ts"]).json()["error"] == "cant_delete_message"
    assert api(sim, "chat.update", channel=general, ts=parent["ts"]).json()["error"] == "no_text"

    assert ok(sim, "reactions.add", channel=general, timestamp=someone["ts"], name="tada")
    assert api(sim, "reactions.add", channel=general, timestamp=someone["ts"], name="tada").json()["error"] == "already_reacted"
    assert api(sim, "reactions.add", channel=general, timestamp=someone["ts"], name="NOT A NAME").json()["error"] == "invalid_name"
    assert api(sim, "reactions.add", channel=general, timestamp="1234567890.000000", name="tada").json()["error"] == "message_not_found"
    history = ok(sim, "conversations.history", channel=general, limit=10)["messages"]
    mine = next(m for m in history if m["ts"] == someone["ts"])
    assert mine["reactions"] == [{"name": "tada", "users": [sim.bot_user_id], "count": 1}]

    assert ok(sim, "chat.delete", channel=general, ts=r2["ts"])["ts"] == r2["ts"]
    assert api(sim, "chat.delete", channel=general, ts=r2["ts"]).json()["error"] == "message_not_found"
    history = ok(sim, "conversations.history", channel=general, limit=50)["messages"]
    assert parent["ts"] in {m["ts"] for m in history}
    assert r1["ts"] not in {m["ts"] for m in history}  # replies live in the thread, not the channel


def test_conversations_list_pagination_and_types(sim):
    everything, cursor, pages = [], None, 0
    while True:
        args = {"limit": 2, "types": "public_channel,private_channel"}
        if cursor:
            args["cursor"] = cursor
        body = ok(sim, "conversations.list", **args)
        pages += 1
        assert len(body["channels"]) <= 2
        everything += body["channels"]
        cursor = body["response_metadata"]["next_cursor"]
        if cursor == "":
            break
    names = [c["name"] for c in everything]
    assert len(names) == len(set(names)) and "general" in names and "leads" in names
    assert "incident-room" not in names  # private and the bot is not in it
    assert pages == (len(names) + 1) // 2
    public = ok(sim, "conversations.list")["channels"]
    assert all(c["is_channel"] and not c["is_private"] for c in public)
    ims = ok(sim, "conversations.list", types="im")["channels"]
    assert ims and all(c["is_im"] for c in ims)
    assert api(sim, "conversations.list", types="bogus").json()["error"] == "invalid_types"
    assert api(sim, "conversations.list", cursor="!!!").json()["error"] == "invalid_cursor"
    assert api(sim, "conversations.list", cursor="dXNlcjpVMDYxTkZUVDI=").json()["error"] == "invalid_cursor"


def test_conversations_info(sim):
    leads = ok(sim, "conversations.info", channel=channel_id(sim, "leads"))["channel"]
    assert leads["is_private"] and leads["is_member"] and leads["name"] == "leads"
    assert api(sim, "conversations.info", channel="CNOPE").json()["error"] == "channel_not_found"


def test_conversations_history_pagination_and_window(sim):
    channel = channel_id(sim, "data")
    seen, cursor = [], None
    while True:
        args = {"channel": channel, "limit": 7}
        if cursor:
            args["cursor"] = cursor
        body = ok(sim, "conversations.history", **args)
        seen += body["messages"]
        cursor = body["response_metadata"]["next_cursor"]
        assert body["has_more"] == (cursor != "")
        if not cursor:
            break
    stamps = [m["ts"] for m in seen]
    assert all(TS.match(t) for t in stamps)
    assert stamps == sorted(stamps, reverse=True) and len(stamps) == len(set(stamps)) > 20
    everything = ok(sim, "conversations.history", channel=channel, limit=999)["messages"]
    assert [m["ts"] for m in everything] == stamps
    newest, oldest = stamps[2], stamps[6]
    window = ok(sim, "conversations.history", channel=channel, latest=newest, oldest=oldest)["messages"]
    assert [m["ts"] for m in window] == stamps[3:6]
    window = ok(sim, "conversations.history", channel=channel, latest=newest, oldest=oldest, inclusive="true")["messages"]
    assert [m["ts"] for m in window] == stamps[2:7]
    assert api(sim, "conversations.history", channel=channel, cursor="bm9wZQ==").json()["error"] == "invalid_cursor"
    assert api(sim, "conversations.history", channel=channel, latest="soon").json()["error"] == "invalid_ts_latest"


def test_users_list_and_info(sim):
    everyone = ok(sim, "users.list")["members"]
    assert len(everyone) == len(sim.users) and any(u["is_bot"] for u in everyone)
    paged, cursor = [], None
    while True:
        body = ok(sim, "users.list", limit=5, **({"cursor": cursor} if cursor else {}))
        paged += body["members"]
        cursor = body["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert [u["id"] for u in paged] == [u["id"] for u in everyone]
    person = human(sim)
    info = ok(sim, "users.info", user=person["id"])["user"]
    assert info["profile"]["real_name"] == person["real_name"] and info["tz"] and isinstance(info["tz_offset"], int)
    assert api(sim, "users.info", user="UNOBODY").json()["error"] == "user_not_found"
    assert api(sim, "users.info").json()["error"] == "invalid_arguments"


def test_rtm_start_snapshot(sim):
    body = ok(sim, "rtm.start")
    assert body["url"].startswith("ws://")
    assert body["self"]["id"] == sim.bot_user_id and "prefs" in body["self"]
    assert body["team"]["domain"] and body["users"] and body["bots"]
    assert {c["name"] for c in body["channels"]} >= {"general", "random"}
    assert [g["name"] for g in body["groups"]] == ["leads"]
    assert body["ims"] and all(i["is_im"] for i in body["ims"]) and body["mpims"] == []


def test_loopback_only_by_default(sim):
    import psutil

    port = int(sim.base_url.split(":")[2].split("/")[0])
    listening = [c for c in psutil.Process().net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert [c.laddr.ip for c in listening] == ["127.0.0.1"]


async def test_same_seed_same_workspace_and_traffic():
    from sim_support import Socket

    async def snapshot(seed):
        with SimWorkspace(seed=seed) as s:
            history = ok(s, "conversations.history", channel=channel_id(s, "general"), limit=999)["messages"]
            sock = await (await Socket.open(s)).hello()
            s.burst(200)
            frames = [await sock.recv() for _ in range(200)]
            await sock.close()
            # ts values are times; everything else must repeat.
            traffic = [{k: v for k, v in f.items() if not k.endswith("ts") and not isinstance(v, dict)} for f in frames]
            return s.users, s.channels, s.team, history, traffic

    a, b, c = await snapshot(7), await snapshot(7), await snapshot(8)
    assert a == b
    assert a[0] != c[0] and a[4] != c[4]
    assert {e["type"] for e in a[4]} >= {"message", "reaction_added", "user_typing", "presence_change"}


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
METHODS = ["auth.test", "rtm.connect", "rtm.start", "chat.postMessage", "chat.update", "chat.delete",
           "reactions.add", "conversations.list", "conversations.info", "conversations.history",
           "conversations.replies", "users.list", "users.info"]
FIELDS = ["channel", "text", "ts", "thread_ts", "timestamp", "name", "limit", "cursor", "types", "user",
          "oldest", "latest", "inclusive", "blocks"]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(METHODS), body=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5),
       as_json=st.booleans())
def test_any_arguments_get_an_envelope(sim, method, body, as_json):
    headers = {"Authorization": f"Bearer {sim.token}"}
    if as_json:
        r = httpx.post(sim.base_url + method, json=body, headers=headers, timeout=10)
    else:
        form = {k: v if isinstance(v, str) else str(v) for k, v in body.items()}
        r = httpx.post(sim.base_url + method, data=form, headers=headers, timeout=10)
    assert r.status_code == 200
    envelope = r.json()
    assert isinstance(envelope["ok"], bool)
    assert envelope["ok"] or (isinstance(envelope["error"], str) and envelope["error"] != "internal_error")
