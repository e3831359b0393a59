"""The reconnect loop of one session: ask for a socket, read it, hand over to the next, again.

:class:`Reconnector` is what :meth:`Session._session` runs: the policy
(backoff that resets after a healthy socket, Slack's ``Retry-After``, fatal
codes that end the session) and the handover a link may ask for (Socket
Mode's ``disconnect``: the next socket opens while this one reads on, so
nothing falls in between). It works on its session's state; what passes
between the core and a transport is in :mod:`rtm_notebook.transport`.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import random
import time
from typing import TYPE_CHECKING

from rtm_notebook.directory import NAMING_EVENTS
from rtm_notebook.errors import SlackClientError, SlackClientNotConnectedError
from rtm_notebook.transport import Link, Retry, Transport, Wiring

if TYPE_CHECKING:  # the session it runs, for type checks only
    from rtm_notebook.session import Session

__all__ = ["Backoff", "Reconnector", "State"]

log = logging.getLogger(__name__)

# Reconnect backoff (see Backoff); module constants so tests can shorten them.
RECONNECT_BASE = 1.0
RECONNECT_MAX = 60.0
HEALTHY_AFTER = 10.0
# A successor socket that has not said hello by then is given up on (the old one reads on).
HANDOVER_HELLO_TIMEOUT = 10.0
# After a handover the old socket reads on until the server closes it (Slack
# closes it soon after the disconnect); past this the client closes it.
HANDOVER_CLOSE_AFTER = 10.0


class State(enum.StrEnum):
    """A client's state; each value is the string it always was (``rtm.state == "connected"``)."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


class Backoff:
    """When to ask for a socket again.

    The first retry after a healthy session (one that said hello and lasted
    ``HEALTHY_AFTER`` seconds) is immediate, then 1 s, 2 s, 4 s ... up to a
    minute (Slack asks for about one connect call a minute when reconnecting
    repeatedly), each with jitter; Slack's ``Retry-After`` is waited exactly.
    """

    def __init__(self) -> None:
        self.attempt = 0

    def failed(self, retry_after: float | None = None) -> float:
        self.attempt += 1
        return retry_after if retry_after is not None else self.delay()

    def ended(self, lasted: float | None) -> float:
        """A socket ended after ``lasted`` seconds since hello (None: no hello)."""
        self.attempt = 0 if lasted is not None and lasted >= HEALTHY_AFTER else self.attempt + 1
        return self.delay()

    def delay(self) -> float:
        if self.attempt <= 0:
            return 0.0
        return min(RECONNECT_MAX, RECONNECT_BASE * 2 ** (self.attempt - 1)) * random.uniform(0.5, 1.0)


