"""RTMSession: the session core with RTM beneath it, and what only RTM can send.

::

    rtm = RTMSession(token)
    @rtm.on("message", match="hello")
    async def greet(client, event): ...
    await rtm.connect()
    reply = await rtm.send_message(channel, "hi")

The seed surface (slackclient 2.x's ``RTMClient``) is a layer over this
class in :mod:`rtm_notebook.seed`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from rtm_notebook.errors import SlackClientError
from rtm_notebook.rtm.protocol import Protocol
from rtm_notebook.rtm.transport import CONNECT_METHODS, RTMTransport
from rtm_notebook.session import Session

__all__ = ["RTMSession"]


def _check(message: dict) -> None:
    # Numbering is the socket's; this only applies the size and shape rules.
    Protocol().prepare(message)


class RTMSession(Session):
    """A Slack RTM client on the running event loop.

    ``token`` defaults to ``$SLACK_BOT_TOKEN``. ``connect_method`` is
    ``"rtm.connect"`` (the default) or ``"rtm.start"`` (deprecated by Slack;
    its answer also holds users and channels); ``ping_interval`` is the
    seconds of silence before an RTM ping (a ping unanswered as long again
    means the socket is dead). The other options are
    :class:`~rtm_notebook.session.Session`'s.
    """

    transport_name = "rtm"

    def __init__(self, token: str | None = None, *, connect_method: str | None = None, ping_interval: float = 30,
                 **options: Any) -> None:
        connect_method = connect_method or "rtm.connect"
        if connect_method not in CONNECT_METHODS:
            raise SlackClientError(f"connect_method must be 'rtm.connect' or 'rtm.start', not {connect_method!r}")
        if not ping_interval or ping_interval <= 0:
            raise SlackClientError(f"ping_interval must be a positive number of seconds, not {ping_interval!r}")
        super().__init__(token if token is not None else os.environ.get("SLACK_BOT_TOKEN"), **options)
        self.connect_method = connect_method
        self.ping_interval = ping_interval
        self._presence_ids: list[str] | None = None

    def _transport(self) -> RTMTransport:
        return RTMTransport(self._token, connect_method=self.connect_method, ping_interval=self.ping_interval,
                            options=self._http_options())

    def _connected(self, answer: dict) -> None:
        self.team = answer.get("team")
        self.self = answer.get("self")
        self.directory.learn(answer)

    def _hello(self) -> None:
        # A presence subscription belongs to a socket: sent again on each one.
        if self._presence_ids is not None and not self.outbox.holds("presence_sub"):
            self.outbox.put(self.loop, {"type": "presence_sub", "ids": self._presence_ids}, True, False)
        if not self.directory.fetched and self.connect_method == "rtm.connect":
            # rtm.start brings names in its snapshot; rtm.connect does not.
            self._spawn(self.directory.fetch(self._web(is_async=True)), "names")

    def send_message(self, channel: str, text: str, *, thread_ts: str | None = None) -> Any:
        """Send a message over the socket; the result is Slack's reply (with ``ts``).

        On the loop, an awaitable future (``reply = await
        rtm.send_message(...)``); from another thread a
        ``concurrent.futures.Future``. It raises ReplyError on an error reply
        and DeliveryError if the message could not be delivered. Not being
        connected raises SlackClientNotConnectedError here; then text over
        4,000 characters or a frame over 16 KB raises MessageTooLargeError,
        before anything is queued. Messages are paced to Slack's one per
        second; while reconnecting they wait.
        """
        message = {"type": "message", "channel": channel, "text": text}
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
        return self._submit(message, paced=True, want_reply=True, check=_check)

    def send_over_websocket(self, *, payload: dict) -> Any:
        """Seed API: send ``payload`` (an ``id`` is added when missing); a future of the message id."""
        paced = payload.get("type") != "ping" if isinstance(payload, dict) else True
        return self._submit(payload, paced=paced, want_reply=False, check=_check)

    def ping(self) -> Any:
        """Send an RTM ``ping`` (Slack answers with a ``pong``); a future of its id."""
        return self._submit({"type": "ping"}, paced=False, want_reply=False, check=_check)

    def typing(self, *, channel: str) -> Any:
        """Show "typing" in ``channel``; a future of the message id."""
        return self._submit({"type": "typing", "channel": channel}, paced=True, want_reply=False, check=_check)

    def subscribe_presence(self, ids: Iterable[str]) -> Any:
        """Subscribe to ``presence_change`` for these user ids (the full set, at most 500).

        The client sends the subscription again after every reconnect.
        """
        ids = list(ids)
        if len(ids) > 500 or not all(isinstance(i, str) for i in ids):
            raise SlackClientError("subscribe_presence takes at most 500 user ids (strings), the full set each time")
        sent = self._submit({"type": "presence_sub", "ids": ids}, paced=True, want_reply=False, check=_check)
        self._presence_ids = ids
        return sent
