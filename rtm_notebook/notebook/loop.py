"""Kernel-loop helpers: find the loop a client should live on, hand work to it.

In a Jupyter kernel the client lives on the kernel's own, already running
loop; magics run on that loop's thread, so they schedule and return. In plain
Python or terminal IPython no loop runs between statements, so the client gets
a :class:`BackgroundLoop`: one daemon thread running its own loop, which the
magics may block on (they are not on it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, Coroutine


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


def on_loop_thread(loop: asyncio.AbstractEventLoop | None) -> bool:
    """True when the caller is running on ``loop``'s thread right now."""
    return loop is not None and running_loop() is loop


def call_on_loop(loop: asyncio.AbstractEventLoop | None, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` on ``loop``: the only thread allowed to touch client state.

    Widget callbacks arrive on a subshell thread under ipykernel 7, so every
    one of them comes through here. Without a usable loop (nothing started
    yet, or already closed) there is no owner to protect, and ``fn`` runs now.
    """
    if loop is None or loop.is_closed():
        fn(*args)
        return
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        # The loop closed between the check and the call.
        fn(*args)


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
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

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
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
