"""Reading a Slack export (a zip or an unpacked folder) into messages, with names.

The format (``shared/PROTOCOL.md``, "Slack exports"): ``users.json``,
``channels.json`` (public), ``groups.json`` (private), ``dms.json`` and
``mpims.json`` where included (``org_users.json`` on Enterprise Grid), and a
folder per conversation (the channel's name, or the DM's id) with one
``YYYY-MM-DD.json`` per day: a JSON array of messages in
``conversations.history`` shape. A message does not say its channel; the
folder's entry in the channel files does, and :func:`read_export` adds it.

Nothing is fatal but a path that is no export: a file that is not UTF-8,
not JSON, cut short, or not a list of messages is reported with its name
(an :class:`ExportWarning`) and skipped, a message without a ``ts`` too,
and the rest is read. A zip is read in memory, never extracted, so an
entry whose path climbs out of the export (``../``) writes nothing; it is
skipped and reported.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Export", "ExportWarning", "read_export"]

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}\.json")
_CONVERSATION_FILES = ("channels.json", "groups.json", "mpims.json", "dms.json")


class ExportWarning(UserWarning):
    """A part of a Slack export could not be read; it was skipped, the rest was read."""


@dataclass
class Export:
    """What :func:`read_export` found: messages (each with its ``channel``), oldest first,
    and the names the export's own files give users and conversations."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    user_names: dict[str, str] = field(default_factory=dict)
    channel_names: dict[str, str] = field(default_factory=dict)
    #: one line per part skipped, each naming its file
    problems: list[str] = field(default_factory=list)


class _Files:
    """An export's files by relative POSIX path, from a folder or a zip."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        if os.path.isdir(path):
            self._zip = None
            names = []
            for root, _dirs, files in os.walk(path):
                for name in files:
                    names.append(os.path.relpath(os.path.join(root, name), path).replace(os.sep, "/"))
        elif zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            names = []
            for info in self._zip.infolist():
                name = posixpath.normpath(info.filename)
                if info.is_dir():
                    continue
                if name.startswith(("../", "/")) or name == ".." or re.match(r"[A-Za-z]:", name):
                    problems.append(f"{info.filename}: its path climbs out of the export; skipped, nothing written")
                    continue
                names.append(info.filename)
        elif os.path.exists(path):
            raise ValueError(f"{path} is neither a folder nor a zip file; a Slack export is one of the two")
        else:
            raise FileNotFoundError(f"no Slack export at {path}")
        # What macOS adds to a zip or a folder is not part of the export.
        names = [n for n in names if not n.startswith("__MACOSX/") and posixpath.basename(n) != ".DS_Store"]
        # An export zipped (or unpacked) with its folder around it: read below that folder.
        tops = {n.split("/", 1)[0] for n in names}
        self.prefix = ""
        if len(tops) == 1 and all("/" in n for n in names) and not any(n in _CONVERSATION_FILES for n in names):
            self.prefix = next(iter(tops)) + "/"
        self.names = sorted(n[len(self.prefix):] for n in names if n.startswith(self.prefix))

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(self.prefix + name)
        with open(os.path.join(self.path, *(self.prefix + name).split("/")), "rb") as f:
            return f.read()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _json(files: _Files, name: str, problems: list[str]) -> Any:
    """The file's JSON, or None (reported) when it cannot be read."""
    try:
        text = files.read(name).decode("utf-8-sig")  # a byte-order mark, as some editors write, is no error
    except UnicodeDecodeError as exc:
        problems.append(f"{name}: not UTF-8 (byte {exc.start}); skipped")
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}: "
                        "cut short?); skipped")
        return None


def _objects(files: _Files, name: str, problems: list[str]) -> list[dict]:
    if name not in files.names:
        return []
    data = _json(files, name, problems)
    if data is None:
        return []
    if not isinstance(data, list):
        problems.append(f"{name}: not a JSON list; skipped")
        return []
    return [item for item in data if isinstance(item, dict)]


def _user_name(user: dict) -> str:
    profile = user.get("profile") if isinstance(user.get("profile"), dict) else {}
    return str(user.get("name") or profile.get("display_name") or profile.get("real_name") or user.get("id"))


def read_export(path: str | os.PathLike, *, warn: bool = True) -> Export:
    """Read the Slack export at ``path`` (see the module docs). Each problem is
    also issued as an :class:`ExportWarning` unless ``warn`` is False."""
    path = os.fspath(path)
    out = Export()
    files = _Files(path, out.problems)
    try:
        _read(files, out)
    finally:
        files.close()
    if warn:
        for problem in out.problems:
            warnings.warn(f"{path}: {problem}", ExportWarning, stacklevel=2)
    return out


def _read(files: _Files, out: Export) -> None:
    problems = out.problems
    if "users.json" not in files.names:
        problems.append("users.json: missing; user names are not resolved")
    for name in ("users.json", "org_users.json"):
        for user in _objects(files, name, problems):
            if isinstance(user.get("id"), str):
                out.user_names[user["id"]] = _user_name(user)
    folders: dict[str, str] = {}  # folder name -> conversation id
    for name in _CONVERSATION_FILES:
        for conv in _objects(files, name, problems):
            cid = conv.get("id")
            if not isinstance(cid, str):
                continue
            folders[cid] = cid  # a DM's folder is its id; some tools name MPIM folders by id too
            name_ = conv.get("name")
            if name != "dms.json" and isinstance(name_, str):
                folders[name_] = cid
                out.channel_names[cid] = name_
    days = [n for n in files.names if n.count("/") == 1 and _DAY.fullmatch(n.split("/")[1])]
    if not days and not folders:
        raise ValueError(f"{files.path} does not look like a Slack export: no channels.json, groups.json, "
                         "dms.json or mpims.json, and no conversation folders of YYYY-MM-DD.json files")
    unknown: set[str] = set()
    for name in days:
        folder = name.split("/")[0]
        channel = folders.get(folder)
        if channel is None:
            unknown.add(folder)
            channel = folder
        data = _json(files, name, problems)
        if data is None:
            continue
        if not isinstance(data, list):
            problems.append(f"{name}: not a JSON list of messages; skipped")
            continue
        no_ts = 0
        for message in data:
            if not isinstance(message, dict) or not isinstance(message.get("ts"), str):
                no_ts += 1
                continue
            out.messages.append({**message, "channel": channel})
        if no_ts:
            problems.append(f"{name}: {no_ts} message(s) without a ts string skipped")
    for folder in sorted(unknown):
        problems.append(f"{folder}/: in no channels file; its messages carry the folder name as their channel")
    out.messages.sort(key=lambda m: (_ts_key(m["ts"]), m["channel"]))


def _ts_key(ts: str) -> float:
    try:
        seconds = float(ts)
    except ValueError:
        return float("inf")  # an odd ts sorts last and is kept as it is
    return seconds if seconds == seconds else float("inf")  # and so does "nan"