class Reconnector:
    """One run of a session's sockets (see the module docs); made by :meth:`Session._session`."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def run(self) -> None:
        s = self.session
        transport: Transport | None = None
        backoff = Backoff()
        delay = 0.0
        try:
            try:
                transport = s._transport()
            except SlackClientError as exc:  # a token that cannot be sent at all: say so and stop
                s._end(exc)
                return
            while True:
                opened = await self._open(transport, backoff, delay)
                if opened is None:
                    return
                link = await self._run_links(transport, backoff, *opened)
                fatal = getattr(link, "fatal", None)
                if fatal is not None:
                    s._end(fatal)
                if s._runner.ended_by is not None:
                    return
                lasted = None if s._hello_at is None else time.monotonic() - s._hello_at
                reason = link.end_reason or "ended"
                refused = getattr(link, "retry_later", None)
                if not s.auto_reconnect:
                    if refused is not None:
                        s._emit_error("socket_refused", refused)
                    log.info("connection #%s ended (%s); auto_reconnect is off", link.number, reason)
                    s._set_state(State.DISCONNECTED)
                    return
                if refused is not None:
                    # Refused, not ended: the backoff grows as for a failed connect.
                    delay = backoff.failed()
                    s._emit_error("socket_refused", f"{refused} (retrying in {delay:.1f} s)")
                else:
                    delay = backoff.ended(lasted)
                log.info("connection #%s ended (%s); reconnecting in %.1f s", link.number, reason, delay)
                s._set_state(State.RECONNECTING)
        except asyncio.CancelledError:
            # stop() ends the session by cancelling it; to whoever awaits the
            # task start() returned, that is a normal end.
            if not s._runner.stopping:
                raise
        finally:
            if transport is not None:
                await transport.aclose()
            runner = s._runner
            if (runner.ended_by is not None or runner.stopping) and not runner.released:
                await runner.release()  # nothing will run again

    async def _open(self, transport: Transport, backoff: Backoff, delay: float) -> tuple[Link, dict] | None:
        """Ask for a socket and open it, retrying as the backoff says; None: the session has ended."""
        s = self.session
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                answer = await transport.connect()
                self._take_answer(answer)
            except (SlackClientError, Retry) as exc:
                if isinstance(exc, Retry) and s.auto_reconnect:
                    delay = backoff.failed(exc.retry_after)
                    s._emit_error("connect_failed", f"{exc} (retrying in {delay:.1f} s)", exc.error)
                    self._reconnecting()
                    continue
                s._end(exc.error if isinstance(exc, Retry) and exc.error is not None else exc)
                return None
            s.connection_number += 1
            number = s.connection_number
            record = functools.partial(s._record_batch, number) if s._record is not None else None
            # Rows a link records carry its own number, also while a successor opens beside it.
            wiring = Wiring(number, s._intake, functools.partial(s._sent, connection=number), record, s._listeners,
                            functools.partial(s._malformed, number))
            link = transport.link(answer, wiring)
            try:
                await link.open()
            except (OSError, TimeoutError, ValueError) as exc:
                why = f"could not open the socket ({type(exc).__name__}: {exc})"
                if not s.auto_reconnect:
                    s._end(SlackClientNotConnectedError(why))
                    return None
                delay = backoff.failed()
                s._emit_error("socket_failed", f"{why} (retrying in {delay:.1f} s)", exc)
                self._reconnecting()
                continue
            s._control_types = frozenset(("hello",)) | NAMING_EVENTS | transport.control
            return link, answer

    def _reconnecting(self) -> None:
        s = self.session
        # While a link still reads (a handover in progress), the client is connected.
        if s._link is None:
            s._set_state(State.RECONNECTING)

    def _take_answer(self, answer: dict) -> None:
        s = self.session
        try:
            s._connected(answer)
        except Exception as exc:
            # A bug reading an answer must not end the session task and leave
            # the client "connecting" for ever: record it and ask again.
            s.last_error = exc
            log.exception("could not read the connect answer")
            raise Retry(f"could not read the connect answer ({type(exc).__name__}: {exc})", error=exc) from None

    async def _run_links(self, transport: Transport, backoff: Backoff, link: Link, answer: dict) -> Link:
        """Read ``link`` and every link it hands over to; return the last one, ended.

        A link that asks for a successor (Socket Mode's ``disconnect``:
        ``warning``, ``refresh_requested``) keeps reading while the next one
        opens; it is closed once the next one has said hello, so nothing
        falls between the two. RTM's links never ask.
        """
        s = self.session
        run = s._spawn(self._run_link(link, answer), f"link-{link.number}")
        while True:
            wanted = getattr(link, "wants_successor", None)
            if wanted is None:
                await asyncio.wait([run])
                return link
            asked = s._spawn(wanted.wait(), f"handover-{link.number}")
            try:
                await asyncio.wait([run, asked], return_when=asyncio.FIRST_COMPLETED)
            finally:
                asked.cancel()
            if run.done():
                return link
            successor = await self._successor(transport, backoff, link, run)
            if successor is None:  # the session ended meanwhile
                await link.close()
                await asyncio.wait([run])
                return link
            link, run = successor

    async def _successor(self, transport: Transport, backoff: Backoff, old: Link,
                         old_run: asyncio.Task) -> tuple[Link, asyncio.Task] | None:
        """Open the link that takes over from ``old`` (which reads on meanwhile); None: the session ended.

        The new link becomes the client's link at its hello. If ``old`` ends
        first, no socket reads any more: the client is reconnecting until then.
        """
        s = self.session
        loop = asyncio.get_running_loop()
        delay = 0.0
        while True:
            opened = await self._open(transport, backoff, delay)
            if opened is None:
                return None
            link, answer = opened
            run = s._spawn(self._run_link(link, answer, current=False), f"link-{link.number}")
            greeted = s._spawn(link.greeted.wait(), f"hello-{link.number}")
            watched = [run, greeted] if old_run.done() else [run, greeted, old_run]
            deadline = loop.time() + HANDOVER_HELLO_TIMEOUT
            try:
                while not (run.done() or greeted.done()) and loop.time() < deadline:
                    await asyncio.wait(watched, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED)
                    if old_run in watched and old_run.done():
                        watched.remove(old_run)
                        if not link.greeted.is_set():
                            s._set_state(State.RECONNECTING)
            finally:
                greeted.cancel()
            if link.greeted.is_set():
                s._link = link
                if old.end_reason is None:
                    old.end_reason = f"handed over to connection #{link.number}"
                s._spawn(self._retire(old, old_run), f"retire-{old.number}")
                return link, run
            # No hello (refused, or too slow): this one goes; the old one reads on, if it still does.
            await link.close()
            await asyncio.wait([run])
            fatal = getattr(link, "fatal", None)
            if fatal is not None:
                s._end(fatal)
                return None
            delay = backoff.failed()
            stays = "is gone" if old_run.done() else "stays"
            s._emit_error("handover_failed", f"connection #{link.number} said no hello ({link.end_reason}); "
                          f"connection #{old.number} {stays}, next try in {delay:.1f} s")

    async def _retire(self, old: Link, old_run: asyncio.Task) -> None:
        """Let a handed-over socket end: the server closes it once it has written what it routed there.

        Closing it first would lose the acks of whatever the server wrote
        after the client's close frame (a client may send nothing after
        it), and the server would redeliver all of that.
        """
        await asyncio.wait([old_run], timeout=HANDOVER_CLOSE_AFTER)
        if not old_run.done():
            await old.close()
            await asyncio.wait([old_run])

    async def _run_link(self, link: Link, answer: dict, current: bool = True) -> str:
        """Read one link to its end. ``current``: it is the client's link from the
        start (a successor becomes it at its hello, see _successor)."""
        s = self.session
        if current:
            s._link = link
            s._hello_at = None
        sender = s._spawn(s.outbox.run(link), f"sender-{link.number}")
        try:
            s._emit_open(answer)
            return await link.run()
        finally:
            sender.cancel()
            await asyncio.wait([sender])
            await link.close()
            if s._link is link:
                s._link = None
                s.outbox.open = False
            s._end_link(link)
