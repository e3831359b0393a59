"""Event-loop helpers: which loop a client lives on, and the one way work is handed to it.

One loop owns a client (DESIGN.md rule 1); any other thread (a widget
callback on ipykernel 7's subshell thread, a sync handler's worker, a test)
hands work over with :func:`call_soon` (fire and forget), :func:`call`
(wait for the result) or :func:`submit` (a coroutine), all built on
:func:`hand_over`. The client, the notebook layer and the simulated
workspace all use these; nothing else calls ``call_soon_threadsafe``.

In a Jupyter kernel the client lives on the kernel's own, already running
loop. In plain Python or terminal IPython no loop runs between statements,
so the magics give the client a :class:`BackgroundLoop`: one daemon thread
running its own loop, which they may block on (they are not on it).
This module imports nothing of the package.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import warnings
from collections.abc import Callable, Coroutine
from typing import Any


def in_kernel() -> bool:
    """True when running inside a Jupyter kernel (widgets can be shown)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def current_loop() -> asyncio.AbstractEventLoop | None:
    """The loop a script set for this thread (``asyncio.set_event_loop``), or None.

    What slackclient 2.x's ``asyncio.get_event_loop()`` found when one is
    set, without its deprecation warning (3.12, 3.13) or error (3.14) when
    none is. Where asyncio makes one because none was set (3.11 to 3.13 say
    so with that warning), it is closed again and None returned: the caller
    then runs its own with ``asyncio.run``, which leaves nothing open.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            return None
    if any(issubclass(w.category, DeprecationWarning) for w in caught):
        asyncio.set_event_loop(None)
        loop.close()
        return None
    return None if loop.is_closed() else loop


def on_loop_thread(loop: asyncio.AbstractEventLoop | None) -> bool:
    """True when the caller is running on ``loop``'s thread right now."""
    return loop is not None and running_loop() is loop


def _usable(loop: asyncio.AbstractEventLoop | None) -> bool:
    # A loop not running (yet, or any more) has no owner to protect.
    return loop is not None and not loop.is_closed() and loop.is_running() and not on_loop_thread(loop)


def hand_over(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> bool:
    """Schedule ``fn(*args)`` on ``loop`` from any thread; False (nothing
    scheduled) when the loop has closed."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        return False
    return True


def call_soon(loop: asyncio.AbstractEventLoop | None, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` on ``loop`` soon; at once when already on it or when no loop runs it."""
    if not _usable(loop) or not hand_over(loop, fn, *args):
        fn(*args)


def call(loop: asyncio.AbstractEventLoop | None, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
    """Run ``fn(*args)`` on ``loop`` and return its result (or raise its exception).

    From another thread this waits up to ``timeout`` seconds
    (``concurrent.futures.TimeoutError`` after); on the loop's thread, or
    with no loop running, it is a plain call.
    """
    if not _usable(loop):
        return fn(*args)
    done: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # handed to the calling thread
            done.set_exception(exc)

    if not hand_over(loop, run):
        return fn(*args)
    return done.result(timeout)


def submit(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
    """Run ``coro`` on ``loop`` (running in another thread); its concurrent future."""
    return asyncio.run_coroutine_threadsafe(coro, loop)


class BackgroundLoop:
    """An asyncio loop running forever in a daemon thread.

    Used outside a kernel, where nothing runs a loop between statements.
    ``run(coro, timeout)`` blocks the calling thread until the coroutine is
    done on the background loop; never call it from the loop's own thread.
    """

    def __init__(self, name: str = "rtm-notebook-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()
        # Let cancelled tasks finish their cleanup before the loop closes.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        """Schedule ``coro`` on the background loop; returns a concurrent future."""
        return submit(self.loop, coro)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run ``coro`` on the background loop and wait for its result."""
        if on_loop_thread(self.loop):
            coro.close()
            raise RuntimeError("BackgroundLoop.run() called from its own loop thread: await the coroutine instead")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop (cancelling what still runs on it) and join the thread."""
        if self._thread.is_alive():
            hand_over(self.loop, self.loop.stop)
            self._thread.join(timeout)
