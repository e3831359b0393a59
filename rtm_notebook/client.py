"""RTMClient: Slack's Real Time Messaging API on the event loop that is already running.

Two surfaces on one client:

* the seed's (slackclient 2.x ``slack.RTMClient``)::

      @RTMClient.run_on(event="message")
      def say_hello(**payload):
          data, web_client = payload["data"], payload["web_client"]
          ...
      RTMClient(token=token).start()

* a modern one::

      rtm = RTMClient(token)
      @rtm.on("message", match="hello")
      async def greet(client, event): ...
      await rtm.connect()
      reply = await rtm.send_message(channel, "hi")

Inside a running loop (a Jupyter cell, ``asyncio.run``) ``start()`` schedules
the session as a task and returns it at once; in a plain script it blocks
until :meth:`stop` or Ctrl-C. The client never patches asyncio, never calls
``run_until_complete`` on a running loop and installs no signal handlers.

Every event received, every message sent, every reply and every error is
recorded once in :attr:`RTMClient.event_frame` (``rtm.events`` is the
DataFrame) and dispatched once, in order, to each matching handler's own
queue (see :mod:`rtm_notebook.handlers`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import random
import threading
import time
import weakref
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from rtm_notebook.connection import Connection, ConnectionClosed
from rtm_notebook.errors import (
    FATAL_CONNECT_ERRORS,
    DeliveryError,
    NotConnectedError,
    RTMConnectError,
    SlackApiError,
    SlackClientError,
)
from rtm_notebook.events import EventFrame
from rtm_notebook.handlers import Handler, HandlerRegistry
from rtm_notebook.protocol import Pacer, Protocol
from rtm_notebook.web import DEFAULT_BASE_URL, AsyncWebClient, WebClient, _retry_after, mask_token

__all__ = ["RTMClient", "STATES"]

log = logging.getLogger(__name__)

STATES = ("disconnected", "connecting", "connected", "reconnecting", "stopped")

# Reconnect backoff: the first retry after a healthy session is immediate,
# then 1 s, 2 s, 4 s ... up to a minute (Slack asks for about one rtm.connect
# a minute when reconnecting repeatedly), each with jitter.
RECONNECT_BASE = 1.0
RECONNECT_MAX = 60.0
# A session that got its hello and lasted this long resets the backoff.
HEALTHY_AFTER = 10.0
# Slack's send limit: about one message a second sustained.
SEND_RATE = 1.0
SEND_BURST = 3

_time = time.time
# Event types intake looks at itself: the session's own, and those that
# name a user or a channel (for messages()).
_NAMING = frozenset(("channel_created", "channel_joined", "channel_rename", "group_joined", "group_rename",
                     "team_join", "user_change"))
_CONTROL = frozenset(("hello", "goodbye")) | _NAMING


class _Retry(Exception):
    """rtm.connect failed in a way that a later attempt may fix."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Outgoing:
    __slots__ = ("message", "paced", "future", "want_reply")

    def __init__(self, message: dict, paced: bool, future: asyncio.Future, want_reply: bool) -> None:
        self.message = message
        self.paced = paced
        self.future = future
        self.want_reply = want_reply


