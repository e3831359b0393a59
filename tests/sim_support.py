"""Helpers for the simulated-workspace tests: real HTTP and real sockets, no mocks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets

# Hang guards only, never assertions about speed.
RECV_TIMEOUT = 10.0


def api(sim, method: str, token: str | None = "default", **args: Any) -> httpx.Response:
    """POST a form to the workspace's Web API, as the bot unless ``token`` says otherwise."""
    headers = {}
    if token == "default":
        token = sim.token
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(sim.base_url + method, data=args, headers=headers, timeout=RECV_TIMEOUT)


def ok(sim, method: str, **args: Any) -> dict[str, Any]:
    body = api(sim, method, **args).json()
    assert body["ok"] is True, body
    return body


def socket_url(sim, token: str | None = None, **args: Any) -> str:
    return ok(sim, "rtm.connect", token=token or sim.token, **args)["url"]


class Socket:
    """A bare websockets client that decodes frames and remembers them."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, sim, token: str | None = None, **args: Any) -> Socket:
        url = socket_url(sim, token, **args)
        return cls(await websockets.connect(url, max_size=None, ping_interval=None))

    async def recv(self) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), RECV_TIMEOUT))
        self.frames.append(frame)
        return frame

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def until(self, pred, limit: int = 100_000) -> dict[str, Any]:
        """Receive until a frame matches ``pred``; returns it."""
        for _ in range(limit):
            frame = await self.recv()
            if pred(frame):
                return frame
        raise AssertionError("no matching frame")

    async def hello(self) -> Socket:
        frame = await self.recv()
        assert frame == {"type": "hello", "sim_seq": 1}
        return self

    async def close(self) -> None:
        await self.ws.close()


def channel_id(sim, name: str) -> str:
    return next(c["id"] for c in sim.channels if c["name"] == name)


# -- Socket Mode ------------------------------------------------------


def connections_open(sim, token: str | None = "default", **args: Any) -> httpx.Response:
    """POST apps.connections.open with the app-level token in Authorization (unless ``token`` says otherwise)."""
    return api(sim, "apps.connections.open", token=sim.app_token if token == "default" else token, **args)


def link_url(sim, debug_reconnects: bool = False) -> str:
    body = connections_open(sim).json()
    assert body["ok"] is True, body
    return body["url"] + ("&debug_reconnects=true" if debug_reconnects else "")


class SmSocket(Socket):
    """A bare websockets client on a Socket Mode URL."""

    @classmethod
    async def open(cls, sim, debug_reconnects: bool = False) -> SmSocket:  # type: ignore[override]
        return cls(await websockets.connect(link_url(sim, debug_reconnects), max_size=None, ping_interval=None))

    async def hello(self) -> SmSocket:
        frame = await self.recv()
        assert frame["type"] == "hello", frame
        return self

    async def envelope(self) -> dict[str, Any]:
        """The next frame, which must be an envelope."""
        frame = await self.recv()
        assert "envelope_id" in frame, frame
        return frame

    async def ack(self, envelope: dict[str, Any], payload: dict[str, Any] | None = None) -> None:
        frame: dict[str, Any] = {"envelope_id": envelope["envelope_id"]}
        if payload is not None:
            frame["payload"] = payload
        await self.send(frame)

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Every frame that arrives within ``seconds`` (to show that nothing more comes)."""
        frames = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                frames.append(json.loads(await asyncio.wait_for(self.ws.recv(), left)))
            except TimeoutError:
                break
        return frames


def human(sim) -> str:
    return next(u["id"] for u in sim.users if not u["is_bot"])


def wait_sync(pred, timeout: float = 15.0) -> bool:
    """Poll until ``pred()`` from a thread with no loop (a hang guard: it only bounds
    how long a failure takes to show); False if it never came."""
    import time

    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
