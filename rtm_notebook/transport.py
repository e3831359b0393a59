"""The seam between the session core and a transport (RTM, Socket Mode).

The core (:mod:`rtm_notebook.session`) owns everything a notebook sees:
state, reconnecting, recording, handlers, waiters, the outbox. A transport
owns only the wire: how a socket is asked for, what its frames mean, how
they are answered. What passes between them is below; nothing else does.

A transport gives the core:

* ``await transport.connect()`` → the answer of the call that issues a
  socket URL (``rtm.connect`` / ``apps.connections.open``) as a dict with
  at least ``url``. It raises a :class:`~rtm_notebook.errors.SlackApiError`
  for what no retry can fix (a bad token: the session stops and says what
  to do; the public type, so ``except SlackApiError`` around ``start()``
  catches it, as in slackclient 2.x) and :class:`Retry`
  for what a later attempt may fix (with Slack's ``Retry-After`` when it
  sent one).
* ``transport.link(answer, wiring)`` → a :class:`Link`: one socket, not
  opened yet.
* ``transport.control`` → the event types the core must show the link
  before anything else happens to them (RTM: ``goodbye``; Socket Mode:
  none, its link acts on its own ``disconnect`` frames). ``hello`` is the
  core's own: it means "connected" on both.

A link reads frames in order and for each received batch calls, on the
loop, ``wiring.record(frames, events, received_at, duplicates)`` (the
EventFrame's ``extend``; ``duplicates``: indices of redelivered envelopes,
or None; ``record`` is None when not recording) and then ``wiring.intake(event)`` for
each event. A frame that is no event becomes an ``error`` event passed as
``malformed(event, raw)`` so the core records it with its text. A transport
whose events must be acknowledged (Socket Mode) acknowledges each one
after ``record`` and before ``intake``, so no handler can delay an ack.
``wiring.sent(message, text)`` is called for every frame written (Socket
Mode: every ack that carries an answer; a plain ack is implied by the
envelope's row).

A link may also have (Socket Mode's do; the core reads them with getattr):

* ``wants_successor`` (an ``asyncio.Event``): set when the server asks the
  client to move to a new socket; the core opens the next link, waits for
  its ``greeted`` (an ``asyncio.Event`` set at hello) and only then closes
  this one, so nothing falls between the two;
* ``fatal``: an exception that ends the session once the link has ended
  (Socket Mode turned off for the app);
* ``retry_later``: why the server refused the socket (too many open); the
  core backs off as for a failed connect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rtm_notebook.errors import SlackApiError
from rtm_notebook.web import AsyncWebClient, retry_after

__all__ = ["ConnectionClosed", "Link", "Retry", "Transport", "Wiring", "ask_for_socket"]


class ConnectionClosed(ConnectionError):
    """The socket closed before a frame could be written (the message stays queued)."""


class Retry(Exception):
    """Asking for a socket failed in a way that a later attempt may fix.

    ``error`` is what a client that does not retry (``auto_reconnect=False``)
    raises instead: Slack's refusal as a SlackApiError.
    """

    def __init__(self, message: str, retry_after: float | None = None, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.error = error


@dataclass(frozen=True, slots=True)
class Wiring:
    """What the core hands a link: where its frames and events go."""

    number: int
    intake: Callable[..., None]
    sent: Callable[[dict, str], None]
    record: Callable[..., None] | None
    #: event type -> how many handlers are registered for it (those that may answer an interaction)
    listeners: Callable[[str], int] = lambda event_type: 0
    #: a frame that is no event, as an error event with its text: ``malformed(error, raw)`` records it
    #: under this link's number and dispatches it (default: ``intake(error, raw)``)
    malformed: Callable[[dict, Any], None] | None = None

    def __post_init__(self) -> None:
        if self.malformed is None:
            object.__setattr__(self, "malformed", self.intake)


class Link(Protocol):
    """One socket of a transport."""

    number: int
    #: id -> future of a sent message whose reply is awaited
    waiters: dict[int, Any]
    #: why the socket ended ("closed 1000", "goodbye", "stale: ...", "network: ...")
    end_reason: str | None

    async def open(self) -> None: ...
    async def run(self) -> str: ...
    async def send(self, message: dict) -> int: ...
    async def close(self) -> None: ...
    def control(self, event: dict) -> Any: ...  # an awaitable the core runs beside the read loop, or None
    def abandon(self) -> dict[int, Any]: ...


class Transport(Protocol):
    """How one kind of Slack socket is opened."""

    name: str
    control: frozenset[str]

    async def connect(self) -> dict: ...
    def link(self, answer: dict, wiring: Wiring) -> Link: ...
    async def aclose(self) -> None: ...


async def ask_for_socket(web: AsyncWebClient, method: str, fatal: Mapping[str, str],
                         refused: Callable[[str, Any], SlackApiError]) -> dict:
    """Call ``method`` (``rtm.connect``, ``apps.connections.open``); return its answer, which holds a ``url``.

    An error code in ``fatal`` raises ``refused(code, response)`` (no retry
    fixes it); HTTP 429 raises :class:`Retry` with Slack's ``Retry-After``;
    anything else, an answer without a URL included, raises :class:`Retry`.
    """
    try:
        resp = await web.api_call(method)
    except SlackApiError as exc:
        response = exc.response
        if exc.error in fatal:
            raise refused(exc.error, response) from None
        if response is not None and getattr(response, "status_code", None) == 429:
            raise Retry(f"{method} is rate limited (HTTP 429)", retry_after(response.headers), exc) from None
        raise Retry(str(exc), error=exc) from None
    data = dict(resp.data)
    if not isinstance(data.get("url"), str):
        why = f"{method} answered without a socket url"
        raise Retry(why, error=SlackApiError(why, resp))
    return data
