"""Exceptions raised by rtm_notebook.

Every message here is written for the person at the notebook: it says what
went wrong and what to do. No exception ever carries a token.
"""

from __future__ import annotations

from typing import Any


class RTMError(Exception):
    """Base class of every error raised by rtm_notebook."""


class SlackClientError(RTMError):
    """The client was used wrongly (bad callback, bad argument, wrong state)."""


class SlackApiError(RTMError):
    """A Web API call answered ``ok: false`` (or could not be answered).

    ``response`` is the :class:`rtm_notebook.web.SlackResponse`; the Slack
    error code is ``response["error"]``.
    """

    def __init__(self, message: str, response: Any = None) -> None:
        super().__init__(message)
        self.response = response

    @property
    def error(self) -> str | None:
        try:
            return self.response["error"]
        except Exception:
            return None


# Slack error codes of rtm.connect / rtm.start that no retry can fix, with
# what the person should do about each (see shared PROTOCOL.md).
FATAL_CONNECT_ERRORS: dict[str, str] = {
    "not_authed": "No token was sent. Pass token=... or set SLACK_BOT_TOKEN.",
    "invalid_auth": "The token is not valid for this workspace. Check that you copied the whole bot token (xoxb-...).",
    "account_inactive": "The token belongs to a deleted user or a deactivated app. Create a new token.",
    "token_revoked": "The token was revoked. Reinstall the app to get a new one.",
    "token_expired": "The token has expired. Refresh or reissue it.",
    "missing_scope": "The token lacks a scope RTM needs. A classic app's bot token has them.",
    "not_allowed_token_type": (
        "RTM needs a classic Slack app's bot token (xoxb-... from a classic app). "
        "Modern Slack apps cannot use RTM: use Socket Mode instead."
    ),
    "team_disabled": "The workspace has been disabled.",
}


class RTMConnectError(RTMError):
    """``rtm.connect``/``rtm.start`` failed with an error that retrying cannot fix.

    ``error`` is Slack's error code; ``hint`` says what to do.
    """

    def __init__(self, error: str, hint: str | None = None) -> None:
        self.error = error
        self.hint = hint if hint is not None else FATAL_CONNECT_ERRORS.get(error, "")
        super().__init__(f"Slack refused the RTM connection: {error}. {self.hint}".strip())


class NotConnectedError(RTMError):
    """An operation needed an open RTM socket and there is none."""


class ReplyError(RTMError):
    """Slack answered a message sent over the socket with ``ok: false``.

    ``reply`` is the whole reply frame; ``code`` and ``msg`` come from its
    ``error`` object.
    """

    def __init__(self, reply: dict) -> None:
        self.reply = reply
        err = reply.get("error") or {}
        self.code = err.get("code") if isinstance(err, dict) else None
        self.msg = err.get("msg") if isinstance(err, dict) else str(err)
        super().__init__(f"Slack rejected message {reply.get('reply_to')}: {self.msg} (code {self.code})")


class MessageTooLargeError(RTMError):
    """An outgoing frame is over Slack's 16 KB limit; it was not sent."""


class DeliveryError(RTMError):
    """A queued outgoing message could not be delivered (client stopped or gave up)."""
