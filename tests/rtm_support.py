"""Helpers for the RTMClient tests: a simulated workspace and hang guards (never speed asserts)."""

from __future__ import annotations

import asyncio
import threading

from rtm_notebook import RTMClient

GUARD = 15.0  # seconds: only stops a broken test from hanging


def client_for(sim, **kwargs) -> RTMClient:
    kwargs.setdefault("ping_interval", 5)
    return RTMClient(token=sim.token, base_url=sim.base_url, **kwargs)


async def until(pred, what: str = "condition", guard: float = GUARD) -> None:
    """Poll ``pred`` on the loop until it is true; fail (not hang) after ``guard`` seconds."""
    try:
        async with asyncio.timeout(guard):
            while not pred():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"gave up waiting for {what}") from None


def rtm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rtm-handler-")]


def general(sim) -> str:
    return next(c["id"] for c in sim.channels if c["name"] == "general")


def human(sim) -> str:
    return next(u["id"] for u in sim.users if not u.get("is_bot") and u["id"] != sim.bot_user_id)


def received_types(sim) -> list[str]:
    return [f.get("type") for f in sim.received]


def assert_clean(rtm: RTMClient, before: set) -> None:
    """Nothing the client started is left: tasks, handler threads, sockets."""
    assert rtm.state == "stopped"
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert leftover == set(), leftover
    assert rtm_threads() == []
    assert rtm._link is None


async def no_sockets_left(sim) -> None:
    """The workspace sees every socket closed (it learns of a close on its own thread)."""
    await until(lambda: sim.open_sockets == 0, "the workspace to see the socket closed")
