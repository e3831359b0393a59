"""Slack exports: the simulated workspace writes one, EventFrame.from_slack_export reads any."""

from __future__ import annotations

import json
import os
import zipfile

import orjson
import pandas as pd
import pytest

from rtm_notebook.events import EventFrame
from rtm_notebook.exports import ExportWarning, read_export

SIM_SEED = 3

USERS = [{"id": "U1", "name": "ada", "profile": {"real_name": "Ada L"}},
         {"id": "U2", "name": "grace", "profile": {}}]
ORG_USERS = [{"id": "W9", "name": "linus"}]
CHANNELS = [{"id": "C1", "name": "general", "created": 1, "creator": "U1", "members": ["U1", "U2"],
             "topic": {"value": ""}, "purpose": {"value": ""}, "is_archived": False}]
GROUPS = [{"id": "G1", "name": "leads", "created": 1, "creator": "U1", "members": ["U1"]}]
DMS = [{"id": "D1", "created": 1, "members": ["U1", "U2"]}]
MPIMS = [{"id": "G2", "name": "mpdm-ada--grace--linus-1", "created": 1, "members": ["U1", "U2", "W9"]}]
GENERAL_DAY = [
    {"type": "message", "user": "U1", "text": "parent", "ts": "1600000000.000100", "thread_ts": "1600000000.000100",
     "reply_count": 1, "replies": [{"user": "U2", "ts": "1600000000.000200"}],
     "reactions": [{"name": "tada", "users": ["U2"], "count": 1}], "client_msg_id": "x", "odd_field": {"a": [1]}},
    {"type": "message", "user": "U2", "text": "a reply", "ts": "1600000000.000200", "thread_ts": "1600000000.000100",
     "parent_user_id": "U1"},
    {"type": "message", "user": "U1", "text": "fixed typo", "ts": "1600000000.000300",
     "edited": {"user": "U1", "ts": "1600000001.000000"}},
    {"type": "message", "subtype": "bot_message", "bot_id": "B1", "username": "deploybot", "text": "deployed",
     "ts": "1600000000.000400"},
    {"type": "message", "subtype": "file_share", "user": "U2", "text": "", "ts": "1600000000.000500",
     "files": [{"id": "F1", "name": "plot.png", "mimetype": "image/png"}]},
    {"type": "message", "subtype": "tombstone", "user": "USLACKBOT", "text": "This message was deleted.",
     "ts": "1600000000.000600", "hidden": True},
]


def write(root, name: str, content) -> None:
    path = os.path.join(root, *name.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content if isinstance(content, bytes) else json.dumps(content).encode())


def handmade(root) -> str:
    for name, content in [("users.json", USERS), ("org_users.json", ORG_USERS), ("channels.json", CHANNELS),
                          ("groups.json", GROUPS), ("dms.json", DMS), ("mpims.json", MPIMS),
                          ("integration_logs.json", {"logs": []}),
                          ("general/2020-09-13.json", GENERAL_DAY),
                          ("leads/2020-09-13.json", [{"type": "message", "user": "U1", "text": "private",
                                                      "ts": "1600000001.000000"}]),
                          ("D1/2020-09-13.json", [{"type": "message", "user": "U2", "text": "a dm",
                                                   "ts": "1600000002.000000"}]),
                          ("mpdm-ada--grace--linus-1/2020-09-13.json",
                           [{"type": "message", "user": "W9", "text": "a group dm", "ts": "1600000003.000000"}])]:
        write(root, name, content)
    return str(root)


def test_every_conversation_kind_and_message_shape_is_read(tmp_path, recwarn):
    frame = EventFrame.from_slack_export(handmade(tmp_path))
    assert not [w for w in recwarn if issubclass(w.category, ExportWarning)]
    df = frame.to_pandas()
    assert df["channel"].tolist() == ["C1"] * 6 + ["G1", "D1", "G2"]
    assert df["ts"].tolist() == sorted(df["ts"].tolist()) and df["ts"].map(type).eq(str).all()
    assert df["text"].tolist()[:3] == ["parent", "a reply", "fixed typo"]
    assert df["thread_ts"].tolist()[:2] == ["1600000000.000100", "1600000000.000100"]  # the thread is intact
    assert df["subtype"].tolist()[3:6] == ["bot_message", "file_share", "tombstone"]
    assert df["user"].isna().tolist()[3]  # a bot message has no user
    parent = orjson.loads(df["raw"][0])
    assert parent["reactions"][0]["name"] == "tada" and parent["odd_field"] == {"a": [1]}  # kept in raw
    assert orjson.loads(df["raw"][2])["edited"]["ts"] == "1600000001.000000"
    assert orjson.loads(df["raw"][4])["files"][0]["name"] == "plot.png"
    assert (df["received_at"].map(lambda t: t.timestamp()) == df["ts"].astype(float)).all()
    # history rows: no transport, and no envelope
    added = ["transport", "envelope_type", "envelope_id", "event_id", "retry_attempt", "duplicate"]
    assert df[added].isna().all().all()
    messages = frame.messages()
    assert messages["channel_name"].tolist()[:6] == ["general"] * 6
    names = messages["channel_name"].tolist()
    assert names[6] == "leads" and names[8] == "mpdm-ada--grace--linus-1" and pd.isna(names[7])  # a DM has no name
    assert messages["user_name"].tolist()[0] == "ada" and messages["user_name"].tolist()[-1] == "linus"


