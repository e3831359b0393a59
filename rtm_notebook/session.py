"""The session core: one client's lifecycle on the loop that owns it, whatever the transport.

It owns the state, the intake (every event recorded once in the
:class:`~rtm_notebook.events.EventFrame`, then dispatched once, in order, to
each matching handler's own queue, then to the taps), the waiters and the
paced outbox; the reconnect loop it runs (backoff, handover, fatal codes)
is :mod:`rtm_notebook.reconnect`'s. It knows no wire format:
a transport (:mod:`rtm_notebook.transport`) opens sockets and turns frames
into events. :class:`~rtm_notebook.rtm.client.RTMSession` puts RTM under it.

Inside a running loop (a Jupyter cell, ``asyncio.run``) ``start()``
schedules the session as a task and returns it at once; in a plain script
it blocks until :meth:`stop` or Ctrl-C. It never patches asyncio, never
calls ``run_until_complete`` on a running loop and installs no signal
handlers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

from rtm_notebook.directory import NAMING_EVENTS, Directory
from rtm_notebook.errors import DeliveryError, SlackClientError, SlackClientNotConnectedError
from rtm_notebook.events import EventFrame
from rtm_notebook.handlers import ErrorEvent, Handler, HandlerRegistry, event_types
from rtm_notebook.history import Backfill, channel_ids
from rtm_notebook.loops import on_loop_thread
from rtm_notebook.outbox import Outbox
from rtm_notebook.reconnect import Backoff, Reconnector, State
from rtm_notebook.runner import Runner
from rtm_notebook.transport import Link, Transport
from rtm_notebook.waiters import Waiters
from rtm_notebook.web import DEFAULT_BASE_URL, AsyncWebClient, WebClient, WebClients, mask_token

__all__ = ["Session", "State", "Backoff"]

log = logging.getLogger(__name__)

_time = time.time

_IDLE = (State.DISCONNECTED, State.STOPPED)


class Session:
    """A Slack socket client on the running event loop; subclasses give the transport.

    ``auto_reconnect``: open a new socket when one ends or fails (off: the
    first failure ends the session). ``loop``: the loop a script runs on
    (default: the caller's current one); ``run_async``: ``start()`` returns
    the task instead of running it, as in slackclient 2.x. ``record_to`` (a
    JSON-lines path) and ``max_rows`` go to the EventFrame; ``record=False``
    keeps nothing. ``user_names`` / ``channel_names`` map ids to the names
    learnt so far (for :meth:`messages`).
    ``timeout``, ``ssl``, ``proxy``, ``headers`` and ``base_url`` are the
    HTTP options of the Web API and of the socket.
    """

    #: the notebook layer's live-log factory (it registers itself here: the core imports no notebook code)
    view_factory: ClassVar[Callable[[Session], Any] | None] = None
    #: the ``transport`` column of the rows this client records (EventFrame.transport): "rtm", "socket_mode"
    transport_name: ClassVar[str | None] = None

    def __init__(self, token: str | None, *, auto_reconnect: bool = True, ssl: Any = None, proxy: str | None = None,
                 timeout: float = 30, base_url: str = DEFAULT_BASE_URL, headers: dict | None = None,
                 loop: asyncio.AbstractEventLoop | None = None, run_async: bool = False,
                 record_to: str | os.PathLike | None = None, max_rows: int | None = None, record: bool = True) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise SlackClientError(f"base_url must be an http(s) URL like {DEFAULT_BASE_URL!r}, not {base_url!r}")
        if not record and record_to is not None:
            raise SlackClientError("record=False keeps no events, so there is nothing to write to record_to; "
                                   "drop one of the two")
        self._token = token.strip() if isinstance(token, str) else token  # as slackclient does
        self.auto_reconnect = auto_reconnect
        self.ssl, self.proxy, self.timeout = ssl, proxy, timeout
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.headers = dict(headers or {})
        self.event_frame = EventFrame(max_rows=max_rows, record_to=record_to)
        # EventFrame.append without its argument checks: what the client passes is valid.
        self._record = self.event_frame._add if record else None
        self.counts: Counter = Counter()
        self.handlers = HandlerRegistry(self, on_error=self._handler_failed)
        self._taps: tuple[Callable[[dict], None], ...] = ()
        self.connection_number = 0
        self.last_error: BaseException | None = None
        self._log: Any = None
        self.directory = Directory()
        self.user_names, self.channel_names = self.directory.users, self.directory.channels
        self.outbox = Outbox()
        self._state = State.DISCONNECTED
        self._runner = Runner(self, loop=loop, run_async=run_async)
        self._link: Link | None = None
        self._control_types: frozenset[str] = frozenset(("hello",)) | NAMING_EVENTS
        #: the ``team`` and ``self`` (the bot user) of the last connect answer
        self.team: dict | None = None
        self.self: dict | None = None
        self._hello_at: float | None = None
        self.waiters = Waiters()
        self._waiting = self.waiters.pending
        self._web_clients = WebClients()
        self._backfill = Backfill(lambda message, at: self._record(message, None, "history", 0, at))

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} token={mask_token(self._token)!s} state={self._state} "
                f"connection={self.connection_number} events={len(self.event_frame)} handlers={len(self.handlers)}>")

    # -- what subclasses give ------------------------------------------------------

    def _transport(self) -> Transport:
        raise NotImplementedError

    def _connected(self, answer: dict) -> None:
        """A socket URL was issued (hook: learn what the answer says)."""

    def _hello(self) -> None:
        """The socket said hello (hook)."""

    # -- registration ----------------------------------------------------------------

    def on(self, event: str | list[str] = "*", *, name: str | None = None, match: Any = None, channel: Any = None,
           subtype: Any = None, call_context: Callable | None = None) -> Callable[[Callable], Callable]:
        """Decorator: register ``fn(client, event)`` (sync or ``async def``) for one
        event type, a list, or ``"*"``; ``match`` is a regex searched in the text,
        ``channel``/``subtype`` a value or a collection. A name (default: the
        function's) registered again replaces its handler, so a cell re-run never
        doubles it."""
        if callable(event) and not isinstance(event, str):
            raise SlackClientError("use @client.on('message') (with the event type), not a bare @client.on")
        events = event_types(event)
        filters = {"match": match, "channel": channel, "subtype": subtype}

        def decorator(fn: Callable) -> Callable:
            self.handlers.register(events, fn, name=name, filters=filters, call_context=call_context)
            return fn

        return decorator

    def add_tap(self, fn: Callable[[dict], None]) -> None:
        """Call ``fn(event)`` on the loop for every recorded event (in and out). Keep it O(1)."""
        if fn not in self._taps:
            self._taps = (*self._taps, fn)

    def continue_recording(self, previous: Session) -> None:
        """Record into ``previous``'s EventFrame and number sockets on from its
        last one: one frame then spans both clients and its ``connection``
        column tells them apart (``%rtm_connect`` run again for the same
        variable). Call before this client first starts."""
        if self._runner.task is not None:
            raise SlackClientError("continue_recording() must be called before the client starts")
        if self._record is not None:
            self.event_frame = previous.event_frame
            self._record = self.event_frame._add
        self.connection_number = max(self.connection_number, previous.connection_number)

    def remove_tap(self, fn: Callable[[dict], None]) -> None:
        """Stop calling ``fn`` (no error if it was not a tap)."""
        self._taps = tuple(t for t in self._taps if t != fn)

    # -- what it shows -----------------------------------------------------------------

    @property
    def token(self) -> str | None:
        """The token; never shown in reprs, logs or errors. Settable while the client is not running."""
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        if self._runner.running:
            raise SlackClientError("the client is running: stop() it before changing its token")
        self._token = value.strip() if isinstance(value, str) else value
        stale = self._web_clients.forget()
        loop = self.loop
        if stale is not None and loop is not None and not loop.is_closed() and not loop.is_running():
            loop.run_until_complete(stale.aclose())

    @property
    def state(self) -> State:
        """``disconnected``, ``connecting``, ``connected``, ``reconnecting`` or ``stopped``."""
        return self._state

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop that owns this client (None before it first starts)."""
        return self._runner.loop

    @property
    def run_async(self) -> bool:
        """slackclient's option: ``start()`` without a running loop returns the task instead of running it."""
        return self._runner.run_async

    @property
    def events(self) -> Any:
        """Every recorded event as a pandas DataFrame (cached until new rows arrive)."""
        return self.event_frame.to_pandas()

    def messages(self) -> Any:
        """Message events received, with ``user_name`` and ``channel_name`` columns added."""
        return self.event_frame.messages(self.user_names, self.channel_names)

    @property
    def log(self) -> Any:
        """The live log widget, made on first access once the notebook layer is
        loaded (``import rtm_notebook`` in IPython, or ``%load_ext rtm_notebook``); None before."""
        if self._log is None and Session.view_factory is not None:
            self._log = Session.view_factory(self)
        return self._log

    def _ipython_display_(self) -> None:
        # display(client) shows the live log; without the notebook layer, the repr.
        view = self.log
        if view is None:
            print(repr(self))
        else:
            view._ipython_display_()

    @property
    def web_client(self) -> AsyncWebClient | WebClient:
        """A Web API client with this client's token: awaitable on the loop's thread
        (:class:`AsyncWebClient`), synchronous elsewhere (:class:`WebClient`, e.g. a sync handler)."""
        return self._web(is_async=on_loop_thread(self.loop))

    def _web(self, is_async: bool) -> AsyncWebClient | WebClient:
        return self._web_clients.get(is_async, self._token, self._http_options())

    def _http_options(self) -> dict:
        return dict(base_url=self.base_url, timeout=self.timeout, ssl=self.ssl, proxy=self.proxy,
                    headers=self.headers or None)

    # -- lifecycle (how it runs on its loop is runner.py's) -----------------------------

    def start(self) -> Any:
        """Start the session: on a running loop (a cell, async code), schedule it
        and return the task at once; with ``run_async=True``, return the task for
        the caller's loop; in a script, run on ``loop``, the loop the caller set,
        or a new one until :meth:`stop` or Ctrl-C, and raise what ended it (a
        refused token; any connect failure with ``auto_reconnect=False``)."""
        return self._runner.start()

    async def connect(self) -> Session:
        """Start if needed and return once the socket said ``hello``.

        Raises what ended the session (a refused token: a SlackApiError) and
        :class:`SlackClientNotConnectedError` if the client is stopped meanwhile.
        """
        if self._state in _IDLE:
            self._runner.launch(asyncio.get_running_loop())
        if self._state != State.CONNECTED:
            await self.waiters.hello()
        return self

    def stop(self) -> Any:
        """Close the socket and stop for good, from any code: an awaitable on the
        loop's thread, a ``concurrent.futures.Future`` from another thread, None
        when no loop runs the client. It completes once no task, thread or
        socket of the client is left (what handlers still get: docs/architecture.md)."""
        return self._runner.stop()

    async def async_stop(self) -> None:
        """Stop and wait until everything the client started has ended."""
        await self._runner.async_stop()

    def _launched(self, loop: asyncio.AbstractEventLoop) -> None:
        self.last_error = None
        self.outbox.accepting = True
        self.handlers.start(loop)
        if self._record is not None:  # before the first row: its own events carry it too
            self.event_frame.transport = self.transport_name
        self._set_state(State.CONNECTING)

    async def _released(self) -> None:
        self.outbox.fail("the client was stopped before it was sent", self._emit_error)
        self.waiters.fail(SlackClientNotConnectedError("the client was stopped"))
        self._set_state(State.STOPPED)
        await self.handlers.stop()
        web_async = self._web_clients.forget()
        if web_async is not None:
            await web_async.aclose()
        self.event_frame.close()

    def _stop_offline(self) -> None:
        """stop() with no loop running the client: nothing to cancel; release threads."""
        self.handlers.stop_offline()
        self._web_clients.forget()
        self._state = State.STOPPED

    def _spawn(self, coro: Any, name: str) -> asyncio.Task:
        return self._runner.spawn(coro, name)

    # -- the session: ask for a socket, read it, again --------------------------------

    async def _session(self) -> None:
        await Reconnector(self).run()

    def _end_link(self, link: Link) -> None:
        for fut in link.abandon().values():
            if not fut.done():
                fut.set_exception(DeliveryError(
                    f"connection #{link.number} closed before Slack replied; the message may or may not "
                    "have been posted (check the channel before sending it again)"))
        self._emit({"type": "close", "connection": link.number, "reason": link.end_reason or "ended"},
                   connection=link.number)

    def _end(self, exc: BaseException) -> None:
        """The session ends with ``exc``: record and show it, fail what waits, stop."""
        self.last_error = self._runner.ended_by = exc
        log.error("%s", exc)
        self._emit_error(getattr(exc, "error", None) or type(exc).__name__, str(exc), exc)
        self.outbox.fail(str(exc), self._emit_error)
        self.waiters.fail(exc)
        self._set_state(State.STOPPED)

    # -- intake (the hot path) ------------------------------------------------------------

    def _record_batch(self, number: int, frames: list[bytes], events: list[dict], received_at: float,
                      duplicates: Any = None) -> None:
        self.event_frame.extend(frames, received_at, connection=number, events=events, duplicates=duplicates)

    def _listeners(self, event_type: str) -> int:
        """Handlers registered for ``event_type`` itself (not ``"*"``): those that may answer it."""
        return len(self.handlers._index.get(event_type, ()))

    def _intake(self, event: dict, raw: bytes | str | None = None) -> None:
        """One received event, recorded already unless ``raw`` is given."""
        t = event.get("type", "reply")
        if raw is not None and self._record is not None:
            self._record(event, raw, "in", self.connection_number, _time())
        self.counts[t] += 1
        if t in self._control_types:
            self._control(t, event)
        if self._taps:
            self._feed_taps(event)
        # HandlerRegistry.dispatch, inlined: this runs once per frame.
        reg = self.handlers
        hs = reg._index.get(t)
        if hs:
            for h in hs:
                h.offer(event)
        for h in reg._star:
            h.offer(event)
        if self._waiting:
            self.waiters.check(t, event)

    def _feed_taps(self, event: dict) -> None:
        for tap in self._taps:
            try:
                tap(event)
            except Exception:
                # A broken view would fail on every event: taken off, not retried.
                log.exception("tap %r raised and was removed", tap)
                self.remove_tap(tap)

    def _control(self, t: str, event: dict) -> None:
        if t == "hello":
            self._hello_at = time.monotonic()
            self._set_state(State.CONNECTED)
            self.waiters.said_hello()
            self._hello()
            self.outbox.open = True
            self.outbox.wake()
        elif t in NAMING_EVENTS:
            self.directory.learn_event(t, event)
        elif self._link is not None:
            closing = self._link.control(event)
            if closing is not None:
                self._spawn(closing, f"control-{self._link.number}")

    def _emit(self, event: dict, *, dispatch: bool = True, recorded: dict | None = None,
              connection: int | None = None) -> None:
        """Record and dispatch an event the client itself produced; ``recorded``
        is what the record and the taps get when handlers are owed more;
        ``connection`` the socket it is about (default: the newest)."""
        t = event["type"]
        shown = event if recorded is None else recorded
        if self._record is not None:
            self._record(shown, None, "in", self.connection_number if connection is None else connection, _time())
        self.counts[t] += 1
        if self._taps:
            self._feed_taps(shown)
        if dispatch:
            self.handlers.dispatch(t, event)
            if self._waiting:
                self.waiters.check(t, event)

    def _emit_error(self, code: str, msg: str, exception: BaseException | None = None) -> None:
        self._emit(ErrorEvent({"type": "error", "error": {"code": code, "msg": msg}}, exception))

    def _emit_open(self, answer: dict) -> None:
        # Handlers get the whole connect answer; the record keeps who and
        # where (the socket URL is a short-lived secret).
        team = answer.get("team") if isinstance(answer.get("team"), dict) else {}
        me = answer.get("self") if isinstance(answer.get("self"), dict) else {}
        summary = {"type": "open", "connection": self.connection_number, "team": team.get("id"), "user": me.get("id")}
        self._emit({**answer, "type": "open"}, recorded=summary)

    def _set_state(self, new: State) -> None:
        old = self._state
        if new == old:
            return
        self._state = new
        if self.loop is not None:
            self._emit({"type": "state_change", "state": str(new), "previous": str(old)})

    def _handler_failed(self, handler: Handler, exc: BaseException, tb: str, event: dict) -> None:
        log.warning("handler %r raised %r", handler.name, exc)
        err = ErrorEvent({"type": "error", "handler": handler.name, "error": repr(exc), "traceback": tb}, exc)
        # An error handler that fails on a handler error would loop forever.
        self._emit(err, dispatch="handler" not in event)

    def _sent(self, message: dict, text: str | None, connection: int | None = None) -> None:
        me = self.self.get("id") if isinstance(self.self, dict) else None
        if me is not None and message.get("type") == "message":
            # The bot's own message carries its user, as Slack's copy of it will.
            message, text = {**message, "user": me}, None
        if self._record is not None:
            self._record(message, text, "out", self.connection_number if connection is None else connection, _time())
        if self._taps:
            self._feed_taps(message)

    def _malformed(self, number: int, event: dict, raw: Any) -> None:
        """A frame of connection ``number`` that is no event: recorded with its text, then dispatched."""
        if self._record is not None:
            self._record(event, raw, "in", number, _time())
        self._intake(event)

    async def backfill(self, channels: Any = None, *, oldest: Any = None, latest: Any = None, threads: bool = True,
                       progress: Callable | None = None) -> Any:
        """Fetch what happened before into the EventFrame (see :mod:`rtm_notebook.history`):
        ``channels`` (ids or ``#names``; None: every one the bot is in), from
        ``oldest`` to ``latest`` (ts strings, datetimes, ISO strings or epoch
        seconds), threads included; ``progress(Progress)`` after every call."""
        if self._record is None:
            raise SlackClientError("this client was made with record=False: it keeps no events to backfill into")
        web = self._web(is_async=True)
        ids = await channel_ids(web, channels, self.channel_names)
        return await self._backfill.run(web, ids, oldest=oldest, latest=latest, threads=threads, progress=progress)

    # -- waiting ------------------------------------------------------------------------------

    async def wait_for(self, type: str = "*", count: int = 1, timeout: float | None = None) -> Any:
        """Wait for the next ``count`` events of ``type`` (``"*"``: any).

        Returns the event when ``count`` is 1, else the list of them. Raises
        TimeoutError after ``timeout`` seconds and what stopped the client if
        it stops first.
        """
        return await self.waiters.wait_for(type, count, timeout)

    # -- sending ----------------------------------------------------------------------------

    def _require_started(self) -> None:
        """Sending needs a started client: say so where the send was written."""
        if self._state in _IDLE or self.loop is None:
            raise SlackClientNotConnectedError(
                f"the client is {self._state}: call client.start() (or await client.connect()) before sending")

    def _submit(self, message: dict, *, paced: bool, want_reply: bool, check: Callable[[dict], Any]) -> Any:
        """Queue ``message`` for the socket (see :meth:`Outbox.submit`). Not being
        connected is said first; then ``check`` (the transport's size and
        shape rules) fails a bad message where it was written."""
        self._require_started()
        check(message)
        return self.outbox.submit(self.loop, message, paced, want_reply)
