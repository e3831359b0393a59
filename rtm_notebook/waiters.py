"""Waiting for events: ``await client.wait_for(type, count)`` and ``await client.connect()``'s hello."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Waiters"]


class Waiters:
    """The futures of one client's callers waiting for events. Used on its loop only."""

    def __init__(self) -> None:
        self._hello: list[asyncio.Future] = []
        #: [type, count, future, collected] per wait_for; never replaced, so
        #: intake can test it for emptiness without a call
        self.pending: list[list] = []

    def hello(self) -> asyncio.Future:
        """A future settled by the next ``hello``."""
        fut = asyncio.get_running_loop().create_future()
        self._hello.append(fut)
        return fut

    def said_hello(self) -> None:
        waiters, self._hello = self._hello, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_for(self, type: str, count: int, timeout: float | None) -> Any:
        if count < 1:
            raise ValueError("count must be at least 1")
        fut = asyncio.get_running_loop().create_future()
        entry = [type, count, fut, []]
        self.pending.append(entry)
        try:
            async with asyncio.timeout(timeout):
                events = await fut
        finally:
            if entry in self.pending:
                self.pending.remove(entry)
        return events[0] if count == 1 else events

    def check(self, t: str, event: dict) -> None:
        """An event of type ``t`` arrived (called only while someone waits)."""
        for entry in list(self.pending):
            want, count, fut, got = entry
            if want == t or want == "*":
                got.append(event)
                if len(got) >= count:
                    self.pending.remove(entry)
                    if not fut.done():
                        fut.set_result(got)

    def fail(self, exc: BaseException) -> None:
        """Everyone waiting gets ``exc`` (the client stopped)."""
        hello, self._hello = self._hello, []
        waits = self.pending[:]
        self.pending.clear()
        for fut in [*hello, *(w[2] for w in waits)]:
            if not fut.done():
                fut.set_exception(exc)