def _retrieve(fut: asyncio.Future) -> None:
    # A fire-and-forget send that failed is already reported as an error
    # event; this keeps asyncio from also logging "exception never retrieved".
    if not fut.cancelled():
        fut.exception()


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _backoff(attempt: int) -> float:
    if attempt <= 0:
        return 0.0
    return min(RECONNECT_MAX, RECONNECT_BASE * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def _validate_seed_callback(callback: Any) -> None:
    """slackclient's checks, with its messages: callable, and accepts **kwargs."""
    cb_name = callback.__name__ if hasattr(callback, "__name__") else callback
    if not callable(callback):
        raise SlackClientError(f"The specified callback '{cb_name}' is not callable.")
    params = inspect.signature(callback).parameters.values()
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        raise SlackClientError(f"The callback '{cb_name}' must accept keyword arguments (**kwargs).")


def validate_handler(fn: Any) -> None:
    """Raise :class:`SlackClientError` unless ``fn`` can be called as ``fn(client, event)``.

    The one check for modern handlers, shared by :meth:`RTMClient.on` and
    the ``%rtm_on EVENT FUNCTION`` magic.
    """
    name = getattr(fn, "__name__", repr(fn))
    if not callable(fn):
        raise SlackClientError(f"The handler '{name}' is not callable.")
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise SlackClientError(
            f"The handler '{name}' must accept two arguments (client, event), "
            "e.g. `def {0}(client, event): ...`; seed-style callbacks take **payload "
            "and are registered with RTMClient.run_on(event=...).".format(name)
        ) from None
    except ValueError:  # no signature available (some builtins): let it be called
        pass


def _events(event: str | Iterable[str]) -> list[str]:
    if isinstance(event, str):
        return [event]
    events = list(event)
    if not events or not all(isinstance(e, str) and e for e in events):
        raise SlackClientError(f"event must be an event type such as 'message' or a list of them, not {event!r}")
    return events


def _seed_name(event: str, callback: Callable) -> str:
    qual = getattr(callback, "__qualname__", None) or getattr(callback, "__name__", None) or repr(callback)
    return f"seed:{event}:{getattr(callback, '__module__', '')}.{qual}"


class _On:
    """``RTMClient.on``: seed registration on the class, a decorator on an instance.

    * ``RTMClient.on(event="message", callback=fn)`` registers a seed
      callback for every client (as slackclient did).
    * ``@rtm.on("message", name=None, match=None, channel=None, subtype=None)``
      registers a modern handler ``fn(client, event)`` on this client only;
      ``rtm.on(event=..., callback=fn)`` registers a seed-style callback on
      this client only.
    """

    def __get__(self, obj: RTMClient | None, owner: type[RTMClient]) -> Callable:
        if obj is None:
            return owner._class_on
        return obj._instance_on


class RTMClient:
    """A Slack RTM client that lives on the running event loop.

    Constructor options are slackclient 2.x's: ``token`` (default: the
    ``SLACK_BOT_TOKEN`` environment variable), ``run_async``,
    ``auto_reconnect``, ``ssl``, ``proxy``, ``timeout`` (seconds, HTTP and
    WebSocket opening), ``base_url`` (of the Web API), ``connect_method``
    (``"rtm.connect"``, the default, or ``"rtm.start"``), ``ping_interval``
    (seconds of silence before an RTM ping; a ping unanswered for as long
    again means the socket is dead), ``loop`` and ``headers`` (extra HTTP
    headers). ``record_to`` (a JSON-lines path) and ``max_rows`` are passed
    to the :class:`~rtm_notebook.events.EventFrame`; ``record=False`` keeps
    nothing (``rtm.events`` stays empty), for a long-running bot that needs
    no DataFrame.
    """

    _callbacks: ClassVar[defaultdict[str, list[Callable]]] = defaultdict(list)
    _live: ClassVar[weakref.WeakSet[RTMClient]] = weakref.WeakSet()

    on = _On()

    def __init__(
        self,
        token: str | None = None,
        *,
        run_async: bool = False,
        auto_reconnect: bool = True,
        ssl: Any = None,
        proxy: str | None = None,
        timeout: float = 30,
        base_url: str = DEFAULT_BASE_URL,
        connect_method: str | None = None,
        ping_interval: float = 30,
        loop: asyncio.AbstractEventLoop | None = None,
        headers: dict | None = None,
        record_to: str | os.PathLike | None = None,
        max_rows: int | None = None,
        record: bool = True,
    ) -> None:
        if token is None:
            token = os.environ.get("SLACK_BOT_TOKEN")
        connect_method = connect_method or "rtm.connect"
        if connect_method not in ("rtm.connect", "rtm.start"):
            raise SlackClientError(f"connect_method must be 'rtm.connect' or 'rtm.start', not {connect_method!r}")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise SlackClientError(f"base_url must be an http(s) URL like {DEFAULT_BASE_URL!r}, not {base_url!r}")
        if not record and record_to is not None:
            raise SlackClientError("record=False keeps no events, so there is nothing to write to record_to; "
                                   "drop one of the two")
        if not ping_interval or ping_interval <= 0:
            raise SlackClientError(f"ping_interval must be a positive number of seconds, not {ping_interval!r}")
        self._token = token
        self.run_async = run_async
        self.auto_reconnect = auto_reconnect
        self.ssl = ssl
        self.proxy = proxy
        self.timeout = timeout
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.connect_method = connect_method
        self.ping_interval = ping_interval
        self.headers = dict(headers or {})
        self._loop_arg = loop

        self.event_frame = EventFrame(max_rows=max_rows, record_to=record_to)
        # EventFrame.append without its argument checks (what the client
        # passes is always valid): for frames sent, the client's own events
        # and malformed frames. Received event frames are recorded by the
        # connection's read loop through the frame's lane.
        self._record = self.event_frame._add if record else None
        self.counts: Counter = Counter()
        self.handlers = HandlerRegistry(self, seed_kwargs=self._seed_kwargs, on_error=self._handler_failed)
        self._dispatch = self.handlers.dispatch
        self._taps: tuple[Callable[[dict], None], ...] = ()
        self.connection_number = 0
        self.last_error: BaseException | None = None

        self._state = "disconnected"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._session_task: asyncio.Task | None = None
        self._release_task: asyncio.Task | None = None
        self._stopping = False
        self._released = False
        self._aux_tasks: set[asyncio.Task] = set()
        self._conn: Connection | None = None
        self._team: dict | None = None
        self._self: dict | None = None
        self._hello_at: float | None = None
        self._hello_waiters: list[asyncio.Future] = []
        self._waits: list[list] = []  # [type, count, future, collected]
        self._outbox: deque[_Outgoing] = deque()
        self._outbox_wake: asyncio.Future | None = None
        self._pacer = Pacer(SEND_RATE, SEND_BURST, time.monotonic())
        self._web_async: AsyncWebClient | None = None
        self._web_sync: WebClient | None = None
        self._web_lock = threading.Lock()
        self._log: Any = None
        #: id -> name of users and channels, for :meth:`messages`
        self.user_names: dict[str, str] = {}
        self.channel_names: dict[str, str] = {}
        self._names_fetched = False
        self._presence_ids: list[str] | None = None

        for event, callbacks in RTMClient._callbacks.items():
            for cb in callbacks:
                self._adopt_seed(event, cb)
        RTMClient._live.add(self)

    def __repr__(self) -> str:
        return (
            f"<RTMClient token={mask_token(self._token)!s} state={self._state} "
            f"connection={self.connection_number} events={len(self.event_frame)} handlers={len(self.handlers)}>"
        )

    # ------------------------------------------------------------------ registration

    @staticmethod
    def run_on(*, event: str | list[str]) -> Callable[[Callable], Callable]:
        """Seed decorator: register ``callback(**payload)`` for ``event`` on every client."""

        def decorator(callback: Callable) -> Callable:
            RTMClient.on(event=event, callback=callback)
            return callback

        return decorator

    @classmethod
    def _class_on(cls, *, event: str | list[str], callback: Callable | list[Callable]) -> None:
        """Seed ``RTMClient.on(event=, callback=)``: link callback(s) to event(s) for every client.

        Raises SlackClientError when a callback is not callable or does not
        accept keyword arguments (``**kwargs``).
        """
        callbacks = callback if isinstance(callback, list) else [callback]
        for cb in callbacks:
            _validate_seed_callback(cb)
        for ev in _events(event):
            known = cls._callbacks[ev]
            for cb in callbacks:
                # A notebook cell run again defines a new function of the same
                # name: it replaces the old one instead of running beside it.
                name = _seed_name(ev, cb)
                known[:] = [k for k in known if _seed_name(ev, k) != name]
                known.append(cb)
                for client in list(cls._live):
                    client._call_on_loop(client._adopt_seed, ev, cb)

    def _instance_on(
        self,
        event: str | list[str] = "*",
        callback: Callable | list[Callable] | None = None,
        *,
        name: str | None = None,
        match: Any = None,
        channel: Any = None,
        subtype: Any = None,
        call_context: Callable | None = None,
    ) -> Any:
        """Register a handler on this client.

        As a decorator, ``@rtm.on("message", name=None, match=None,
        channel=None, subtype=None)`` registers ``fn(client, event)`` (sync
        or ``async def``) for one event type, a list of them, or ``"*"``
        for all. ``match`` is a regex searched in the event's text,
        ``channel`` and ``subtype`` a value or a collection of values.
        ``name`` defaults to the function's name; registering a name again
        replaces the handler (re-running a notebook cell never doubles it).
        Returns the function unchanged.

        ``rtm.on(event=..., callback=fn)`` registers a seed-style callback
        ``fn(**payload)`` on this client only.
        """
        filters = {"match": match, "channel": channel, "subtype": subtype}
        if callback is not None:
            callbacks = callback if isinstance(callback, list) else [callback]
            for cb in callbacks:
                _validate_seed_callback(cb)
            for ev in _events(event):
                for cb in callbacks:
                    self.handlers.add(ev, cb, name=name or _seed_name(ev, cb), style="seed",
                                      filters=filters, call_context=call_context)
            return callback
        if callable(event) and not isinstance(event, str):
            raise SlackClientError("use @rtm.on('message') (with the event type), not a bare @rtm.on")
        events = _events(event)

        def decorator(fn: Callable) -> Callable:
            validate_handler(fn)
            base = name or getattr(fn, "__name__", None)
            for ev in events:
                hname = base if len(events) == 1 or base is None else f"{base}:{ev}"
                self.handlers.add(ev, fn, name=hname, filters=filters, call_context=call_context)
            return fn

        return decorator

    def _adopt_seed(self, event: str, callback: Callable) -> None:
        self.handlers.add(event, callback, name=_seed_name(event, callback), style="seed")

    def add_tap(self, fn: Callable[[dict], None]) -> None:
        """Call ``fn(event)`` on the loop for every recorded event (in and out). Keep it O(1)."""
        if fn not in self._taps:
            self._taps = (*self._taps, fn)

    def remove_tap(self, fn: Callable[[dict], None]) -> None:
        """Stop calling ``fn`` (no error if it was not a tap)."""
        self._taps = tuple(t for t in self._taps if t != fn)

    # ------------------------------------------------------------------ properties

    @property
    def token(self) -> str | None:
        """The token, for code that needs it; never shown in reprs, logs or errors."""
        return self._token

    @property
    def state(self) -> str:
        """One of ``disconnected``, ``connecting``, ``connected``, ``reconnecting``, ``stopped``."""
        return self._state

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop that owns this client (None before it first starts)."""
        return self._loop

    @property
    def team(self) -> dict | None:
        """The ``team`` object of the last rtm.connect/rtm.start answer."""
        return self._team

    @property
    def self(self) -> dict | None:
        """The ``self`` object (the bot user) of the last rtm.connect/rtm.start answer."""
        return self._self

    @property
    def events(self) -> Any:
        """Every recorded event as a pandas DataFrame (cached until new rows arrive)."""
        return self.event_frame.to_pandas()

    def messages(self) -> Any:
        """Message events with ``user_name`` and ``channel_name`` columns added."""
        df = self.event_frame.to_pandas()
        df = df[(df["type"] == "message") & (df["direction"] == "in")].copy()
        df["user_name"] = df["user"].map(self.user_names)
        df["channel_name"] = df["channel"].map(self.channel_names)
        return df

    @property
    def log(self) -> Any:
        """The live log widget of this client (made on first access)."""
        if self._log is None:
            from rtm_notebook.notebook.livelog import LiveLog

            self._log = LiveLog(self)
        return self._log

    def _ipython_display_(self) -> None:
        # display(rtm) in a notebook shows the live log; outside a kernel the
        # log renders itself as text. repr(rtm) stays the one-line summary.
        self.log._ipython_display_()

    @property
    def web_client(self) -> AsyncWebClient | WebClient:
        """A Web API client with this client's token: awaitable on the loop's
        thread (:class:`AsyncWebClient`), synchronous on any other thread
        (:class:`WebClient`, e.g. in a sync handler)."""
        on_loop = self._loop is not None and threading.get_ident() == self._loop_thread
        return self._web(is_async=on_loop)

    def _web(self, is_async: bool) -> AsyncWebClient | WebClient:
        with self._web_lock:
            options = dict(base_url=self.base_url, timeout=self.timeout, ssl=self.ssl,
                           proxy=self.proxy, headers=self.headers or None)
            if is_async:
                if self._web_async is None:
                    self._web_async = AsyncWebClient(self._token, **options)
                return self._web_async
            if self._web_sync is None:
                self._web_sync = WebClient(self._token, **options)
            return self._web_sync

    def _seed_kwargs(self, is_async: bool) -> dict:
        return {"rtm_client": self, "web_client": self._web(is_async)}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Any:
        """Start the RTM session.

        Inside a running event loop (a notebook cell, async code): schedule
        the session as a task on that loop and return the task at once.
        With ``run_async=True`` and no running loop: return that task
        scheduled on ``loop`` (or a new loop) for the caller to run.
        Otherwise (a script): run until :meth:`stop` is called (from a
        handler or another thread) or Ctrl-C, then return; raise
        :class:`RTMConnectError` if Slack refuses the token.
        """
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            return self._launch(running)
        if self.run_async:
            loop = self._loop_arg or asyncio.new_event_loop()
            return self._launch(loop)
        try:
            if self._loop_arg is not None:
                loop = self._loop_arg
                try:
                    loop.run_until_complete(self._main())
                except KeyboardInterrupt:
                    loop.run_until_complete(self.async_stop())
            else:
                asyncio.run(self._main())
        except KeyboardInterrupt:
            pass
        return None

    async def _main(self) -> None:
        task = self._launch(asyncio.get_running_loop())
        try:
            await asyncio.wait([task])
        finally:
            await self.async_stop()
        # Only an error that ended the session is the caller's; last_error may
        # also hold one the session recovered from.
        if isinstance(self.last_error, (RTMConnectError, SlackClientError)):
            raise self.last_error

    def _launch(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task:
        if self._session_task is not None and not self._session_task.done():
            if self._loop is loop:
                return self._session_task
            raise SlackClientError("this RTMClient is already running on another event loop; stop() it first")
        if self._release_task is not None and not self._release_task.done():
            raise SlackClientError("this RTMClient is still stopping; await rtm.async_stop() before starting it again")
        self._loop = loop
        self._loop_thread = threading.get_ident() if loop.is_running() else None
        self._release_task = None
        self._stopping = False
        self._released = False
        self.last_error = None
        self.handlers.start(loop)
        self._set_state("connecting")
        self._session_task = loop.create_task(self._session(), name="rtm-session")
        return self._session_task

    async def connect(self) -> RTMClient:
        """Start the session if needed and return once Slack's ``hello`` arrived.

        Raises :class:`RTMConnectError` if Slack refuses the token and
        :class:`NotConnectedError` if the client is stopped meanwhile.
        """
        if self._state in ("disconnected", "stopped"):
            self._launch(asyncio.get_running_loop())
        if self._state == "connected":
            return self
        fut = asyncio.get_running_loop().create_future()
        self._hello_waiters.append(fut)
        await fut
        return self

    def stop(self) -> Any:
        """Close the socket and stop for good (no reconnect); callable from any code.

        On the loop's thread this returns an awaitable that completes once
        everything is released (``await rtm.stop()``); from another thread
        (a sync handler) it hands the stop to the loop and returns a
        ``concurrent.futures.Future``; with no loop running the client it
        stops at once and returns None. Once done, no task, thread or socket
        of this client is left.
        """
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            self._stop_offline()
            return None
        if threading.get_ident() == self._loop_thread:
            return self._begin_stop()
        done: concurrent.futures.Future = concurrent.futures.Future()

        def begin() -> None:
            self._begin_stop().add_done_callback(lambda _: done.set_result(None))

        loop.call_soon_threadsafe(begin)
        return done

    async def async_stop(self) -> None:
        """Stop and wait until everything the client started has ended."""
        if self._loop is None:
            self._stop_offline()
            return
        while True:
            waitable = self._begin_stop()
            if waitable.done():
                return
            # asyncio.wait, not await: a caller that is itself stopped (a
            # handler's worker) must not cancel the shutdown with it.
            await asyncio.wait([waitable])

    def _begin_stop(self) -> asyncio.Future:
        """Start stopping; return what completes when everything is released.

        That is the session task while it runs (it releases everything on
        its way out, so whoever runs it to completion, e.g.
        ``run_until_complete(rtm.start())`` in a seed script, finds nothing
        left behind), else a task that releases what is left.
        """
        self._stopping = True
        session = self._session_task
        if session is not None and not session.done():
            # A session already releasing (after a fatal error) must not be
            # interrupted half-way.
            if not self._released:
                session.cancel()
            return session
        if not self._released:
            assert self._loop is not None
            self._released = True
            self._release_task = self._loop.create_task(self._release(), name="rtm-release")
        if self._release_task is not None:
            return self._release_task
        fut = self._loop.create_future()
        fut.set_result(None)
        return fut

    async def _release(self) -> None:
        self._released = True
        current = asyncio.current_task()
        tasks = [t for t in self._aux_tasks if t is not current]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._fail_outbox("the client was stopped before it was sent")
        self._fail_waiters(NotConnectedError("the RTM client was stopped"))
        self._set_state("stopped")
        await self.handlers.stop()
        web_async, web_sync = self._web_async, self._web_sync
        self._web_async = self._web_sync = None
        if web_async is not None:
            await web_async.aclose()
        if web_sync is not None:
            web_sync.close()
        if self.event_frame._recorder is not None:
            self.event_frame.close()

    def _stop_offline(self) -> None:
        """stop() with no loop running the client: nothing to cancel, release threads."""
        for h in self.handlers:
            h._stop_threadsafe()
        if self._web_sync is not None:
            self._web_sync.close()
            self._web_sync = None
        self._state = "stopped"

    def _spawn(self, coro: Any) -> asyncio.Task:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._aux_tasks.add(task)
        task.add_done_callback(self._aux_tasks.discard)
        return task

    def _call_on_loop(self, fn: Callable, *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or threading.get_ident() == self._loop_thread or not loop.is_running():
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------------ the session

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        connector = AsyncWebClient(self._token, base_url=self.base_url, timeout=self.timeout, ssl=self.ssl,
                                   proxy=self.proxy, headers=self.headers or None, max_retries=0)
        attempt = 0
        delay = 0.0
        fatal = False
        try:
            while True:
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    data = await self._rtm_connect(connector)
                except (RTMConnectError, SlackClientError) as exc:
                    # a refused token, or a client set up wrongly (e.g. a bad base_url)
                    self._fatal(exc)
                    fatal = True
                    return
                except _Retry as exc:
                    attempt += 1
                    delay = exc.retry_after if exc.retry_after is not None else _backoff(attempt)
                    self._emit_error("connect_failed", f"{exc} (retrying in {delay:.1f} s)")
                    self._set_state("reconnecting")
                    continue
                self.connection_number += 1
                conn = Connection(
                    data["url"], number=self.connection_number, intake=self._intake, on_sent=self._sent,
                    ping_interval=self.ping_interval, pong_timeout=self.ping_interval,
                    open_timeout=self.timeout, ssl=self.ssl, proxy=self.proxy,
                    lane=self.event_frame._lane(self.connection_number) if self._record is not None else None,
                )
                try:
                    await conn.open()
                except (OSError, TimeoutError, ValueError) as exc:
                    attempt += 1
                    delay = _backoff(attempt)
                    self._emit_error("socket_failed", f"could not open the RTM socket ({type(exc).__name__}: {exc}) "
                                     f"(retrying in {delay:.1f} s)")
                    self._set_state("reconnecting")
                    continue
                reason = await self._run_connection(conn, data, loop)
                healthy = self._hello_at is not None and time.monotonic() - self._hello_at >= HEALTHY_AFTER
                attempt = 0 if healthy else attempt + 1
                if not self.auto_reconnect:
                    log.info("RTM connection #%s ended (%s); auto_reconnect is off", conn.number, reason)
                    self._set_state("disconnected")
                    return
                delay = _backoff(attempt)
                log.info("RTM connection #%s ended (%s); reconnecting in %.1f s", conn.number, reason, delay)
                self._set_state("reconnecting")
        except asyncio.CancelledError:
            # stop() ends the session by cancelling it; to whoever awaits the
            # task start() returned, that is a normal end, not a cancellation.
            if not self._stopping:
                raise
        finally:
            await connector.aclose()
            if (fatal or self._stopping) and not self._released:
                # Nothing will run again: release threads and sockets now.
                await self._release()

    async def _rtm_connect(self, connector: AsyncWebClient) -> dict:
        try:
            resp = await connector.api_call(self.connect_method)
        except SlackApiError as exc:
            response = exc.response
            code = exc.error
            if code in FATAL_CONNECT_ERRORS:
                raise RTMConnectError(code) from None
            if response is not None and getattr(response, "status_code", None) == 429:
                raise _Retry(f"{self.connect_method} is rate limited (HTTP 429)", _retry_after(response.headers)) from None
            raise _Retry(str(exc)) from None
        data = dict(resp.data)
        if not isinstance(data.get("url"), str):
            raise _Retry(f"{self.connect_method} answered without a socket url")
        try:
            self._team = data.get("team")
            self._self = data.get("self")
            self._learn_names(data)
        except Exception as exc:
            # A bug reading an answer must not end the session task and leave
            # the client "connecting" forever: record it and try again.
            self.last_error = exc
            log.exception("could not read the %s answer", self.connect_method)
            raise _Retry(f"could not read the {self.connect_method} answer ({type(exc).__name__}: {exc})") from None
        return data

    async def _run_connection(self, conn: Connection, data: dict, loop: asyncio.AbstractEventLoop) -> str:
        self._conn = conn
        self._hello_at = None
        sender = loop.create_task(self._sender(conn), name=f"rtm-sender-{conn.number}")
        try:
            self._emit_open(data)
            return await conn.run()
        finally:
            sender.cancel()
            await asyncio.wait([sender])
            await conn.close()
            if self._conn is conn:
                self._conn = None
                self._end_connection(conn)

    def _end_connection(self, conn: Connection) -> None:
        for fut in conn.abandon().values():
            if not fut.done():
                fut.set_exception(DeliveryError(
                    f"RTM connection #{conn.number} closed before Slack replied; the message may or may not "
                    "have been posted (check the channel before sending it again)"))
        self._emit({"type": "close", "connection": conn.number, "reason": conn.end_reason or "ended"})

    def _fatal(self, exc: RTMConnectError | SlackClientError) -> None:
        self.last_error = exc
        log.error("%s", exc)
        self._emit_error(getattr(exc, "error", None) or type(exc).__name__, str(exc))
        self._fail_outbox(str(exc))
        self._fail_waiters(exc)
        self._set_state("stopped")

    # ------------------------------------------------------------------ intake (hot path)

    def _intake(self, event: dict, raw: bytes | str | None) -> None:
        """One received event; ``raw`` None: the connection recorded it."""
        t = event.get("type", "reply")
        if raw is not None and self._record is not None:
            self._record(event, raw, "in", self.connection_number, _time())
        self.counts[t] += 1
        if t in _CONTROL:
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
        if self._waits:
            self._check_waits(t, event)

    def _feed_taps(self, event: dict) -> None:
        for tap in self._taps:
            try:
                tap(event)
            except Exception:
                # A broken view must not break intake; it would fail on every
                # event, so it is taken off rather than retried.
                log.exception("tap %r raised and was removed", tap)
                self.remove_tap(tap)

    def _control(self, t: str, event: dict) -> None:
        conn = self._conn
        if t == "hello":
            self._hello_at = time.monotonic()
            self._set_state("connected")
            waiters, self._hello_waiters = self._hello_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            if self._presence_ids is not None and not any(
                    item.message.get("type") == "presence_sub" for item in self._outbox):
                self._enqueue({"type": "presence_sub", "ids": self._presence_ids}, True, False)
            self._wake_sender()
            if not self._names_fetched and self.connect_method == "rtm.connect":
                # rtm.start brings names in its snapshot; rtm.connect does not.
                self._names_fetched = True
                self._spawn(self._fetch_names())
        elif t == "goodbye":
            if conn is not None:
                conn.end_reason = "goodbye"
                # Closing runs beside the read loop, which keeps draining the
                # frames Slack still sends before its close frame.
                self._spawn(conn.close())
        elif t in ("team_join", "user_change"):
            self._learn_names({"users": [event.get("user")]})
        else:
            self._learn_names({"channels": [event.get("channel")]})

    def _emit(self, event: dict, *, dispatch: bool = True, recorded: dict | None = None) -> None:
        """Record and dispatch an event the client itself produced.

        ``recorded`` is what the record and the taps get instead of
        ``event``, when the handlers are owed more than may be kept.
        """
        t = event["type"]
        shown = event if recorded is None else recorded
        if self._record is not None:
            self._record(shown, None, "in", self.connection_number, _time())
        self.counts[t] += 1
        if self._taps:
            self._feed_taps(shown)
        if dispatch:
            self._dispatch(t, event)
            if self._waits:
                self._check_waits(t, event)

    def _emit_error(self, code: str, msg: str) -> None:
        self._emit({"type": "error", "error": {"code": code, "msg": msg}})

    def _emit_open(self, data: dict) -> None:
        # Seed callbacks get the whole connect answer as `data`; the record
        # keeps only who and where (the socket URL is a short-lived secret).
        team = data.get("team") if isinstance(data.get("team"), dict) else {}
        me = data.get("self") if isinstance(data.get("self"), dict) else {}
        summary = {"type": "open", "connection": self.connection_number, "team": team.get("id"), "user": me.get("id")}
        self._emit({**data, "type": "open"}, recorded=summary)

    def _set_state(self, new: str) -> None:
        old = self._state
        if new == old:
            return
        self._state = new
        if self._loop is not None:
            self._emit({"type": "state_change", "state": new, "previous": old})

    def _handler_failed(self, handler: Handler, exc: BaseException, tb: str, event: dict) -> None:
        log.warning("handler %r raised %r", handler.name, exc)
        err = {"type": "error", "handler": handler.name, "error": repr(exc), "traceback": tb}
        # An error handler that fails on a handler error would loop forever.
        self._emit(err, dispatch="handler" not in event)

    def _sent(self, message: dict, text: str) -> None:
        if self._record is not None:
            self._record(message, text, "out", self.connection_number, _time())
        if self._taps:
            self._feed_taps(message)

    # ------------------------------------------------------------------ waiting

    async def wait_for(self, type: str = "*", count: int = 1, timeout: float | None = None) -> Any:
        """Wait for the next ``count`` events of ``type`` (``"*"``: any).

        Returns the event when ``count`` is 1, else the list of them. Raises
        TimeoutError after ``timeout`` seconds and NotConnectedError if the
        client stops first.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        fut = asyncio.get_running_loop().create_future()
        entry = [type, count, fut, []]
        self._waits.append(entry)
        try:
            async with asyncio.timeout(timeout):
                events = await fut
        finally:
            if entry in self._waits:
                self._waits.remove(entry)
        return events[0] if count == 1 else events

    def _check_waits(self, t: str, event: dict) -> None:
        for entry in list(self._waits):
            want, count, fut, got = entry
            if want == t or want == "*":
                got.append(event)
                if len(got) >= count:
                    self._waits.remove(entry)
                    if not fut.done():
                        fut.set_result(got)

    def _fail_waiters(self, exc: BaseException) -> None:
        waiters, self._hello_waiters = self._hello_waiters, []
        waits, self._waits = self._waits, []
        for fut in [*waiters, *(w[2] for w in waits)]:
            if not fut.done():
                fut.set_exception(exc)

    # ------------------------------------------------------------------ sending

    def send_message(self, channel: str, text: str, *, thread_ts: str | None = None) -> Any:
        """Send a message over the socket; the result is Slack's reply (with ``ts``).

        On the loop, returns an awaitable future (``reply = await
        rtm.send_message(...)``); from another thread a
        ``concurrent.futures.Future``. The future raises ReplyError on an
        error reply and DeliveryError if the message could not be delivered.
        Text over 4,000 characters or a frame over 16 KB raises
        MessageTooLargeError here, before anything is queued. Messages are
        paced to Slack's one per second; while reconnecting they wait.
        """
        message = {"type": "message", "channel": channel, "text": text}
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
        return self._submit(message, paced=True, want_reply=True)

    def send_over_websocket(self, *, payload: dict) -> Any:
        """Seed API: send ``payload`` (an ``id`` is added when missing).

        Returns a future of the message id, settled once the frame is written.
        """
        paced = payload.get("type") != "ping" if isinstance(payload, dict) else True
        return self._submit(payload, paced=paced, want_reply=False)

    def ping(self) -> Any:
        """Send an RTM ``ping`` (Slack answers with a ``pong``); returns a future of its id."""
        return self._submit({"type": "ping"}, paced=False, want_reply=False)

    def typing(self, *, channel: str) -> Any:
        """Show "typing" in ``channel``; returns a future of the message id."""
        return self._submit({"type": "typing", "channel": channel}, paced=True, want_reply=False)

    def subscribe_presence(self, ids: Iterable[str]) -> Any:
        """Subscribe to ``presence_change`` for these user ids (the full set, at most 500).

        A subscription belongs to a socket: the client sends it again after
        every reconnect.
        """
        ids = list(ids)
        if len(ids) > 500 or not all(isinstance(i, str) for i in ids):
            raise SlackClientError("subscribe_presence takes at most 500 user ids (strings), the full set each time")
        sent = self._submit({"type": "presence_sub", "ids": ids}, paced=True, want_reply=False)
        self._presence_ids = ids
        return sent

    def _submit(self, message: dict, *, paced: bool, want_reply: bool) -> Any:
        # Checked here, in the caller's code, so a bad message fails where it was written.
        Protocol().prepare(message)
        loop = self._loop
        if self._state in ("disconnected", "stopped") or loop is None:
            raise NotConnectedError(
                f"the RTM client is {self._state}: call rtm.start() (or await rtm.connect()) before sending")
        if threading.get_ident() == self._loop_thread:
            return self._enqueue(message, paced, want_reply)
        return asyncio.run_coroutine_threadsafe(self._enqueue_and_wait(message, paced, want_reply), loop)

    async def _enqueue_and_wait(self, message: dict, paced: bool, want_reply: bool) -> Any:
        return await self._enqueue(message, paced, want_reply)

    def _enqueue(self, message: dict, paced: bool, want_reply: bool) -> asyncio.Future:
        if self._state in ("disconnected", "stopped"):
            raise NotConnectedError(f"the RTM client is {self._state}")
        assert self._loop is not None
        fut = self._loop.create_future()
        if not want_reply:
            fut.add_done_callback(_retrieve)
        self._outbox.append(_Outgoing(message, paced, fut, want_reply))
        self._wake_sender()
        return fut

    def _wake_sender(self) -> None:
        wake = self._outbox_wake
        if wake is not None:
            self._outbox_wake = None
            if not wake.done():
                wake.set_result(None)

    async def _sender(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        outbox = self._outbox
        pacer = self._pacer
        while True:
            if self._hello_at is None or not outbox:
                self._outbox_wake = loop.create_future()
                await self._outbox_wake
                continue
            item = outbox[0]
            if item.future.done():  # cancelled by its caller
                outbox.popleft()
                continue
            if item.paced:
                wait = pacer.delay(time.monotonic())
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
            try:
                mid = await conn.send(item.message)
            except ConnectionClosed:
                return  # stays queued for the next connection
            except SlackClientError as exc:  # also MessageTooLargeError's siblings
                outbox.popleft()
                item.future.set_exception(exc)
                continue
            except Exception as exc:
                outbox.popleft()
                if not item.future.done():
                    item.future.set_exception(exc)
                continue
            outbox.popleft()
            if item.paced:
                pacer.take(time.monotonic())
            if item.future.done():
                continue
            if item.want_reply:
                conn.waiters[mid] = item.future
            else:
                item.future.set_result(mid)

    def _fail_outbox(self, why: str) -> None:
        while self._outbox:
            item = self._outbox.popleft()
            if not item.future.done():
                item.future.set_exception(DeliveryError(
                    f"{item.message.get('type')} to {item.message.get('channel', '-')} was not sent: {why}"))
                self._emit_error("not_delivered", f"{item.message.get('type')} was not sent: {why}")

    # ------------------------------------------------------------------ names

    async def _fetch_names(self) -> None:
        web = self._web(is_async=True)
        try:
            async for page in web.paginate("users.list", limit=200):
                self._learn_names({"users": page.get("members")})
            async for page in web.paginate("conversations.list", limit=200, types="public_channel,private_channel"):
                self._learn_names({"channels": page.get("channels")})
        except (SlackApiError, SlackClientError) as exc:
            # Names are a convenience for messages(); the session does not need them.
            log.info("could not fetch user and channel names: %s", exc)

    def _learn_names(self, data: dict) -> None:
        # Only lists of objects carry names; anything else Slack (or a proxy)
        # might put in these fields is skipped, not trusted.
        for u in _list(data.get("users")):
            if isinstance(u, dict) and isinstance(u.get("id"), str):
                self.user_names[u["id"]] = u.get("name") or u.get("real_name") or u["id"]
        for key in ("channels", "groups", "mpims"):
            for c in _list(data.get(key)):
                if isinstance(c, dict) and isinstance(c.get("id"), str) and c.get("name"):
                    self.channel_names[c["id"]] = c["name"]
        me = data.get("self")
        if isinstance(me, dict) and isinstance(me.get("id"), str) and me.get("name"):
            self.user_names[me["id"]] = me["name"]