def test_the_simulated_workspace_exports_all_its_history_as_zip_and_folder(sim, tmp_path):
    zipped = sim.export(tmp_path / "export.zip")
    folder = sim.export(tmp_path / "export")
    with zipfile.ZipFile(zipped) as zf:
        names = zf.namelist()
        assert {"users.json", "channels.json", "groups.json", "dms.json", "mpims.json"} <= set(names)
        expected = sum(len(json.loads(zf.read(n))) for n in names if n.count("/") == 1)
    for path in (zipped, folder):
        frame = EventFrame.from_slack_export(path)
        df = frame.messages()
        assert len(df) == expected > 100
        public = {c["id"]: c["name"] for c in sim.channels}
        assert set(df["channel"]) <= set(public) | set(frame.channel_names)
        assert df["channel_name"].notna().all() and df["user_name"].notna().all()
        assert (df["thread_ts"].notna() & (df["thread_ts"] != df["ts"])).any()  # replies, threads intact


def test_a_zip_with_a_top_folder_is_read_below_it(tmp_path):
    handmade(tmp_path / "src")
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for root, _dirs, files in os.walk(tmp_path / "src"):
            for name in files:
                full = os.path.join(root, name)
                zf.write(full, "My Workspace Slack export/" + os.path.relpath(full, tmp_path / "src"))
    assert len(EventFrame.from_slack_export(path)) == 9


# -- bad input: a clear warning naming the file, the rest read ---------------------------


def test_a_missing_users_file_is_said_and_the_messages_still_read(tmp_path):
    root = handmade(tmp_path)
    os.remove(os.path.join(root, "users.json"))
    with pytest.warns(ExportWarning, match="users.json: missing"):
        frame = EventFrame.from_slack_export(root)
    names = frame.messages()["user_name"]
    assert len(frame) == 9 and names[:8].isna().all() and names.iloc[8] == "linus"  # org_users.json still names W9


def test_a_truncated_day_file_is_skipped_with_its_name(tmp_path):
    root = handmade(tmp_path)
    write(root, "general/2020-09-14.json", json.dumps(GENERAL_DAY).encode()[:120])
    with pytest.warns(ExportWarning, match=r"general/2020-09-14\.json: not valid JSON"):
        frame = EventFrame.from_slack_export(root)
    assert len(frame) == 9


def test_a_message_without_ts_is_skipped_and_counted(tmp_path):
    root = handmade(tmp_path)
    write(root, "general/2020-09-15.json", [{"type": "message", "text": "no ts"}, {"type": "message", "ts": 5},
                                            {"type": "message", "text": "ok", "ts": "1600000009.000000"}])
    with pytest.warns(ExportWarning, match=r"general/2020-09-15\.json: 2 message\(s\) without a ts"):
        frame = EventFrame.from_slack_export(root)
    assert frame.to_pandas()["text"].tolist()[-1] == "ok"


def test_a_file_that_is_not_utf8_is_skipped_with_its_name(tmp_path):
    root = handmade(tmp_path)
    write(root, "general/2020-09-16.json", b'[{"type":"message","text":"\xff\xfe","ts":"1600000010.000000"}]')
    with pytest.warns(ExportWarning, match=r"general/2020-09-16\.json: not UTF-8"):
        frame = EventFrame.from_slack_export(root)
    assert len(frame) == 9


def test_a_zip_entry_that_climbs_out_is_skipped_and_nothing_is_written(tmp_path):
    handmade(tmp_path / "src")
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name in ("users.json", "channels.json", "general/2020-09-13.json"):
            zf.write(tmp_path / "src" / name, name)
        zf.writestr("../../escaped.json", "[]")
        zf.writestr("general/../../../escaped-too/2020-09-13.json", "[]")
    before = set(os.listdir(tmp_path.parent))
    with pytest.warns(ExportWarning, match="climbs out of the export") as caught:
        frame = EventFrame.from_slack_export(path)
    assert len([w for w in caught if "climbs out" in str(w.message)]) == 2
    assert len(frame) == 6
    assert set(os.listdir(tmp_path.parent)) == before


def test_unknown_folders_are_read_with_the_folder_as_channel(tmp_path):
    root = handmade(tmp_path)
    write(root, "C777/2020-09-13.json", [{"type": "message", "user": "U1", "text": "x", "ts": "1600000004.000000"}])
    with pytest.warns(ExportWarning, match="C777/: in no channels file"):
        frame = EventFrame.from_slack_export(root)
    assert "C777" in frame.to_pandas()["channel"].tolist()


def test_what_is_no_export_gets_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Slack export at"):
        read_export(tmp_path / "missing.zip")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="neither a folder nor a zip"):
        read_export(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="does not look like a Slack export"):
        read_export(tmp_path / "empty")


def test_an_unpacked_export_in_its_folder_from_a_mac_with_a_bom(tmp_path):
    root = tmp_path / "unpacked" / "My Workspace Slack export"
    handmade(root)
    day = root / "general" / "2020-09-13.json"
    day.write_bytes(b"\xef\xbb\xbf" + day.read_bytes())  # a byte-order mark
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    assert len(EventFrame.from_slack_export(tmp_path / "unpacked")) == 9  # read below its folder
    path = tmp_path / "mac.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                full = os.path.join(dirpath, name)
                zf.write(full, "export/" + os.path.relpath(full, root))
        zf.writestr("__MACOSX/export/._users.json", b"\x00\x05\x16\x07")
    assert len(EventFrame.from_slack_export(path)) == 9


def test_a_message_seen_twice_live_stays_twice_and_history_repeats_go():
    frame = EventFrame()
    live = {"type": "message", "channel": "C1", "ts": "1.000001", "text": "live"}
    frame.append(live, connection=1)
    frame.append(live, connection=2)  # the same message on two sockets
    frame.append({**live, "text": "fetched"}, direction="history")
    frame.append({"type": "message", "channel": "C2", "ts": "2.000001", "text": "old"}, direction="history")
    frame.append({"type": "message", "channel": "C2", "ts": "2.000001", "text": "old"}, direction="history")
    assert frame.messages()["text"].tolist() == ["live", "live", "old"]
