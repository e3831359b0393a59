"""The RTM transport: ``rtm.connect`` / ``rtm.start`` issue a URL, :class:`Connection` reads it.

What the session core asks of a transport is in :mod:`rtm_notebook.transport`.
"""

from __future__ import annotations

import logging
from typing import Any

from rtm_notebook.errors import FATAL_CONNECT_ERRORS, RTMConnectError
from rtm_notebook.rtm.connection import Connection
from rtm_notebook.transport import Wiring, ask_for_socket
from rtm_notebook.web import AsyncWebClient

__all__ = ["RTMTransport", "CONNECT_METHODS"]

log = logging.getLogger(__name__)

CONNECT_METHODS = ("rtm.connect", "rtm.start")


class RTMTransport:
    """Opens RTM sockets for one client.

    ``options`` are the HTTP options of the client (``base_url``,
    ``timeout``, ``ssl``, ``proxy``, ``headers``); the token goes only into
    the ``Authorization`` header of the connect call.
    """

    name = "rtm"
    control = frozenset(("goodbye",))

    def __init__(self, token: str | None, *, connect_method: str, ping_interval: float,
                 options: dict[str, Any]) -> None:
        self.connect_method = connect_method
        self._ping_interval = ping_interval
        self._options = options
        # No retries inside the call: the session's backoff decides when to ask again.
        self._web = AsyncWebClient(token, max_retries=0, **options)

    async def connect(self) -> dict:
        """Call the connect method; return its answer (``url``, ``team``, ``self``, ...).

        Raises :class:`RTMConnectError` for Slack's fatal codes and
        :class:`Retry` for everything a later attempt may fix.
        """
        return await ask_for_socket(self._web, self.connect_method, FATAL_CONNECT_ERRORS,
                                    lambda code, response: RTMConnectError(code, response=response))

    def link(self, answer: dict, wiring: Wiring) -> Connection:
        # A ping unanswered for as long as the silence that prompted it means the socket is dead.
        return Connection(answer["url"], wiring, ping_interval=self._ping_interval, pong_timeout=self._ping_interval,
                          open_timeout=self._options.get("timeout", 30.0), ssl=self._options.get("ssl"),
                          proxy=self._options.get("proxy"))

    async def aclose(self) -> None:
        await self._web.aclose()
