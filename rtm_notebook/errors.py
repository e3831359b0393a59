"""Exceptions raised by rtm_notebook.

Every message here is written for the person at the notebook: it says what
went wrong and what to do. No exception ever carries a token.
"""

from __future__ import annotations

from typing import Any


class RTMError(Exception):
    """Base class of every error raised by rtm_notebook."""


class SlackClientError(RTMError):
    """Base of the client's errors, as in slackclient 2.x; raised itself when
    the client is used wrongly (bad callback, bad argument, wrong state)."""


class SlackApiError(SlackClientError):
    """A Web API call (``rtm.connect`` included) answered ``ok: false``, or could not be answered.

    ``response`` is the :class:`rtm_notebook.web.SlackResponse` (None when
    nothing was answered); the Slack error code is ``response["error"]``.
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


class ConnectRefusedError(SlackApiError):
    """The call that issues a socket URL failed with an error that retrying cannot fix.

    A :class:`SlackApiError` (so ``except SlackApiError`` around ``start()``
    catches it, as in slackclient 2.x): ``response`` is Slack's answer,
    ``error`` its error code, ``hint`` what to do (from the subclass's
    ``hints``, unless given).
    """

    #: which connection Slack refused, as the message names it
    what = "socket"
    hints: dict[str, str] = {}

    def __init__(self, error: str, hint: str | None = None, response: Any = None) -> None:
        self.hint = hint if hint is not None else self.hints.get(error, "")
        self._code = error
        super().__init__(f"Slack refused the {self.what} connection: {error}. {self.hint}".strip(), response)

    @property
    def error(self) -> str:
        return self._code


class RTMConnectError(ConnectRefusedError):
    """``rtm.connect``/``rtm.start`` failed with an error that retrying cannot fix."""

    what = "RTM"
    hints = FATAL_CONNECT_ERRORS


class SlackClientNotConnectedError(SlackClientError):
    """An operation needed an open socket and there is none (slackclient 2.x's name)."""


class ReplyError(SlackClientError):
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


class MessageTooLargeError(SlackClientError):
    """An outgoing frame is over Slack's 16 KB limit; it was not sent."""


class DeliveryError(SlackClientError):
    """A queued outgoing message could not be delivered (client stopped or gave up)."""
