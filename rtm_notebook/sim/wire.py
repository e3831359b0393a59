"""What the simulated workspace's RTM and Socket Mode servers share on the wire.

Server-side WebSocket framing (one text frame's header, so many frames go
out in one transport write), JSON answers, and reading a request's
``Authorization`` and local address. No state: both servers import these.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import orjson
from aiohttp import web

SEND_SLICE = 512  # frames a socket writes at once before letting other work run
WRITE_BUFFER_HIGH = 1 << 20  # bytes buffered for a socket before its sender waits
CLOSE_TIMEOUT = 2.0  # seconds a client has to answer a close frame


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=dumps)


def text_header(length: int) -> bytes:
    """The header of an unmasked text frame of ``length`` bytes (RFC 6455 section 5.2)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


def local_address(request: web.Request) -> str:
    """host:port the client reached, from the socket rather than the (client-chosen) Host header."""
    host, port = request.transport.get_extra_info("sockname")[:2]
    return f"{url_host(host)}:{port}"


def url_host(host: str) -> str:
    """The host to put in URLs: a wildcard bind is reached through loopback."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
