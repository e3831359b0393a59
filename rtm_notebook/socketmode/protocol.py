"""Socket Mode as pure logic: what an envelope carries, its ack, and which events were seen.

The rules come from ``shared/PROTOCOL.md`` ("Socket Mode"):

* every frame from Slack is a JSON object; an *envelope* has an
  ``envelope_id``, a ``type`` (``events_api``, ``slash_commands``,
  ``interactive``) and a ``payload``; other frames (``hello``,
  ``disconnect``) are control frames;
* every envelope is acknowledged by writing ``{"envelope_id": …}``, with a
  ``payload`` only where the envelope says ``accepts_response_payload``;
* an ``events_api`` envelope not acknowledged within 3 s comes again as a
  new envelope with the same ``event_id`` and ``retry_attempt`` 1, 2, 3.

Nothing here does I/O: :mod:`rtm_notebook.socketmode.connection` feeds
frames in and writes out what this module returns.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from rtm_notebook.errors import ConnectRefusedError, SlackApiError

__all__ = ["ANSWER_DEADLINE", "HANDOVER_REASONS", "FATAL_OPEN_ERRORS", "Seen", "SocketModeConnectError",
           "SocketModeDisabled", "ack_frame", "answer_payload"]

# Slack wants the ack within 3 s; an answer a handler gives later than this
# goes to the response_url instead, leaving the ack the time to arrive.
ANSWER_DEADLINE = 2.5
#: disconnect reasons that mean "move to a new socket": the next one opens before this one closes
HANDOVER_REASONS = frozenset(("warning", "refresh_requested"))

# apps.connections.open's errors that no retry fixes, and what to do about each.
FATAL_OPEN_ERRORS: dict[str, str] = {
    "not_authed": "No app-level token was sent. Pass app_token=... or set SLACK_APP_TOKEN (xapp-...).",
    "invalid_auth": ("The app-level token is not valid. Copy the whole token (xapp-...) from the app's "
                     "Basic Information page, App-Level Tokens."),
    "not_allowed_token_type": (
        "That is not an app-level token: Socket Mode opens with the xapp-... token (scope connections:write) "
        "from Basic Information > App-Level Tokens; pass the bot token (xoxb-...) as token=."),
    "missing_scope": "The app-level token lacks the connections:write scope. Generate one with that scope.",
    "account_inactive": "The token belongs to a deleted or deactivated app. Create a new token.",
    "token_revoked": "The app-level token was revoked. Generate a new one under Basic Information.",
    "token_expired": "The app-level token has expired. Generate a new one under Basic Information.",
    "access_denied": ("Socket Mode is turned off for this app. Turn it on under Settings > Socket Mode in the "
                      "app's settings (api.slack.com/apps), then connect again."),
    "team_disabled": "The workspace has been disabled.",
}


class SocketModeConnectError(ConnectRefusedError):
    """``apps.connections.open`` failed with an error that retrying cannot fix (``error``, ``hint``)."""

    what = "Socket Mode"
    hints = FATAL_OPEN_ERRORS


class SocketModeDisabled(SlackApiError):
    """Slack said ``link_disabled``: Socket Mode was turned off for the app; the client stops."""

    error = "link_disabled"

    def __init__(self) -> None:
        super().__init__("Slack closed the Socket Mode connection: link_disabled. Socket Mode was turned off in "
                         "the app's settings (api.slack.com/apps > Settings > Socket Mode); turn it on and "
                         "connect again.", None)


def ack_frame(envelope_id: str, payload: dict | None = None) -> bytes:
    """The text (UTF-8) of the ack for one envelope (with its answer, where it accepts one)."""
    if payload is None:
        return orjson.dumps({"envelope_id": envelope_id})
    return orjson.dumps({"envelope_id": envelope_id, "payload": payload})


def answer_payload(value: Any) -> dict | None:
    """A handler's return value as an answer: a str is its text, a dict is sent as it is, None is no answer.

    Raises TypeError for anything else (the handler's author sees why).
    """
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        return {"text": value}
    raise TypeError(f"a handler answers a slash command or interactive payload with a str or a dict "
                    f"(e.g. {{'text': ..., 'response_type': 'in_channel'}}), not {type(value).__name__}")


class Seen:
    """The event ids received lately, across connections: a redelivery of one is not dispatched again.

    Slack's last retry comes a few minutes after the first delivery; an id
    is kept for ``keep_for`` seconds and at most ``limit`` ids are kept (the
    oldest go first), so memory stays bounded under a firehose. ``ids``
    (id -> when first seen, oldest first) is written by the socket's read
    loop directly (a call per event cost more than the rest of the check),
    then :meth:`prune` runs once per batch.
    """

    def __init__(self, keep_for: float = 900.0, limit: int = 1_000_000) -> None:
        self.keep_for = keep_for
        self.limit = limit
        self.ids: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.ids

    def prune(self, now: float) -> None:
        """Forget the ids past ``keep_for`` and beyond ``limit`` (dicts keep insertion order: oldest first)."""
        ids = self.ids
        excess = len(ids) - self.limit
        if excess > 0:
            for key in list(itertools.islice(ids, excess)):
                del ids[key]
        horizon = now - self.keep_for
        while ids:
            oldest = next(iter(ids))
            if ids[oldest] >= horizon:
                break
            del ids[oldest]
