"""The simulated workspace's server: Web API, RTM and Socket Mode sockets on one aiohttp app.

Socket Mode's logic is in ``socketmode.py``; this module mounts its routes
and hands it every event it broadcasts.

It runs in its own thread with its own event loop, so a notebook kernel's
loop never hosts it and a client under test cannot starve it (nor it the
client). Public methods of :class:`SimWorkspace` may be called from any
thread: they hand the work to the server's loop and wait for it.

Where ``PROTOCOL.md`` is silent the server mimics real Slack, and the
comments say so.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import copy
import ipaddress
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import WSMsgType, web

from rtm_notebook.loops import call, hand_over, submit
from rtm_notebook.sim.export import snapshot, write_export
from rtm_notebook.sim.model import Workspace
from rtm_notebook.sim.socketmode import SocketMode, SocketModeApi
from rtm_notebook.sim.traffic import Traffic
from rtm_notebook.sim.webapi import ApiError, Args, WebApi
from rtm_notebook.sim.wire import CLOSE_TIMEOUT, SEND_SLICE, WRITE_BUFFER_HIGH
from rtm_notebook.sim.wire import bearer as _bearer
from rtm_notebook.sim.wire import json_response as _json
from rtm_notebook.sim.wire import local_address as _local_address
from rtm_notebook.sim.wire import text_header as _text_header
from rtm_notebook.sim.wire import url_host as _url_host

log = logging.getLogger(__name__)

URL_TTL = 30.0  # seconds a socket URL stays valid (Slack: 30 s)
MAX_CLIENT_FRAME = 16 * 1024  # a bigger client frame disconnects the client
RTM_MAX_TEXT = 4_000
MAX_BODY = 1 << 20  # Web API request bodies
# Client frame limit: about 1 message per second sustained, with a small burst.
BUCKET_SIZE = 5
BUCKET_RATE = 1.0
# The generator waits while any socket has this many frames not yet written,
# so a slow reader bounds memory instead of growing a queue without end.
BACKLOG_HIGH = 20_000
GEN_BATCH = 256  # events the generator makes before letting other work run
CALL_TIMEOUT = 30.0

# RTM error codes. Slack documents -1 (slow down), 1 (URL expired) and 2
# (text missing); the others are the simulator's own, with Slack-like texts.
E_SLOW_DOWN = {"code": -1, "msg": "slow down, too many messages..."}
E_EXPIRED = {"code": 1, "msg": "Socket URL has expired"}
E_NO_TEXT = {"code": 2, "msg": "message text is missing"}
E_TOO_LONG = {"code": 3, "msg": "message text is too long (4000 characters at most)"}
E_NO_CHANNEL = {"code": 4, "msg": "channel not found"}
E_NOT_IN_CHANNEL = {"code": 5, "msg": "not in channel"}
E_BAD_FRAME = 6
E_UNSUPPORTED = {"code": 7, "msg": "unsupported message type"}

MALFORMED_KINDS = ("not_json", "binary", "no_type", "array", "huge", "nested", "bad_utf8")


class _Ticket:
    __slots__ = ("issued", "user", "expired", "used", "batch_presence", "presence_sub")

    def __init__(self, user: str, expired: bool, batch_presence: bool, presence_sub: bool) -> None:
        self.issued = time.monotonic()
        self.user = user
        self.expired = expired
        self.used = False
        self.batch_presence = batch_presence
        self.presence_sub = presence_sub


class _Conn:
    """One RTM socket: its writer queue and per-socket state.

    Every frame goes through ``queue`` and one sender task, so ``sim_seq``
    follows wire order. Items are encoded JSON objects (``bytes``, which get
    ``sim_seq`` spliced in), or tuples ``("raw", data, opcode)`` and
    ``("close", code, reason)``.
    """

    __slots__ = ("number", "user", "ws", "request", "queue", "wake", "seq", "closing", "ignore_input",
                 "subs", "batch_presence", "tokens", "refilled", "sender")

    def __init__(self, number: int, user: str, ws: web.WebSocketResponse, request: web.Request, ticket: _Ticket) -> None:
        self.number = number
        self.user = user
        self.ws = ws
        self.request = request
        self.queue: collections.deque[Any] = collections.deque()
        self.wake = asyncio.Event()
        self.seq = 0
        self.closing = False  # the sender must write nothing more
        self.ignore_input = False  # client frames are no longer answered
        # None: every presence change; a set: only these users (presence_sub).
        self.subs: set[str] | None = set() if ticket.presence_sub else None
        self.batch_presence = ticket.batch_presence
        self.tokens = float(BUCKET_SIZE)
        self.refilled = time.monotonic()
        self.sender: asyncio.Task | None = None

    def push(self, item: Any) -> None:
        self.queue.append(item)
        self.wake.set()

    def send(self, event: dict[str, Any]) -> None:
        self.push(orjson.dumps(event))


class _RtmSockets:
    """SimWorkspace's RTM sockets: rtm.connect/rtm.start, the socket handler, its sender and the client's frames.

    A base class of :class:`SimWorkspace`, on whose loop and state it runs."""

    def _rtm_connect(self, request: web.Request, caller: str, data: dict[str, Any], *, full: bool) -> dict[str, Any]:
        args = Args(data)
        now = time.monotonic()
        for key in [k for k, t in self._tickets.items() if now - t.issued > 2 * URL_TTL]:
            del self._tickets[key]
        ticket = _Ticket(caller, self._expire_next, args.bool("batch_presence_aware"), args.bool("presence_sub"))
        self._expire_next = False
        key = secrets.token_urlsafe(18)
        self._tickets[key] = ticket
        ws, me = self._ws, self._ws.users[caller]
        body: dict[str, Any] = {
            "ok": True,
            "url": f"ws://{_local_address(request)}/websocket/{key}",
            "team": {"id": ws.team_id, "name": ws.team["name"], "domain": ws.team["domain"]},
            "self": {"id": caller, "name": me["name"]},
        }
        if full:
            convs = list(ws.conversations.values())
            body.update(
                self={"id": caller, "name": me["name"], "prefs": {"emoji_use": "default", "tz": me["tz"]},
                      "created": me["updated"], "manual_presence": "active"},
                team=dict(ws.team),
                users=[dict(u) for u in ws.users.values()],
                channels=[dict(c.to_api(caller), members=sorted(c.members)) for c in convs if c.kind == "public"],
                groups=[dict(c.to_api(caller), members=sorted(c.members)) for c in convs
                        if c.kind == "private" and caller in c.members],
                ims=[c.to_api(caller) for c in convs if c.kind == "im" and caller in c.members],
                bots=[dict(b) for b in ws.bots],
                mpims=[],
                cache_ts=int(time.time()),
                latest_event_ts=ws.clock.next(),
            )
        return body

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = self._tickets.get(request.match_info["ticket"])
        if ticket is None:
            # Not a URL this workspace handed out: refuse the handshake.
            return _json({"ok": False, "error": "invalid_url"}, status=404)
        # autoping off: a stalled server must not answer protocol pings either.
        # autoclose off: the reader answers a client's close itself (see _close_now).
        ws = web.WebSocketResponse(max_msg_size=MAX_CLIENT_FRAME, compress=False, timeout=CLOSE_TIMEOUT,
                                   autoping=False, autoclose=False)
        await ws.prepare(request)
        self._conn_count += 1
        conn = _Conn(self._conn_count, ticket.user, ws, request, ticket)
        conn.sender = self._spawn(self._sender(conn))
        if ticket.used or ticket.expired or time.monotonic() - ticket.issued > URL_TTL:
            # Slack: a stale (or reused: URLs are single-use) URL gets this, then the close.
            conn.send({"type": "error", "error": E_EXPIRED})
            conn.push(("close", 1000, b""))
            conn.ignore_input = True
        else:
            ticket.used = True
            conn.send({"type": "hello"})
            self._conns[conn.number] = conn
            self._socket_opened()
        try:
            while True:
                msg = await ws.receive()
                kind = msg.type
                if kind is WSMsgType.TEXT:
                    if not (conn.ignore_input or conn.closing):
                        self._on_client_frame(conn, msg.data)
                elif kind is WSMsgType.BINARY:
                    if not (conn.ignore_input or conn.closing):
                        conn.send({"type": "error", "error": {"code": E_BAD_FRAME,
                                                              "msg": "binary frames are not supported; send JSON text"}})
                elif kind is WSMsgType.PING:
                    if not self._stalled:
                        await ws.pong(msg.data)
                elif kind is WSMsgType.CLOSE:
                    if conn.closing:  # the answer to our close frame: the handshake is done
                        conn.request.transport.close()
                    else:  # the client closes: answer with 1000 and hang up
                        conn.closing = True
                        await ws.close(drain=False)
                    break
                elif kind is not WSMsgType.PONG:
                    # CLOSED, or ERROR: a frame over the limit (aiohttp has
                    # sent close 1009) or a broken connection.
                    break
        finally:
            self._conns.pop(conn.number, None)
            conn.closing = True
            conn.sender.cancel()
        return ws

    async def _sender(self, conn: _Conn) -> None:
        """Write the socket's queue in order, many frames per transport write.

        Events are framed here rather than by aiohttp, which awaits once and
        writes once per frame: the firehose needs a slice of frames joined
        into one write. A server frame is unmasked (RFC 6455 section 5.2), so
        framing is a 2-10 byte header per payload. Control items (raw frames
        with another opcode, close) follow the batch.
        """
        ws, queue = conn.ws, conn.queue
        transport = conn.request.transport
        try:
            # ws.closed turns true as soon as aiohttp starts a close (for
            # example after a frame over the limit): nothing may follow it.
            while not conn.closing and not ws.closed:
                if not queue or self._stalled:
                    conn.wake.clear()
                    await conn.wake.wait()
                    continue
                parts: list[bytes] = []
                seq = conn.seq
                control = None
                while queue and len(parts) < 2 * SEND_SLICE:  # two parts per frame
                    item = queue.popleft()
                    if type(item) is not bytes:
                        control = item
                        break
                    seq += 1
                    payload = item[:-1] + b',"sim_seq":%d}' % seq
                    parts.append(_text_header(len(payload)))
                    parts.append(payload)
                if parts:
                    if transport is None or transport.is_closing() or ws.closed:
                        raise ConnectionResetError
                    # Counted before the write: its send() releases the GIL, and a
                    # client in another thread could read the frames and check
                    # ``sent`` before the count was updated.
                    conn.seq = seq
                    self._sent[conn.number] = seq
                    transport.write(b"".join(parts))
                if control is not None:
                    if control[0] == "raw":
                        await ws.send_frame(control[1], control[2])
                    else:
                        self._close_now(conn, control[1], control[2])
                        return
                # Let the peer catch up before queueing more in the kernel's
                # buffers, and let the loop's other work run between slices.
                while transport.get_write_buffer_size() > WRITE_BUFFER_HIGH and not transport.is_closing():
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0)
        except ConnectionError:
            conn.closing = True  # the peer went away; the reader notices too

    def _on_client_frame(self, conn: _Conn, text: str) -> None:
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            frame = None
        if not isinstance(frame, dict):
            conn.send({"type": "error", "error": {"code": E_BAD_FRAME, "msg": "frames must be JSON objects"}})
            return
        self._received.append(frame)
        kind = frame.get("type")
        msg_id = frame.get("id")
        if kind == "ping":
            if not self._stalled:
                pong = {k: v for k, v in frame.items() if k not in ("type", "id")}
                pong["type"] = "pong"
                pong["reply_to"] = msg_id
                conn.send(pong)
            return
        if kind in ("presence_sub", "presence_query"):
            self._on_presence(conn, frame, kind, msg_id)
            return
        if kind in ("message", "typing") and not self._take_token(conn):
            conn.send({"ok": False, "reply_to": msg_id, "error": E_SLOW_DOWN})
            conn.push(("close", 1008, b"too many messages"))
            conn.ignore_input = True
            return
        if kind == "message":
            self._on_message(conn, frame, msg_id)
        elif kind == "typing":
            conv = self._ws.conversation(frame.get("channel")) if isinstance(frame.get("channel"), str) else None
            # Slack ignores typing for a channel you cannot see, so does the sim.
            if conv is not None and self._ws.visible(conv, conn.user):
                self._broadcast({"type": "user_typing", "channel": conv.id, "user": conn.user}, exclude=conn)
        else:
            conn.send({"ok": False, "reply_to": msg_id, "error": E_UNSUPPORTED})

    def _take_token(self, conn: _Conn) -> bool:
        now = time.monotonic()
        conn.tokens = min(BUCKET_SIZE, conn.tokens + (now - conn.refilled) * BUCKET_RATE)
        conn.refilled = now
        if conn.tokens < 1.0:
            return False
        conn.tokens -= 1.0
        return True

    def _on_message(self, conn: _Conn, frame: dict[str, Any], msg_id: Any) -> None:
        def fail(error: dict[str, Any]) -> None:
            conn.send({"ok": False, "reply_to": msg_id, "error": error})

        channel, text, thread_ts = frame.get("channel"), frame.get("text"), frame.get("thread_ts")
        conv = self._ws.conversation(channel) if isinstance(channel, str) else None
        if conv is None or not self._ws.visible(conv, conn.user):
            return fail(E_NO_CHANNEL)
        if conn.user not in conv.members:
            return fail(E_NOT_IN_CHANNEL)
        if not isinstance(text, str) or not text:
            return fail(E_NO_TEXT)
        if len(text) > RTM_MAX_TEXT:
            return fail(E_TOO_LONG)
        try:
            msg, event = self._api.new_message(conv, conn.user, text, thread_ts if isinstance(thread_ts, str) else None)
        except ApiError as exc:
            return fail({"code": E_BAD_FRAME, "msg": exc.error})
        conn.send({"ok": True, "reply_to": msg_id, "ts": msg["ts"], "text": text})
        self._broadcast(event, exclude=conn)

    def _on_presence(self, conn: _Conn, frame: dict[str, Any], kind: str, msg_id: Any) -> None:
        ids = frame.get("ids")
        if not isinstance(ids, list) or len(ids) > 500 or not all(isinstance(i, str) for i in ids):
            conn.send({"ok": False, "reply_to": msg_id,
                       "error": {"code": E_BAD_FRAME, "msg": "ids must be a list of at most 500 user IDs"}})
            return
        if kind == "presence_sub":
            conn.subs = set(ids)
        known = [u for u in ids if u in self._ws.presence]
        if conn.batch_presence:
            for presence in ("active", "away"):
                users = [u for u in known if self._ws.presence[u] == presence]
                if users:
                    conn.send({"type": "presence_change", "users": users, "presence": presence})
        else:
            for user in known:
                conn.send({"type": "presence_change", "user": user, "presence": self._ws.presence[user]})


class _Faults:
    """The RTM faults a test arms on SimWorkspace, each callable from any thread while it runs.

    A base class of :class:`SimWorkspace`."""

    def drop_connections(self) -> None:
        """Abort every socket's TCP connection (RTM and Socket Mode): no close frame, no goodbye."""
        def drop() -> None:
            for conn in self._all_conns():
                conn.closing = True
                if conn.request.transport is not None:
                    conn.request.transport.abort()
        self._call(drop)

    def send_goodbye(self) -> None:
        """Send ``goodbye`` on every RTM socket (after what is queued), then close it.

        Socket Mode has no goodbye: see ``socket_mode_disconnect``.
        """
        def goodbye() -> None:
            for conn in self._conns.values():
                conn.send({"type": "goodbye"})
                conn.push(("close", 1000, b""))
        self._call(goodbye)

    def close_sockets(self, code: int = 1000, reason: str = "") -> None:
        """Close every socket (RTM and Socket Mode) now with this close code."""
        if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
            raise ValueError(f"{code} is not a close code a server may send; use 1000-1003, 1007-1014 or 3000-4999")
        if len(reason.encode()) > 123:
            raise ValueError("a close reason is at most 123 bytes of UTF-8")

        def close() -> None:
            for conn in self._all_conns():
                self._close_now(conn, code, reason.encode())
        self._call(close)

    def _close_now(self, conn: _Conn, code: int, reason: bytes) -> None:
        """Send a close frame now; the reader completes the handshake.

        The frame is written here instead of by ``ws.close()``: called from
        another task while the reader waits, aiohttp closes the TCP
        connection without waiting for the client's close frame, and a
        client still sending then gets a reset that loses what was in
        flight (the close frame included).
        """
        if conn.closing:
            return
        conn.closing = True
        transport = conn.request.transport
        if transport is None or transport.is_closing() or conn.ws.closed:
            return
        payload = code.to_bytes(2, "big") + reason
        transport.write(bytes((0x88, len(payload))) + payload)
        # A client that never answers the close loses its connection.
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)

    def stall(self, seconds: float | None = None) -> None:
        """Stop answering pings and stop sending, for ``seconds`` (None: until ``stall(0)``).

        Nothing is lost: events queue up and go out when the stall ends.
        """
        def apply() -> None:
            if self._stall_handle is not None:
                self._stall_handle.cancel()
                self._stall_handle = None
            if seconds is not None and seconds <= 0:
                self._unstall()
                return
            self._stalled = True
            if seconds is not None:
                self._stall_handle = self._loop.call_later(seconds, self._unstall)
        self._call(apply)

    def _unstall(self) -> None:
        self._stalled = False
        self._stall_handle = None
        for conn in self._all_conns():
            conn.wake.set()

    def send_malformed(self, kind: str) -> None:
        """Send one malformed frame on every socket (RTM and Socket Mode); ``kind`` is one of MALFORMED_KINDS.

        Malformed frames carry no ``sim_seq`` and are not counted in ``sent``.
        """
        frames = {
            "not_json": (b"this is not JSON {", WSMsgType.TEXT),
            "binary": (b"\x00\x01\x02binary frame", WSMsgType.BINARY),
            "no_type": (b'{"channel":"C0","text":"an event without a type"}', WSMsgType.TEXT),
            "array": (b'[{"type":"message","text":"inside an array"}]', WSMsgType.TEXT),
            "huge": (orjson.dumps({"type": "message", "channel": "C0", "user": self._ws.humans[0],
                                   "text": "x" * (2 << 20), "ts": "0000000000.000000"}), WSMsgType.TEXT),
            "nested": (b'{"type":"message","text":"deep","nested":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                       WSMsgType.TEXT),
            # Text frames must be valid UTF-8, so invalid bytes travel as binary.
            "bad_utf8": (b'{"type":"message","text":"\xff\xfe\xc3\x28"}', WSMsgType.BINARY),
        }
        if kind not in frames:
            raise ValueError(f"unknown malformed kind {kind!r}; use one of {', '.join(MALFORMED_KINDS)}")
        data, opcode = frames[kind]

        def send() -> None:
            for conn in self._all_conns():
                conn.push(("raw", data, opcode))
        self._call(send)

    def rate_limit_connect(self, calls: int, retry_after: int = 1) -> None:
        """Answer the next ``calls`` rtm.connect/rtm.start with HTTP 429 and ``Retry-After``."""
        def apply() -> None:
            self._rate_limit_calls, self.retry_after = calls, retry_after
        self._call(apply)

    def fail_connect(self, error: str, calls: int = 1) -> None:
        """Answer the next ``calls`` rtm.connect/rtm.start with ``{"ok": false, "error": error}``."""
        def apply() -> None:
            self._fail_error, self._fail_calls = error, calls
        self._call(apply)

    def expire_next_url(self) -> None:
        """The next socket URL handed out (rtm.connect, rtm.start or apps.connections.open) is already expired."""
        def apply() -> None:
            self._expire_next = True
        self._call(apply)


class SimWorkspace(_RtmSockets, _Faults, SocketModeApi):
    """A simulated Slack workspace: Web API + RTM + Socket Mode over real loopback sockets.

    ``with SimWorkspace(seed=1, rate=20) as sim:`` serves on 127.0.0.1 with an
    ephemeral port. Point any Slack client at ``sim.base_url`` with
    ``sim.token`` (Socket Mode clients also take ``sim.app_token``; see
    :class:`~rtm_notebook.sim.socketmode.SocketModeApi`). The same seed gives
    the same workspace and the same traffic. ``rate`` is generated events per second (``float("inf")`` sends
    as fast as the sockets take them); traffic flows while a socket is open.
    """

    def __init__(self, seed: int = 1, rate: float = 0.0, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not (rate >= 0):
            raise ValueError(f"rate must be a number of events per second >= 0, got {rate!r}")
        self.seed = seed
        self._rate = float(rate)
        self._host = host
        self._port = port
        self._ws = Workspace(seed)
        self._traffic = Traffic(self._ws, seed)
        self._api = WebApi(self._ws)
        self._token = "xoxb-sim-" + secrets.token_hex(16)
        self._tokens = {self._token: self._ws.bot_user_id}
        self._user_tokens = {uid: "xoxp-sim-" + secrets.token_hex(16) for uid in self._ws.humans}
        self._tokens.update({tok: uid for uid, tok in self._user_tokens.items()})
        self._tickets: dict[str, _Ticket] = {}
        self._conns: dict[int, _Conn] = {}
        self._conn_count = 0
        self._connect_calls: list[float] = []
        self._sent: dict[int, int] = {}
        self._received: list[dict[str, Any]] = []
        self._after_hello = 0
        self._stalled = False
        self._stall_handle: asyncio.TimerHandle | None = None
        self._rate_limit_calls = 0
        self.retry_after = 1
        self._fail_calls = 0
        self._fail_error = ""
        self._expire_next = False
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._gen_wake: asyncio.Event | None = None
        self.base_url = ""
        self._sm = SocketMode(self)

    def __repr__(self) -> str:
        state = self.base_url or "stopped"
        return f"<SimWorkspace seed={self.seed} rate={self._rate:g} {state} token=xoxb-…>"

    # -- lifecycle -----------------------------------------------------

    def start(self) -> SimWorkspace:
        """Start serving (returns when the port is bound)."""
        if self._thread is not None:
            raise RuntimeError("this SimWorkspace is already running; make another one for a second workspace")
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(started,), name=f"rtm-sim-{self.seed}", daemon=True)
        self._thread.start()
        try:
            started.result(timeout=CALL_TIMEOUT)
        except BaseException:
            self._thread.join(timeout=5)
            self._thread = None
            raise
        return self

    def stop(self) -> None:
        """Close every socket, stop the server and its thread. Idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread is threading.current_thread():
            raise RuntimeError("SimWorkspace.stop() cannot be called from the workspace's own thread")
        try:
            submit(loop, self._shutdown()).result(timeout=CALL_TIMEOUT)
        finally:
            hand_over(loop, loop.stop)
            thread.join(timeout=CALL_TIMEOUT)
            self._thread = None
            self.base_url = ""

    def __enter__(self) -> SimWorkspace:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _run(self, started: concurrent.futures.Future) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                loop.run_until_complete(self._startup())
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _startup(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/websocket/{ticket}", self._handle_socket)
        self._sm.start(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self._port = port
        self.base_url = f"http://{_url_host(self._host)}:{port}/api/"
        self._gen_wake = asyncio.Event()
        self._spawn(self._generate())
        self._sm.run()

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        conns = self._all_conns()
        for conn in conns:
            self._close_now(conn, 1001, b"server stopping")
        deadline = time.monotonic() + 1.0
        while (self._conns or self._sm.conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in conns:
            if conn.request.transport is not None:
                conn.request.transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop and return its result."""
        loop = self._loop
        if loop is None or self._thread is None:
            raise RuntimeError("the SimWorkspace is not running: use `with SimWorkspace() as sim:` or call start()")
        return call(loop, fn, *args, timeout=CALL_TIMEOUT)

    # -- what the workspace is -----------------------------------------

    @property
    def token(self) -> str:
        """The demo bot's token (accepted only by this workspace)."""
        return self._token

    @property
    def bot_user_id(self) -> str:
        return self._ws.bot_user_id

    @property
    def team(self) -> dict[str, Any]:
        """The team as ``rtm.start`` shows it (a copy)."""
        return copy.deepcopy(self._ws.team)

    @property
    def users(self) -> list[dict[str, Any]]:
        """Every user (humans, then the bot) as ``users.info`` shows them (copies)."""
        return copy.deepcopy(list(self._ws.users.values()))

    @property
    def channels(self) -> list[dict[str, Any]]:
        """Public and private channels as the bot sees them (``conversations.info`` shape)."""
        def snapshot() -> list[dict[str, Any]]:
            return [c.to_api(self._ws.bot_user_id) for c in self._ws.conversations.values() if c.kind != "im"]
        return self._call(snapshot) if self._thread is not None else snapshot()

    def user_token(self, user_id: str) -> str:
        """A token acting as the human ``user_id`` (an ``xoxp-`` user token)."""
        try:
            return self._user_tokens[user_id]
        except KeyError:
            raise ValueError(f"no human user {user_id!r} in this workspace; pick an id from sim.users") from None

    @property
    def connect_calls(self) -> list[float]:
        """``time.monotonic()`` of every rtm.connect / rtm.start call, answered or not."""
        return list(self._connect_calls)

    @property
    def sent(self) -> dict[int, int]:
        """Socket number -> events written on it (the last ``sim_seq``)."""
        return dict(self._sent)

    @property
    def received(self) -> list[dict[str, Any]]:
        """Every JSON object received from clients, in arrival order."""
        return list(self._received)

    @property
    def posted(self) -> list[dict[str, Any]]:
        """Every message created by chat.postMessage, a socket or post_message()."""
        return list(self._api.posted)

    @property
    def open_sockets(self) -> int:
        return len(self._conns)

    # -- traffic -------------------------------------------------------

    def set_rate(self, events_per_second: float) -> None:
        """Generated events per second; 0 stops, ``float("inf")`` is a firehose."""
        if not (events_per_second >= 0):
            raise ValueError(f"rate must be a number of events per second >= 0, got {events_per_second!r}")

        def apply() -> None:
            self._rate = float(events_per_second)
            self._gen_wake.set()
        self._call(apply)

    def post_message(self, user: str, channel: str, text: str, thread_ts: str | None = None) -> dict[str, Any]:
        """Post ``text`` as ``user`` (id or name) in ``channel`` (id or name) and broadcast it.

        Returns the stored message, with ``channel``.
        """
        def post() -> dict[str, Any]:
            uid = self._ws.user_id(user)
            if uid is None:
                raise ValueError(f"no user {user!r} in this workspace; pick an id or name from sim.users")
            conv = self._ws.conversation(channel)
            if conv is None:
                raise ValueError(f"no channel {channel!r} in this workspace; pick an id or name from sim.channels")
            try:
                msg, event = self._api.new_message(conv, uid, text, thread_ts)
            except ApiError as exc:
                raise ValueError(f"cannot post: {exc.error} (thread_ts {thread_ts!r})") from None
            self._broadcast(event)
            return {"channel": conv.id, **msg}
        return self._call(post)

    def export(self, path: str | os.PathLike) -> str:
        """Write the workspace's history as a Slack export to ``path`` (a folder, or a
        zip when it ends in ``.zip``), as ``EventFrame.from_slack_export`` reads it."""
        return write_export(self._call(snapshot, self._ws), path)

    def play(self, events: list[tuple[float, dict[str, Any]]], speed: float | None = 1.0, repeat: bool = True) -> None:
        """Send recorded events as the workspace's traffic, over RTM and Socket Mode alike.

        ``events`` are ``(seconds, event)`` in order (a recording's
        ``received_at`` and what Slack sent); the gaps between them are kept,
        divided by ``speed`` (None: at once). With ``repeat`` the recording
        starts over at its end. The events are sent as they are: the
        workspace's own history does not learn them.
        """
        async def run() -> None:
            while True:
                started, first = time.monotonic(), events[0][0] if events else 0.0
                for i, (at, event) in enumerate(events):
                    if speed is not None:
                        due = started + (at - first) / speed - time.monotonic()
                        if due > 0:
                            await asyncio.sleep(due)
                    elif i % GEN_BATCH == 0:
                        await asyncio.sleep(0)  # let the sockets write, as the generator does
                    if isinstance(event.get("type"), str):  # what is no event is not sent
                        self._emit(dict(event))
                if not repeat or not events:
                    return
                await asyncio.sleep(1.0)  # a pause between two plays

        self._call(lambda: self._spawn(run()))

    def burst(self, n: int) -> None:
        """Write ``n`` generated events at once to every open socket.

        Each RTM socket gets all ``n``; Socket Mode gets one envelope per
        event except ``user_typing`` and ``presence_change`` (RTM-only in
        Slack), spread over its connections: see ``events_dispatched``.
        """
        def run() -> None:
            for _ in range(n):
                self._emit(self._traffic.next())
        self._call(run)

    def burst_after_hello(self, n: int) -> None:
        """The next socket to connect gets ``n`` generated events right after ``hello``."""
        def arm() -> None:
            self._after_hello = n
        self._call(arm)

    def _emit(self, event: dict[str, Any]) -> None:
        if event["type"] == "presence_change":
            self._broadcast_presence(event["user"], event["presence"])
        else:
            self._broadcast(event)

    def _broadcast(self, event: dict[str, Any], exclude: _Conn | None = None) -> None:
        sm = self._sm
        if sm.ever_opened:  # Socket Mode gets it as an events_api envelope, on one connection
            sm.dispatch(event)
        body = orjson.dumps(event)
        for conn in self._conns.values():
            if conn is not exclude and not conn.closing:
                queue = conn.queue
                # The sender only waits on an empty queue (or a stall, which
                # wakes it when it ends), so only the first item needs a wake-up.
                if not queue:
                    conn.wake.set()
                queue.append(body)

    def _broadcast_presence(self, user: str, presence: str) -> None:
        single = orjson.dumps({"type": "presence_change", "user": user, "presence": presence})
        batch = orjson.dumps({"type": "presence_change", "users": [user], "presence": presence})
        for conn in self._conns.values():
            if not conn.closing and (conn.subs is None or user in conn.subs):
                conn.push(batch if conn.batch_presence else single)

    def _backlogged(self) -> bool:
        return any(len(c.queue) >= BACKLOG_HIGH for c in self._conns.values()) or self._sm.backlogged(BACKLOG_HIGH)

    def _all_conns(self) -> list[Any]:
        """Every open socket, RTM and Socket Mode (the faults act on both)."""
        return [*self._conns.values(), *self._sm.conns.values()]

    def _socket_opened(self) -> None:
        """A socket said hello: traffic may flow, and an armed burst_after_hello goes out now."""
        self._gen_wake.set()
        if self._after_hello:
            n, self._after_hello = self._after_hello, 0
            for _ in range(n):
                self._emit(self._traffic.next())

    async def _generate(self) -> None:
        """Emit ``rate`` events per second while a socket is open.

        It owes no backlog: after a pause (no sockets, slow readers) it
        resumes at the rate instead of catching up.
        """
        loop = asyncio.get_running_loop()
        wake = self._gen_wake
        epoch, emitted = loop.time(), 0
        while True:
            rate = self._rate
            if rate <= 0 or not (self._conns or self._sm.conns):
                wake.clear()
                await wake.wait()
                epoch, emitted = loop.time(), 0
                continue
            if self._backlogged() or self._stalled:
                await asyncio.sleep(0.005)
                epoch, emitted = loop.time(), 0
                continue
            if math.isinf(rate):
                due = GEN_BATCH
            else:
                elapsed = loop.time() - epoch
                due = int(elapsed * rate) - emitted
                if due <= 0:
                    wake.clear()
                    try:
                        await asyncio.wait_for(wake.wait(), (emitted + 1) / rate - elapsed)
                    except TimeoutError:
                        pass
                    else:  # the rate changed or a socket opened: start counting again
                        epoch, emitted = loop.time(), 0
                    continue
                if elapsed > 1.0 and due > rate:
                    epoch, emitted, due = loop.time(), 0, 1
                due = min(due, GEN_BATCH)
            traffic_next, emit = self._traffic.next, self._emit
            for _ in range(due):
                emit(traffic_next())
            emitted += due
            await asyncio.sleep(0)

    # -- Web API -------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            data = await _read_args(request)
        except web.HTTPRequestEntityTooLarge:
            # Slack answers oversized bodies with 413; the body is Slack-style.
            return _json({"ok": False, "error": "request_too_large"}, status=413)
        except ApiError as exc:
            return _json(exc.body())
        if method == "apps.connections.open":
            return self._sm.connections_open(request, data)
        is_connect = method in ("rtm.connect", "rtm.start")
        if method not in self._api.methods and not is_connect:
            return _json({"ok": False, "error": "unknown_method", "req_method": method})
        if is_connect:
            self._connect_calls.append(time.monotonic())
            if self._rate_limit_calls > 0:
                self._rate_limit_calls -= 1
                return _json({"ok": False, "error": "ratelimited"}, status=429,
                             headers={"Retry-After": str(self.retry_after)})
            if self._fail_calls > 0:
                self._fail_calls -= 1
                return _json({"ok": False, "error": self._fail_error})
        token = _bearer(request)
        body_token = data.pop("token", None)
        if token is None and isinstance(body_token, str) and body_token:
            token = body_token
        if token is None:
            return _json({"ok": False, "error": "not_authed"})
        caller = self._tokens.get(token)
        if caller is None:
            # An app-level token opens Socket Mode connections and nothing else (Slack's rule too).
            error = "not_allowed_token_type" if token == self._sm.app_token else "invalid_auth"
            return _json({"ok": False, "error": error})
        try:
            if is_connect:
                body = self._rtm_connect(request, caller, data, full=method == "rtm.start")
                events: list[dict[str, Any]] = []
            else:
                body, events = self._api.call(method, caller, data)
        except ApiError as exc:
            return _json(exc.body())
        except Exception:  # a bug here must not become a traceback or a hung request
            log.exception("simulated %s failed", method)
            return _json({"ok": False, "error": "internal_error"}, status=500)
        for event in events:
            self._broadcast(event)
        return _json(body)



async def _read_args(request: web.Request) -> dict[str, Any]:
    """Arguments from the query string and the body (form or JSON)."""
    data: dict[str, Any] = dict(request.query)
    # Slack stopped accepting tokens in query strings (2021); so does the sim.
    data.pop("token", None)
    if request.method != "POST" or not request.body_exists:
        return data
    ctype = request.content_type
    if ctype == "multipart/form-data":
        try:
            form = await request.post()
        except ValueError:
            raise ApiError("invalid_form_data") from None
        data.update(form)
        return data
    raw = await request.read()
    if not raw.strip():
        return data
    if ctype == "application/json":
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError("invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError("json_not_object")
        data.update(body)
    elif ctype == "application/x-www-form-urlencoded":
        try:
            data.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
        except (UnicodeDecodeError, ValueError):
            raise ApiError("invalid_form_data") from None
    else:
        raise ApiError("invalid_post_type")
    return data


def serve(host: str = "127.0.0.1", port: int = 0, rate: float = 1.0, seed: int = 1,
          play: list[tuple[float, dict[str, Any]]] | None = None, speed: float = 1.0) -> int:
    """``rtm-notebook sim``: serve a workspace in the foreground until Ctrl-C (``play``: a recording as its traffic)."""
    try:
        with SimWorkspace(seed=seed, rate=rate, host=host, port=port) as sim:
            traffic = f"replaying {len(play)} recorded events at {speed:g}x" if play is not None else f"{rate:g} events/s"
            print(f"Simulated Slack workspace {sim.team['name']!r} (seed {seed}, {traffic})")
            if play is not None:
                sim.play(play, speed)
            print(f"  base URL: {sim.base_url}")
            print(f"  token:    {sim.token}")
            print(f"  app token (Socket Mode): {sim.app_token}")
            if not _is_loopback(host):
                print(f"  warning: bound to {host}, so other machines can reach it")
            print(connect_help(sim.base_url, sim.token))
            print("Ctrl-C stops it.", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:  # whenever it comes, leaving the with-block stopped the server
        print("stopped")
    return 0


# The variable the printed lines put the token in: not SLACK_BOT_TOKEN, so a
# real token set in the same environment is neither used nor overwritten.
SIM_TOKEN_ENV = "RTM_SIM_TOKEN"


def connect_help(base_url: str, token: str) -> str:
    """What to type to use this workspace: in a notebook, from Python, and the demo.

    ``%rtm_connect`` takes the token only from the environment (``--token-env
    VAR``) and the workspace from ``--base-url``; ``%env`` sets the variable
    in the kernel itself.
    """
    return "\n".join([
        "Connect a notebook to it (one cell):",
        "  %load_ext rtm_notebook",
        f"  %env {SIM_TOKEN_ENV}={token}",
        f"  %rtm_connect --token-env {SIM_TOKEN_ENV} --base-url {base_url}",
        "or from Python:",
        "  from rtm_notebook import RTMClient",
        f'  rtm = RTMClient(token="{token}", base_url="{base_url}")',
        "  rtm.start()  # in a notebook it returns at once; in a script it runs until rtm.stop()",
        "or run the demo's bot on it from another terminal:",
        f"  {SIM_TOKEN_ENV}={token} rtm-notebook demo --token-env {SIM_TOKEN_ENV} --base-url {base_url}",
    ])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
