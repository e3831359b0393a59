"""The simulated workspace's history written as a Slack export (what an admin's "Export data" gives).

``users.json``, ``channels.json`` (public), ``groups.json`` (private),
``dms.json``, ``mpims.json`` (the workspace has none: an empty list, as an
export of a workspace without group DMs has), and a folder per
conversation (named after the channel, or the DM's id) with one
``YYYY-MM-DD.json`` per day (UTC) holding that day's messages in
``conversations.history`` shape, oldest first. A path ending in ``.zip``
gets a zip, anything else a folder.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import zipfile
from collections import defaultdict
from typing import Any

from rtm_notebook.sim.model import Conversation, Workspace

__all__ = ["snapshot", "write_export"]


def _conversation(conv: Conversation) -> dict[str, Any]:
    if conv.kind == "im":
        return {"id": conv.id, "created": conv.created, "members": sorted({conv.creator, conv.im_user} - {None})}
    # The channel objects of an export: fewer fields than the Web API's.
    return {"id": conv.id, "name": conv.name, "created": conv.created, "creator": conv.creator,
            "is_archived": False, "is_general": conv.name == "general", "members": sorted(conv.members),
            "topic": {"value": conv.topic, "creator": conv.creator if conv.topic else "", "last_set": 0},
            "purpose": {"value": conv.purpose, "creator": conv.creator, "last_set": conv.created}}


def snapshot(ws: Workspace) -> dict[str, Any]:
    """Everything an export holds, copied (call on the workspace's loop; write elsewhere)."""
    files: dict[str, Any] = {"users.json": copy.deepcopy(list(ws.users.values()))}
    lists: dict[str, list] = {"channels.json": [], "groups.json": [], "dms.json": [], "mpims.json": []}
    for conv in ws.conversations.values():
        which = {"public": "channels.json", "private": "groups.json", "im": "dms.json"}[conv.kind]
        lists[which].append(_conversation(conv))
        folder = conv.id if conv.kind == "im" else conv.name
        days: dict[str, list] = defaultdict(list)
        for ts, message in conv.messages.items():
            day = dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d")
            days[day].append(copy.deepcopy(message))
        for day, messages in days.items():
            files[f"{folder}/{day}.json"] = messages
    files.update(lists)
    return files


def write_export(files: dict[str, Any], path: str | os.PathLike) -> str:
    """Write a :func:`snapshot` to ``path`` (a ``.zip`` or a folder); returns the path."""
    path = os.fspath(path)
    if path.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, content in sorted(files.items()):
                zf.writestr(name, json.dumps(content, indent=1, ensure_ascii=False))
        return path
    for name, content in files.items():
        target = os.path.join(path, *name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=1, ensure_ascii=False)
    return path
