"""The Socket Mode transport: ``apps.connections.open`` issues a URL, :class:`SocketModeLink` reads it.

What the session core asks of a transport is in :mod:`rtm_notebook.transport`.
The app-level token travels only in the ``Authorization`` header of
``apps.connections.open`` (Slack refuses it as a form field).
"""

from __future__ import annotations

from typing import Any

import httpx

from rtm_notebook.errors import SlackApiError, SlackClientError
from rtm_notebook.socketmode.connection import SocketModeLink
from rtm_notebook.socketmode.protocol import FATAL_OPEN_ERRORS, Seen, SocketModeConnectError
from rtm_notebook.transport import Wiring, ask_for_socket
from rtm_notebook.web import AsyncWebClient

__all__ = ["SocketModeTransport"]


class SocketModeTransport:
    """Opens Socket Mode sockets for one client.

    ``seen`` is the client's memory of event ids; ``options`` are the
    client's HTTP options (``base_url``, ``timeout``, ``ssl``, ``proxy``,
    ``headers``); ``debug_reconnects`` asks Slack to end each socket after
    about 360 s (for trying reconnects out).
    """

    name = "socket_mode"
    control: frozenset[str] = frozenset()  # the link acts on its own disconnect frames

    def __init__(self, app_token: str | None, *, seen: Seen, ping_interval: float, debug_reconnects: bool,
                 options: dict[str, Any]) -> None:
        self.seen = seen
        self._ping_interval = ping_interval
        self._debug_reconnects = debug_reconnects
        self._options = options
        try:
            # No retries inside the call: the session's backoff decides when to ask again.
            self._web = AsyncWebClient(app_token, max_retries=0, **options)
        except SlackClientError:  # never echoed: say which token, and what it looks like
            raise SlackClientError("The app-level token is not a token: copy it again from Basic Information > "
                                   "App-Level Tokens (it looks like xapp-1-…).") from None
        self._http: httpx.AsyncClient | None = None
        self.closed = False

    async def connect(self) -> dict:
        """Call ``apps.connections.open``; return its answer (``url``).

        Raises :class:`SocketModeConnectError` for what no retry fixes (a bad
        or wrong kind of token, Socket Mode turned off) and :class:`Retry`
        for the rest, with Slack's ``Retry-After`` when rate limited.
        """
        data = await ask_for_socket(self._web, "apps.connections.open", FATAL_OPEN_ERRORS,
                                    lambda code, response: SocketModeConnectError(code, response=response))
        url = data["url"]
        if self._debug_reconnects:
            data["url"] = url + ("&" if "?" in url else "?") + "debug_reconnects=true"
        return data

    def link(self, answer: dict, wiring: Wiring) -> SocketModeLink:
        return SocketModeLink(answer["url"], wiring, seen=self.seen, respond=self.respond,
                              ping_interval=self._ping_interval, open_timeout=self._options.get("timeout", 30.0),
                              ssl=self._options.get("ssl"), proxy=self._options.get("proxy"))

    async def respond(self, url: str, body: dict) -> bool:
        """POST an answer to a ``response_url`` (no token: the URL is the credential).

        False, posting nothing, once the session has ended (the client was stopped).
        """
        if self.closed:
            return False
        if self._http is None:
            ssl = self._options.get("ssl")
            self._http = httpx.AsyncClient(timeout=self._options.get("timeout", 30.0),
                                           verify=True if ssl is None else ssl, proxy=self._options.get("proxy"))
        answer = await self._http.post(url, json=body)
        if answer.status_code != 200:
            raise SlackApiError(f"the response_url answered HTTP {answer.status_code}: {answer.text[:200]}", None)
        return True

    async def aclose(self) -> None:
        self.closed = True
        await self._web.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
