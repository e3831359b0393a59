"""SocketModeClient: the session core with Socket Mode beneath it.

::

    client = SocketModeClient(app_token="xapp-…", token="xoxb-…")
    @client.on("message")
    async def log(client, event): ...
    @client.on("/deploy")
    def deploy(client, event):
        return f"Deploying {event['text']}…"      # the command's answer
    await client.connect()

Handlers get the event an envelope carries: an Events API event has the
shape of the RTM event of the same type, so a handler written for RTM runs
unchanged. Slash commands are ``slash_command`` events (``on("/deploy")``
picks one command); interactive payloads keep their own types
(``block_actions``, ``shortcut``, ``message_action``, ``view_submission``,
``view_closed``). A handler for a slash command or an interactive payload
answers it by returning a str (the answer's text) or a dict (the answer
itself, e.g. ``{"text": …, "response_type": "in_channel"}`` or a view
submission's ``{"response_action": "errors", …}``): within about 2.5 s it
is the ack's payload where the envelope takes one; later, or for a block
action, it is posted to the payload's ``response_url``. Only handlers
registered for the type answer (a ``"*"`` handler sees the event, and its
return value is ignored); the first answer wins.
"""

from __future__ import annotations

import os
from typing import Any

from rtm_notebook.errors import SlackClientError
from rtm_notebook.loops import on_loop_thread, submit
from rtm_notebook.session import Session
from rtm_notebook.socketmode.protocol import Seen
from rtm_notebook.socketmode.transport import SocketModeTransport
from rtm_notebook.web import mask_token

__all__ = ["SocketModeClient"]


class SocketModeClient(Session):
    """A Slack Socket Mode client on the running event loop.

    ``app_token`` (default ``$SLACK_APP_TOKEN``) is the app-level token
    (``xapp-…``, scope ``connections:write``) that opens the socket; it is
    sent only to ``apps.connections.open``. ``token`` (default
    ``$SLACK_BOT_TOKEN``), the bot token, makes ``web_client``,
    ``send_message`` and ``say`` work. ``ping_interval``: seconds between
    WebSocket pings (a ping unanswered for half of it ends the socket).
    ``debug_reconnects``: ask Slack to end each socket after about 360 s.
    The other options are :class:`~rtm_notebook.session.Session`'s.
    """

    transport_name = "socket_mode"

    def __init__(self, app_token: str | None = None, token: str | None = None, *, ping_interval: float = 30,
                 debug_reconnects: bool = False, **options: Any) -> None:
        if not ping_interval or ping_interval <= 0:
            raise SlackClientError(f"ping_interval must be a positive number of seconds, not {ping_interval!r}")
        super().__init__(token if token is not None else os.environ.get("SLACK_BOT_TOKEN"), **options)
        app_token = app_token if app_token is not None else os.environ.get("SLACK_APP_TOKEN")
        self._app_token = app_token.strip() if isinstance(app_token, str) else app_token
        self.ping_interval = ping_interval
        self.debug_reconnects = debug_reconnects
        #: the event ids received lately, across sockets and restarts (redeliveries are not run again)
        self.seen = Seen()
        self._asked_who = False
        self._duplicates = 0  # of the sockets that have ended

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f" app_token={mask_token(self._app_token)!s}>"

    @property
    def app_token(self) -> str | None:
        """The app-level token; never shown in reprs, logs or errors. Settable while the client is not running."""
        return self._app_token

    @app_token.setter
    def app_token(self, value: str | None) -> None:
        if self._runner.running:
            raise SlackClientError("the client is running: stop() it before changing its app token")
        self._app_token = value.strip() if isinstance(value, str) else value

    def _transport(self) -> SocketModeTransport:
        return SocketModeTransport(self._app_token, seen=self.seen, ping_interval=self.ping_interval,
                                   debug_reconnects=self.debug_reconnects, options=self._http_options())

    def _hello(self) -> None:
        if self._token and (not self._asked_who or not self.directory.fetched):
            # apps.connections.open says nothing of the team or the bot: the bot token does.
            self._spawn(self._learn(), "auth")

    async def _learn(self) -> None:
        """Who the bot is (auth.test) and the names (for messages()), with the bot token.

        A failure is said once as an error event; events keep arriving without them.
        """
        try:
            web = self._web(is_async=True)
            if not self._asked_who:
                self._asked_who = True
                me = await web.api_call("auth.test")
                self.self = {"id": me.get("user_id"), "name": me.get("user")}
                self.team = {"id": me.get("team_id"), "name": me.get("team")}
            if not self.directory.fetched:
                await self.directory.fetch(web)
        except Exception as exc:
            self._emit_error("bot_token_failed", f"the bot token could not be used ({exc}); events still arrive, "
                             "but say(), send_message and names need a working token=", exc)

    @property
    def duplicates(self) -> int:
        """Redelivered events received again and not dispatched (their rows say ``duplicate``)."""
        link = self._link
        return self._duplicates + (link.duplicates if link is not None else 0)

    def _end_link(self, link: Any) -> None:
        self._duplicates += link.duplicates
        super()._end_link(link)

    def send_message(self, channel: str, text: str, *, thread_ts: str | None = None) -> Any:
        """Post a message as the bot (``chat.postMessage`` with the bot token); the result is Slack's answer.

        On the loop, an awaitable task; from another thread a
        ``concurrent.futures.Future``. Socket Mode's socket carries only
        acks, so this is the Web API, and needs ``token=``.
        """
        self._require_started()
        if not self._token:
            raise SlackClientError("send_message needs the bot token: SocketModeClient(app_token=..., token='xoxb-...')"
                                   " or set SLACK_BOT_TOKEN")
        fields = {"channel": channel, "text": text}
        if thread_ts is not None:
            fields["thread_ts"] = thread_ts
        coro = self._post(fields)
        if on_loop_thread(self.loop):
            return self._spawn(coro, "post")
        return submit(self.loop, coro)

    async def _post(self, fields: dict) -> Any:
        answer = await self._web(is_async=True).api_call("chat.postMessage", json=fields)
        self._sent({"type": "message", **fields, "ts": answer.get("ts")}, None)
        return answer
