"""slack-app-manifest.yml creates a Socket Mode app that the notebooks work with, in one paste.

Slack refuses a manifest it cannot read as a whole, and an app that is
created but has Socket Mode off, no app token scope to open a socket with, or
an event without the scope it needs, fails only later, at connect or at
install. These checks follow Slack's manifest reference: the sections and
keys it knows, its length and character limits, and Socket Mode's needs (no
request URLs; interactivity on for button clicks to arrive at all).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "slack-app-manifest.yml"
NOTEBOOK = ROOT / "notebooks" / "05-socket-mode.ipynb"

# The keys Slack's manifest reference lists for the sections this manifest uses.
KNOWN = {
    "": {"_metadata", "display_information", "features", "oauth_config", "settings"},
    "display_information": {"name", "description", "long_description", "background_color"},
    "features": {"app_home", "bot_user", "shortcuts", "slash_commands", "unfurl_domains"},
    "features.app_home": {"home_tab_enabled", "messages_tab_enabled", "messages_tab_read_only_enabled"},
    "features.bot_user": {"display_name", "always_online"},
    "oauth_config": {"scopes", "redirect_urls"},
    "oauth_config.scopes": {"bot", "user"},
    "settings": {"event_subscriptions", "interactivity", "org_deploy_enabled", "socket_mode_enabled",
                 "token_rotation_enabled", "allowed_ip_address_ranges"},
    "settings.event_subscriptions": {"bot_events", "user_events", "request_url"},
    "settings.interactivity": {"is_enabled", "request_url", "message_menu_options_url"},
}
SLASH_COMMAND_KEYS = {"command", "description", "usage_hint", "should_escape", "url"}

# The bot scope each subscribed event needs (Slack's Events API reference).
EVENT_SCOPES = {
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "message.mpim": "mpim:history",
    "app_mention": "app_mentions:read",
    "reaction_added": "reactions:read",
    "reaction_removed": "reactions:read",
    "member_joined_channel": "channels:read",
    "channel_created": "channels:read",
    "channel_rename": "channels:read",
    "team_join": "users:read",
    "user_change": "users:read",
}
# What the notebooks call: history backfill, names, posting, the slash command.
NOTEBOOK_SCOPES = {"channels:history", "groups:history", "im:history", "mpim:history", "channels:read",
                   "users:read", "chat:write", "commands", "reactions:read", "app_mentions:read"}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def _sections(manifest: dict):
    for path, keys in KNOWN.items():
        node = manifest
        for part in filter(None, path.split(".")):
            node = node.get(part, {})
        yield path, node, keys


def test_only_keys_slack_knows(manifest):
    for path, node, keys in _sections(manifest):
        assert isinstance(node, dict), f"{path or 'the top level'} must be a mapping"
        unknown = set(node) - keys
        assert not unknown, f"{path or 'the top level'}: Slack does not know {sorted(unknown)}"
    for command in manifest["features"]["slash_commands"]:
        assert set(command) <= SLASH_COMMAND_KEYS, command


def test_socket_mode_settings(manifest):
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is True
    assert settings["org_deploy_enabled"] is False
    assert settings["token_rotation_enabled"] is False  # rotating bot tokens would expire SLACK_BOT_TOKEN in 12 h
    assert settings["interactivity"]["is_enabled"] is True  # else block_actions never arrive
    # Socket Mode: Slack sends everything over the socket; a request URL would make it POST there instead.
    text = json.dumps(manifest)
    assert "request_url" not in text and '"url"' not in text


def test_names_within_slack_limits(manifest):
    info = manifest["display_information"]
    assert 0 < len(info["name"]) <= 35
    assert len(info.get("description", "")) <= 140
    assert re.fullmatch(r"#(?:[0-9a-fA-F]{3}){1,2}", info.get("background_color", "#000"))
    bot = manifest["features"]["bot_user"]
    assert re.fullmatch(r"[a-z0-9._-]{1,80}", bot["display_name"]), bot["display_name"]


def test_deploy_command(manifest):
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert "/deploy" in commands
    for name, command in commands.items():
        assert re.fullmatch(r"/[a-z0-9_-]{1,31}", name), name
        assert command.get("description"), f"{name} needs a description"
        assert isinstance(command.get("should_escape", False), bool)
    assert "commands" in manifest["oauth_config"]["scopes"]["bot"]


def test_every_event_has_its_scope(manifest):
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert len(events) == len(set(events)) and len(scopes) == len(manifest["oauth_config"]["scopes"]["bot"])
    for event in events:
        assert event in EVENT_SCOPES, f"add {event}'s scope to EVENT_SCOPES (and to the manifest)"
        assert EVENT_SCOPES[event] in scopes, f"{event} needs the bot scope {EVENT_SCOPES[event]}"
    assert {"message.channels", "message.groups", "message.im", "message.mpim", "app_mention",
            "reaction_added", "reaction_removed"} <= set(events)
    assert NOTEBOOK_SCOPES <= scopes, NOTEBOOK_SCOPES - scopes


def test_the_notebook_commands_are_declared(manifest):
    """A slash command the Socket Mode notebook handles must exist in the app, or Slack never sends it."""
    source = "".join("".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code")
    handled = set(re.findall(r"""@client\.on\(["'](/[\w-]+)["']""", source))
    assert handled, "the notebook handles no slash command"
    assert handled <= {c["command"] for c in manifest["features"]["slash_commands"]}
