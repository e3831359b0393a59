"""How a client runs on the event loop that owns it (DESIGN.md's loop rules 1 to 4).

A :class:`Runner` runs its owner's session as one task on one loop: the
running loop when there is one (a Jupyter cell, ``asyncio.run``), else the
loop a script set, else its own. It never nests loops, never patches
asyncio, keeps a reference to every task it makes and cancels them all on
stop. The owner gives three hooks: ``_launched(loop)`` (about to run),
``_session()`` (the coroutine of one run; it calls :meth:`Runner.release`
on its way out) and ``_released()`` (free what the run held), plus
``_stop_offline()`` for a stop when no loop runs any more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from rtm_notebook.errors import SlackClientError
from rtm_notebook.loops import call_soon, current_loop, on_loop_thread, running_loop

__all__ = ["Runner"]


class Runner:
    """Runs ``owner``'s session on its loop; see the module docs."""

    def __init__(self, owner: Any, *, loop: asyncio.AbstractEventLoop | None = None, run_async: bool = False) -> None:
        self.owner = owner
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_arg = loop
        self.run_async = run_async
        self.task: asyncio.Task | None = None
        self._release_task: asyncio.Task | None = None
        #: stop() was asked for / everything has been (or is being) released
        self.stopping = self.released = False
        #: the error that ended the run; a script's start() raises it
        self.ended_by: BaseException | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> Any:
        running = running_loop()
        if running is not None:
            return self.launch(running)
        loop = self._loop_arg or current_loop()
        if self.run_async:
            return self.launch(loop or asyncio.new_event_loop())
        try:
            if loop is None:
                asyncio.run(self._main())
            else:
                main = loop.create_task(self._main(), name=f"rtm-main-{id(self.owner):x}")
                try:
                    loop.run_until_complete(main)
                except KeyboardInterrupt:
                    # Let the run end as asyncio.run would: cancelled, its stop
                    # awaited, no task left pending on the caller's loop.
                    main.cancel()
                    try:
                        loop.run_until_complete(main)
                    except asyncio.CancelledError:
                        pass
        except KeyboardInterrupt:
            pass
        return None

    async def _main(self) -> None:
        task = self.launch(asyncio.get_running_loop())
        try:
            await asyncio.wait([task])
        finally:
            await self.async_stop()
        if self.ended_by is not None:
            raise self.ended_by

    def launch(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task:
        """Schedule a run on ``loop`` (the running one: idempotent)."""
        name = type(self.owner).__name__
        if self.running:
            if self.loop is loop:
                return self.task
            raise SlackClientError(f"this {name} is already running on another event loop; stop() it first")
        if self._release_task is not None and not self._release_task.done():
            raise SlackClientError(f"this {name} is still stopping; await client.async_stop() before starting it again")
        self.loop = loop
        self._release_task = None
        self.stopping = self.released = False
        self.ended_by = None
        self.owner._launched(loop)
        self.task = loop.create_task(self.owner._session(), name=f"rtm-session-{id(self.owner):x}")
        return self.task

    def stop(self) -> Any:
        loop = self.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            self.owner._stop_offline()
            return None
        if on_loop_thread(loop):
            # A future of its own, never the session task: a handler awaiting it
            # may be cancelled out of the await without cancelling the stop.
            self._stopper(asyncio.current_task())
            waitable = self._begin_stop()
            done = loop.create_future()
            waitable.add_done_callback(lambda _: done.done() or done.set_result(None))
            return done
        threaded: concurrent.futures.Future = concurrent.futures.Future()

        def begin() -> None:
            try:
                self._begin_stop().add_done_callback(lambda _: threaded.set_result(None))
            except BaseException as exc:
                threaded.set_exception(exc)

        call_soon(loop, begin)
        return threaded

    def _stopper(self, task: asyncio.Task | None) -> None:
        """Note a task that waits for the stop (a handler's worker must not be waited for by it)."""
        if task is not None:
            self.owner.handlers.stopped_by.add(task)

    async def async_stop(self) -> None:
        if self.loop is None:
            self.owner._stop_offline()
            return
        self._stopper(asyncio.current_task())
        while True:
            waitable = self._begin_stop()
            if waitable.done():
                return
            # asyncio.wait, not await: a caller that is itself stopped (a
            # handler's worker) must not cancel the shutdown with it.
            await asyncio.wait([waitable])

    def _begin_stop(self) -> asyncio.Future:
        """Start stopping; return what completes once everything is released:
        the run's task while it runs (it releases on its way out), else a task
        releasing what is left."""
        self.stopping = True
        if self.running:
            if not self.released:  # a run already releasing must not be cut half-way
                self.task.cancel()
            return self.task
        if not self.released:
            self.released = True
            self._release_task = self.loop.create_task(self.release(), name=f"rtm-release-{id(self.owner):x}")
        if self._release_task is not None:
            return self._release_task
        fut = self.loop.create_future()
        fut.set_result(None)
        return fut

    async def release(self) -> None:
        """Cancel every task of the run, then let the owner free the rest."""
        self.released = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self.owner._released()

    def spawn(self, coro: Any, name: str) -> asyncio.Task:
        """A task of the run, referenced until done and cancelled on stop."""
        task = self.loop.create_task(coro, name=f"rtm-{name}-{id(self.owner):x}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
