"""Named event handlers, each with its own ordered queue and worker.

Intake never waits for a handler: dispatching an event to a handler is an
O(1) append to that handler's queue. Each handler then works through its
queue in arrival order on its own:

* an ``async def`` handler has a worker task on the client's loop;
* a plain ``def`` handler has a dedicated worker thread (one per handler, so
  its events stay in order and a slow one blocks only itself).

A handler that raises is counted (``errors``, ``last_error``) and reported
through the registry's ``on_error`` callback, which the client turns into a
recorded ``error`` event; the handler keeps receiving events.

Stopping the client delivers the client's own events (``LIFECYCLE``: the
``close`` event above all) queued for each handler, then ends its worker;
the Slack traffic still queued, which a handler could only answer into a
closed socket, is counted in ``dropped`` instead of run. A handler
still busy after ``STOP_TIMEOUT`` seconds is given up on: a sync one is left
to finish its call on its thread, an async one is cancelled; what it had
not started is counted in ``dropped``, as is whatever is dispatched to it
while the others stop. Removing or replacing a handler drops its queue at
once, counted the same way (only events its filters accept count).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import queue
import re
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from time import perf_counter
from typing import Any

from rtm_notebook.errors import SlackClientError
from rtm_notebook.fields import channel_of
from rtm_notebook.loops import hand_over

__all__ = ["ErrorEvent", "Handler", "Interaction", "HandlerRegistry", "STOP_TIMEOUT", "event_types", "validate_handler"]

# How long stopping waits for a sync handler that is still inside a call
# before leaving its thread to finish on its own (it exits right after).
STOP_TIMEOUT = 5.0

_STOP = object()
_FILTER_KEYS = ("match", "channel", "subtype", "command")
#: the type of a Socket Mode slash command's event; ``on("/deploy")`` means this type, command "/deploy"
SLASH_COMMAND = "slash_command"
#: the client's own events: still delivered to handlers when the client stops
LIFECYCLE = frozenset(("open", "close", "state_change", "error", "hello", "goodbye"))


class ErrorEvent(dict):
    """An ``error`` event the client made from an exception, which it carries
    as :attr:`exception`: seed ``error`` callbacks get that as ``data`` (as in
    slackclient 2.x); modern handlers, the record and the taps get the dict."""

    __slots__ = ("exception",)

    def __init__(self, fields: dict, exception: BaseException | None) -> None:
        super().__init__(fields)
        self.exception = exception


class Interaction(dict):
    """A slash command or interactive payload (Socket Mode): a handler answers
    it by returning a value. After every call of a handler registered for its
    type that got it (or that its filters skipped) the worker calls
    ``settle(result)`` on the loop, ``result`` being what the call returned
    (None when it raised). ``"*"`` handlers see it but do not answer it."""

    __slots__ = ("settle",)

    def __init__(self, fields: dict, settle: Callable[[Any], None]) -> None:
        super().__init__(fields)
        self.settle = settle


def validate_handler(fn: Any) -> None:
    """Raise :class:`SlackClientError` unless ``fn`` can be called as ``fn(client, event)``."""
    name = getattr(fn, "__name__", repr(fn))
    if not callable(fn):
        raise SlackClientError(f"The handler '{name}' is not callable.")
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise SlackClientError(
            f"The handler '{name}' must accept two arguments (client, event), "
            f"e.g. `def {name}(client, event): ...`; seed-style callbacks take **payload "
            "and are registered with RTMClient.run_on(event=...).") from None
    except ValueError:  # no signature available (some builtins): let it be called
        pass


def event_types(event: str | Iterable[str]) -> list[str]:
    if isinstance(event, str):
        return [event]
    events = list(event)
    if not events or not all(isinstance(e, str) and e for e in events):
        raise SlackClientError(f"event must be an event type such as 'message' or a list of them, not {event!r}")
    return events


def handler_label(name: str) -> str:
    """A handler's name as a row shows it: short enough to leave room for the message.

    Seed-style registrations are named ``seed:EVENT:module.qualname`` (unique,
    but long: ``seed:message:rtm_notebook.cli._install_seed_bot.<locals>.say_hello``);
    a row shows the function's own name, ``say_hello``. Other names are the
    user's own (``%%rtm_on --name``, the function name) and are kept.
    """
    if name.startswith("seed:"):
        return name.rsplit(":", 1)[-1].rsplit(".", 1)[-1] or name
    return name


def _seed_data(event: dict) -> Any:
    if event.__class__ is ErrorEvent and event.exception is not None:
        return event.exception
    return event


def _is_async(fn: Callable) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 (the method itself is inspected, not whether fn is callable)
    return call is not None and inspect.iscoroutinefunction(call)


def _as_set(value: Any) -> frozenset | None:
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset((value,))
    return frozenset(value)


class Handler:
    """One registered handler: what it listens to, how it is called, its stats.

    ``calls`` counts completed calls (including those that raised),
    ``errors`` those that raised, ``last_error`` is the latest exception's
    repr, ``total_time`` the seconds spent inside the handler, ``busy_for``
    how long the call in progress has been running, ``behind_for`` how long
    events have been waiting since its queue was last empty, ``dropped`` the
    events it was given and never ran for (see the module docs).
    """

    def __init__(
        self,
        name: str,
        event: str,
        fn: Callable,
        *,
        style: str = "modern",
        filters: dict | None = None,
        call_context: Callable[[], AbstractContextManager] | None = None,
    ) -> None:
        if style not in ("modern", "seed"):
            raise ValueError(f"style must be 'modern' or 'seed', not {style!r}")
        filters = {k: v for k, v in (filters or {}).items() if v is not None}
        unknown = set(filters) - set(_FILTER_KEYS)
        if unknown:
            raise TypeError(f"unknown handler filter(s) {sorted(unknown)}; use match=, channel=, subtype= or command=")
        self.name = name
        self.event = event
        self.fn = fn
        self.is_async = _is_async(fn)
        self.style = style
        self.filters = filters
        self.call_context = call_context
        self._ok = 0
        self.errors = 0
        self.last_error: str | None = None
        self.total_time = 0.0
        # perf_counter() when the call in progress started; None between calls.
        # Set by the worker, read from any thread: a stuck handler shows here
        # long before its calls/errors change.
        self._busy_since: float | None = None
        # perf_counter() when the worker last found its queue empty (it then
        # waits for the next event, or has just been woken by one). Written by
        # the worker only, so intake does no extra work for it: a queue that
        # is not empty has been so since then (behind_for).
        self._caught_up = perf_counter()
        match = filters.get("match")
        self._match = re.compile(match) if isinstance(match, str) else match
        self._channels = _as_set(filters.get("channel"))
        self._subtypes = _as_set(filters.get("subtype"))
        self._commands = _as_set(filters.get("command"))
        self._has_filters = bool(filters)
        self._registry: HandlerRegistry | None = None
        self.dropped = 0
        # A sync worker's own: set when it is to drop what is left instead of running it.
        self._drop = threading.Event()
        # async handlers: deque + a wake-up future; sync: a thread-safe queue.
        self._queue: Any = queue.SimpleQueue() if not self.is_async else deque()
        self._wake: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._thread: threading.Thread | None = None
        self._exited: asyncio.Future | None = None
        self._pending = 0
        # offer() is bound per instance: dispatch then costs one call per handler.
        if self.is_async:
            self.offer = self._offer_async
        else:
            self.offer = self._queue.put

    def __repr__(self) -> str:
        kind = "async" if self.is_async else "sync"
        return f"<Handler {self.name!r} on {self.event!r} ({self.style}, {kind}) calls={self.calls} errors={self.errors}>"

    @property
    def calls(self) -> int:
        """Completed calls, those that raised included."""
        # Successes are counted by the worker, failures where they are
        # reported (on the loop): once `calls` includes a failure, its error
        # event has been recorded.
        return self._ok + self.errors

    @property
    def mean_time(self) -> float:
        """Mean seconds per call (0.0 before the first call)."""
        return self.total_time / self.calls if self.calls else 0.0

    @property
    def busy_for(self) -> float | None:
        """Seconds the call in progress has been running, or None when idle."""
        since = self._busy_since
        return None if since is None else perf_counter() - since

    @property
    def behind_for(self) -> float | None:
        """Seconds since this handler's queue was last empty, while events wait
        in it (None when nothing waits): how long it has been behind."""
        if not self.queued:
            return None
        return max(0.0, perf_counter() - self._caught_up)

    @property
    def queued(self) -> int:
        """Events waiting in this handler's queue."""
        return len(self._queue) if self.is_async else self._queue.qsize()

    def accepts(self, event: dict) -> bool:
        """Whether ``event`` passes this handler's filters."""
        if not self._has_filters:
            return True
        if self._channels is not None and channel_of(event) not in self._channels:
            return False
        if self._subtypes is not None and event.get("subtype") not in self._subtypes:
            return False
        if self._commands is not None and event.get("command") not in self._commands:
            return False
        if self._match is not None:
            text = event.get("text")
            if not isinstance(text, str) or self._match.search(text) is None:
                return False
        return True

    # -- intake side (on the loop) -------------------------------------------------

    def _offer_async(self, event: dict) -> None:
        self._queue.append(event)
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    # -- workers ---------------------------------------------------------------------

    def _start(self, registry: HandlerRegistry, loop: asyncio.AbstractEventLoop) -> None:
        self._registry = registry
        if self.is_async:
            self._task = loop.create_task(self._run_async(), name=f"rtm-handler-{self.name}")
        else:
            self._exited = loop.create_future()
            self._drop = threading.Event()
            self._thread = threading.Thread(
                target=self._run_sync, args=(loop, self._exited, self._queue, self._drop),
                name=f"rtm-handler-{self.name}", daemon=True
            )
            self._thread.start()

    def _caller(self) -> Callable[[dict], Any]:
        """fn bound to everything but the event, built once per worker."""
        reg = self._registry
        assert reg is not None
        fn = self.fn
        if self.style == "seed":
            base = dict(reg.seed_kwargs(self.is_async)) if reg.seed_kwargs else {}
            return lambda event: fn(**base, data=_seed_data(event))
        return functools.partial(fn, reg.owner)

    async def _run_async(self) -> None:
        q = self._queue
        loop = asyncio.get_running_loop()
        call = self._caller()
        while True:
            if not q:
                self._wake = loop.create_future()
                await self._wake
                self._caught_up = perf_counter()
                continue
            event = q.popleft()
            if event is _STOP:
                return
            result = None
            if self._has_filters and not self.accepts(event):
                if event.__class__ is Interaction and self.event != "*":
                    event.settle(None)
                continue
            self._busy_since = start = perf_counter()
            try:
                if self.call_context is not None:
                    with self.call_context():
                        result = await call(event)
                else:
                    result = await call(event)
            except Exception as exc:  # a handler's bug must not stop the others
                self.total_time += perf_counter() - start
                self._report(exc, _format(exc), event)
            else:
                self.total_time += perf_counter() - start
                self._ok += 1
            finally:
                self._busy_since = None
            if event.__class__ is Interaction and self.event != "*":
                event.settle(result)

    def _run_sync(self, loop: asyncio.AbstractEventLoop, exited: asyncio.Future, q: queue.SimpleQueue,
                  drop: threading.Event) -> None:
        # q, drop and exited are this thread's own: after a stop that timed
        # out, a restarted handler has new ones while this thread finishes its call.
        call = self._caller()
        try:
            while True:
                if q.empty():
                    # Caught up: whatever arrives now is not behind.
                    event = q.get()
                    self._caught_up = perf_counter()
                else:
                    event = q.get()
                if event is _STOP:
                    return
                if drop.is_set():
                    if self.accepts(event):
                        self.dropped += 1
                    continue
                result = None
                if self._has_filters and not self.accepts(event):
                    if event.__class__ is Interaction and self.event != "*":
                        hand_over(loop, event.settle, None)
                    continue
                self._busy_since = start = perf_counter()
                try:
                    if self.call_context is not None:
                        with self.call_context():
                            result = call(event)
                    else:
                        result = call(event)
                except Exception as exc:
                    self.total_time += perf_counter() - start
                    if not hand_over(loop, self._report, exc, _format(exc), event):
                        # the loop has closed: count it, nobody can be told
                        self.errors += 1
                        self.last_error = repr(exc)
                else:
                    self.total_time += perf_counter() - start
                    self._ok += 1
                finally:
                    self._busy_since = None
                if event.__class__ is Interaction and self.event != "*":
                    hand_over(loop, event.settle, result)
        finally:
            hand_over(loop, _resolve, exited)  # False: the loop has closed, nobody waits

    def _report(self, exc: Exception, tb: str, event: dict) -> None:
        """Count a failed call and tell the registry (on the loop)."""
        self.errors += 1
        self.last_error = repr(exc)
        reg = self._registry
        if reg is not None and reg.on_error is not None:
            reg.on_error(self, exc, tb, event)

    async def _stop(self, deliver: bool) -> None:
        """End the worker: with ``deliver``, once it has run the client's own
        events queued for it (``close`` above all); the Slack traffic still
        queued, which it would only answer into a closed socket, is counted
        as dropped (all of it without ``deliver``)."""
        self._drop_queued(keep=LIFECYCLE if deliver else frozenset())
        if self._task is not None:
            task, self._task = self._task, None
            reg = self._registry
            if not deliver or (reg is not None and task in reg.stopped_by and self._busy_since is not None):
                # A handler inside a call that waits for the stop would wait for
                # itself: it is cancelled out of that call rather than waited for.
                self._drop_queued()
                task.cancel()
            self._offer_async(_STOP)
            await asyncio.wait([task], timeout=STOP_TIMEOUT)
            if not task.done():
                task.cancel()
                await asyncio.wait([task])
            self._drop_queued()
        if self._thread is not None:
            if not deliver:
                self._drop.set()
            self._queue.put(_STOP)
            exited = self._exited
            if exited is not None and self._thread.is_alive():
                await asyncio.wait([exited], timeout=STOP_TIMEOUT)
                if not exited.done():
                    # Still inside a long call: what it has not started is dropped
                    # now, and the thread exits once that call returns.
                    self._drop.set()
                    self._drop_queued()
                    self._queue.put(_STOP)
                    self._thread = None
                    return
            self._thread.join(timeout=1.0)
            self._thread = None

    def _drop_queued(self, keep: frozenset[str] = frozenset()) -> None:
        """Count what is queued and would have run (filters applied) as dropped, and
        forget it, but for events whose type is in ``keep`` (they stay, in order)."""
        q = self._queue
        if self.is_async:
            left = list(q)
            q.clear()
        else:
            left = []
            while True:
                try:
                    left.append(q.get_nowait())
                except queue.Empty:
                    break
        kept = [event for event in left if event is _STOP or event.get("type") in keep]
        for event in kept:  # a worker still inside a call must still find its _STOP
            q.append(event) if self.is_async else q.put(event)
        self.dropped += sum(1 for event in left
                            if event is not _STOP and event.get("type") not in keep and self.accepts(event))

    def _stop_offline(self) -> None:
        """Stop without a loop (the loop has already gone): tell the thread to exit."""
        if self._thread is not None:
            self._drop.set()
            self._queue.put(_STOP)
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=STOP_TIMEOUT)
            self._thread = None


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class HandlerRegistry:
    """The handlers of one client, indexed by event type.

    ``owner`` is passed as the first argument to modern handlers
    (``fn(client, event)``); ``seed_kwargs(is_async)`` supplies the
    ``rtm_client``/``web_client`` keyword arguments of seed callbacks;
    ``on_error(handler, exc, traceback_text, event)`` is called on the loop
    when a handler raises.

    Workers start when :meth:`start` binds the registry to a loop; handlers
    added before that wait (their events are queued once dispatching starts).
    """

    def __init__(
        self,
        owner: Any = None,
        *,
        seed_kwargs: Callable[[bool], dict] | None = None,
        on_error: Callable[[Handler, Exception, str, dict], None] | None = None,
    ) -> None:
        self.owner = owner
        self.seed_kwargs = seed_kwargs
        self.on_error = on_error
        self._handlers: dict[str, Handler] = {}
        self._index: dict[str, tuple[Handler, ...]] = {}
        self._star: tuple[Handler, ...] = ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: set[asyncio.Task] = set()
        self._anon = itertools.count(1)
        #: tasks that asked the client to stop and wait for it (a handler's worker among them is not waited for)
        self.stopped_by: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self._handlers)

    def __iter__(self):
        return iter(list(self._handlers.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __getitem__(self, name: str) -> Handler:
        return self._handlers[name]

    def __repr__(self) -> str:
        return f"<HandlerRegistry {len(self._handlers)} handlers: {', '.join(self._handlers) or '-'}>"

    def add(
        self,
        event: str,
        fn: Callable,
        *,
        name: str | None = None,
        style: str = "modern",
        filters: dict | None = None,
        call_context: Callable[[], AbstractContextManager] | None = None,
    ) -> Handler:
        """Register ``fn`` for events of type ``event`` (``"*"`` for all; a
        slash command such as ``"/deploy"``: ``slash_command`` events of that command).

        ``name`` defaults to the function's name, so re-running a
        notebook cell that defines the same function replaces the handler
        instead of adding a second one. A handler with the same name is
        stopped first (its queued events are dropped) and replaced.
        """
        if not callable(fn):
            raise TypeError(f"handler {fn!r} is not callable")
        if not isinstance(event, str) or not event:
            raise TypeError(f"event must be a non-empty string such as 'message' or '*', not {event!r}")
        if event.startswith("/"):
            if len(event) < 2 or any(c.isspace() for c in event):
                raise SlackClientError(f"a slash command is one word after '/', such as '/deploy', not {event!r}")
            filters = {**(filters or {}), "command": event}
            event = SLASH_COMMAND
        if name is None:
            name = getattr(fn, "__name__", None)
            if not name or name == "<lambda>":
                # nothing stable to key on: every anonymous handler is a new one
                name = f"handler-{next(self._anon)}"
        handler = Handler(name, event, fn, style=style, filters=filters, call_context=call_context)
        old = self._handlers.pop(name, None)
        if old is not None:
            self._retire(old)
        self._handlers[name] = handler
        self._reindex()
        if self._loop is not None:
            handler._start(self, self._loop)
        return handler

    def register(self, events: list[str], fn: Callable, *, name: str | None = None, filters: dict | None = None,
                 call_context: Callable[[], AbstractContextManager] | None = None) -> None:
        """Register a modern handler ``fn(client, event)`` for each of ``events``
        (named ``name:event`` when there are several)."""
        validate_handler(fn)
        base = name or getattr(fn, "__name__", None)
        for ev in events:
            hname = base if len(events) == 1 or base is None else f"{base}:{ev}"
            self.add(ev, fn, name=hname, filters=filters, call_context=call_context)

    def remove(self, name: str) -> bool:
        """Remove the handler called ``name``; return whether there was one."""
        old = self._handlers.pop(name, None)
        if old is None:
            return False
        self._reindex()
        self._retire(old)
        return True

    def clear(self) -> None:
        """Remove every handler."""
        old = list(self._handlers.values())
        self._handlers.clear()
        self._reindex()
        for h in old:
            self._retire(h)

    def matching(self, event_type: str, event: dict) -> list[Handler]:
        """Handlers that would be called for ``event`` (type and filters)."""
        return [h for h in (*self._index.get(event_type, ()), *self._star) if h.accepts(event)]

    def stats(self) -> list[dict]:
        """One dict per handler: name, event, style, kind, calls, errors, last_error, mean_time, queued,
        dropped, busy_for (seconds the call in progress has run, None when idle), behind_for (seconds
        since its queue was last empty while events wait in it, None when none wait), filters."""
        return [
            {
                "name": h.name,
                "event": h.event,
                "style": h.style,
                "kind": "async" if h.is_async else "sync",
                "calls": h.calls,
                "errors": h.errors,
                "last_error": h.last_error,
                "mean_time": h.mean_time,
                "queued": h.queued,
                "dropped": h.dropped,
                "busy_for": h.busy_for,
                "behind_for": h.behind_for,
                "filters": {k: getattr(v, "pattern", v) for k, v in h.filters.items()},
            }
            for h in self._handlers.values()
        ]

    def dispatch(self, event_type: str | None, event: dict) -> None:
        """Queue ``event`` for every handler of its type and every ``"*"`` handler."""
        hs = self._index.get(event_type)
        if hs:
            for h in hs:
                h.offer(event)
        for h in self._star:
            h.offer(event)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to ``loop`` and start every handler's worker (idempotent)."""
        if self._loop is loop:
            return
        if self._loop is not None:
            raise RuntimeError("this handler registry already runs on another event loop; stop it first")
        self._loop = loop
        for h in self._handlers.values():
            h._start(self, loop)

    async def stop(self) -> None:
        """Stop every worker once it has run what is queued for it (handlers stay
        registered; :meth:`start` restarts them)."""
        handlers = list(self._handlers.values())
        # together: several handlers stuck in long calls cost one timeout, not one each
        await asyncio.gather(*(h._stop(deliver=True) for h in handlers))
        for h in handlers:
            h._drop_queued()  # dispatched while the others were stopping (a close handler's error, say)
            h._queue = deque() if h.is_async else queue.SimpleQueue()
            if not h.is_async:
                h.offer = h._queue.put
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        self.stopped_by.clear()
        self._loop = None

    def stop_offline(self) -> None:
        """Stop every worker when no loop runs any more (threads are told to exit)."""
        for h in self._handlers.values():
            h._stop_offline()

    def _retire(self, handler: Handler) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            handler._stop_offline()
            return
        task = loop.create_task(handler._stop(deliver=False), name=f"rtm-retire-{handler.name}")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _reindex(self) -> None:
        index: dict[str, list[Handler]] = {}
        star = []
        for h in self._handlers.values():
            if h.event == "*":
                star.append(h)
            else:
                index.setdefault(h.event, []).append(h)
        self._index = {k: tuple(v) for k, v in index.items()}
        self._star = tuple(star)

