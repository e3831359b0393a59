"""Socket Mode on the simulated workspace: apps.connections.open, ``/link/`` sockets, envelopes, acks.

:class:`SocketMode` is the server side of Slack's Socket Mode for the one
app the workspace has (its bot). ``SimWorkspace`` mounts its routes and
hands it every event it broadcasts; everything else (envelopes, acks,
redelivery, disconnects, slash commands and interactive payloads,
``response_url``) is here. It runs on the workspace's loop only, like the
RTM server, and reaches the workspace through a few of its private
attributes (``_ws``, ``_api``, ``_stalled``, ``_spawn``, ``_close_now``,
``_broadcast``, ``_socket_opened``, ``_conn_count``, ``_received``,
``base_url``).

PROTOCOL.md's "Socket Mode" section is the reference. Where it is silent
the server mimics real Slack as far as Slack's documentation and its SDKs
show it, and the comments say what was chosen where nothing shows it.
"""

from __future__ import annotations

import asyncio
import heapq
import secrets
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from rtm_notebook.sim.model import ID_ALPHABET
from rtm_notebook.sim.wire import (
    CLOSE_TIMEOUT,
    SEND_SLICE,
    WRITE_BUFFER_HIGH,
    bearer,
    json_response,
    local_address,
    text_header,
)

if TYPE_CHECKING:  # the workspace that hosts this server, for type checks only
    from rtm_notebook.sim.server import SimWorkspace

TICKET_TTL = 30.0  # seconds a Socket Mode URL stays valid (as RTM URLs: Slack does not say)
MAX_CONNECTIONS = 10  # Slack: at most 10 open Socket Mode connections per app
MAX_RETRIES = 3  # Slack: an unacknowledged events_api envelope is retried up to 3 times
# Client frames: Slack documents no limit for acks; 1 MiB leaves room for
# a slash command's answer with blocks.
MAX_CLIENT_FRAME = 1 << 20
# Events with no Socket Mode connection open wait for the next one, up to this many.
MAX_WAITING = 50_000
BACKLOG_CHECK = 256  # expired acks handled before letting other work run
# Memory stays bounded under a long firehose: each record list keeps its
# newest RECORDS_CAP entries, and acks are matched against the newest
# ENVELOPES_CAP envelopes (an ack for an older one is recorded with type None).
RECORDS_CAP = 200_000
ENVELOPES_CAP = 500_000
# Slack's real hello says about 5 hours; this is the figure PROTOCOL.md quotes.
APPROXIMATE_CONNECTION_TIME = 18060
BUILD_NUMBER = 118
DISCONNECT_REASONS = ("warning", "refresh_requested", "too_many_websockets", "link_disabled")
# apps.connections.open's answer once Socket Mode is off for the app
# (link_disabled). Slack documents no code for it; access_denied is in the
# method's documented error list and says what happened.
LINK_DISABLED_ERROR = "access_denied"
# Events the Events API never delivers (RTM-only events): a Socket Mode app
# does not get them, so neither do the sim's Socket Mode connections.
# presence_change never reaches dispatch (RTM sends it per socket).
RTM_ONLY = frozenset({"user_typing", "presence_change", "hello", "goodbye", "reconnect_url", "pong"})
# Events API message events say where they happened.
CHANNEL_TYPES = {"C": "channel", "G": "group", "D": "im"}


class _Ticket:
    __slots__ = ("issued", "expired", "used")

    def __init__(self, expired: bool) -> None:
        self.issued = time.monotonic()
        self.expired = expired
        self.used = False


class _Delivery:
    """One events_api event across its delivery attempts."""

    __slots__ = ("event_id", "sim_seq", "payload", "attempts", "acked", "done", "redeliveries")

    def __init__(self, event_id: str, sim_seq: int, payload: dict[str, Any]) -> None:
        self.event_id = event_id
        self.sim_seq = sim_seq
        self.payload: dict[str, Any] | None = payload  # dropped once settled
        self.attempts: list[_Envelope] = []
        self.acked = False
        self.done = False  # acked, or given up after the last retry
        self.redeliveries: list[dict[str, Any]] = []


class _Envelope:
    """One envelope: its wire form until written, then what acks are matched against."""

    __slots__ = ("id", "type", "attempt", "delivery", "data", "sent_at", "conn", "acked", "expired", "command")

    def __init__(self, type_: str, data: bytes, envelope_id: str, attempt: int = 0,
                 delivery: _Delivery | None = None, command: dict[str, Any] | None = None) -> None:
        self.id = envelope_id
        self.type = type_
        self.attempt = attempt
        self.delivery = delivery
        self.data: bytes | None = data
        self.sent_at: float | None = None
        self.conn: int | None = None
        self.acked = False
        self.expired = False
        self.command = command


class _SocketConn:
    """One Socket Mode socket. Same fields as the RTM ``_Conn`` that the workspace's faults use.

    Queue items: ``_Envelope`` (an envelope), ``bytes`` (another JSON frame:
    hello, disconnect), ``("raw", data, opcode)`` and ``("close", code, reason)``.
    """

    __slots__ = ("number", "ws", "request", "queue", "wake", "closing", "ignore_input", "retiring",
                 "sender", "pinger", "timers", "opened")

    def __init__(self, number: int, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.number = number
        self.ws = ws
        self.request = request
        self.queue: deque[Any] = deque()
        self.wake = asyncio.Event()
        self.closing = False
        self.ignore_input = False
        self.retiring = False  # told to go (disconnect): gets no new envelopes while another is open
        self.sender: asyncio.Task | None = None
        self.pinger: asyncio.Task | None = None
        self.timers: list[asyncio.TimerHandle] = []
        self.opened = time.monotonic()

    def push(self, item: Any) -> None:
        self.queue.append(item)
        self.wake.set()

    def send(self, frame: dict[str, Any]) -> None:
        self.push(orjson.dumps(frame))


class _Interactions:
    """What people do that reaches an app as slash commands and interactive payloads, and the response_url they answer to.

    A base class of :class:`SocketMode`, on whose state it runs."""

    def _person(self, user: str | None) -> dict[str, Any]:
        ws = self.host._ws
        uid = ws.humans[0] if user is None else ws.user_id(user)
        if uid is None:
            raise ValueError(f"no user {user!r} in this workspace; pick an id or name from sim.users")
        return ws.users[uid]

    def _conversation(self, channel: str | None):
        conv = self.host._ws.conversation("general" if channel is None else channel)
        if conv is None:
            raise ValueError(f"no channel {channel!r} in this workspace; pick an id or name from sim.channels")
        return conv

    def _trigger_id(self) -> str:
        return f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"

    def _response_url(self, kind: str, envelope_id: str, channel: str | None = None) -> str:
        path = f"/{kind}/{self.host._ws.team_id}/{secrets.randbelow(10**13)}/{secrets.token_urlsafe(18)}"
        # The channel an in_channel answer goes to: the command's, or the clicked message's.
        self._response_urls[path] = (envelope_id, channel)
        return self.host.base_url[: -len("/api/")] + path

    def _inject(self, type_: str, payload: dict[str, Any], envelope_id: str, command: dict[str, Any] | None = None,
                accepts: bool = False) -> str:
        data = orjson.dumps({"envelope_id": envelope_id, "payload": payload, "type": type_,
                             "accepts_response_payload": accepts})
        env = _Envelope(type_, data, envelope_id, command=command)
        self._remember(env)
        self._route(env)
        return envelope_id

    def slash_command(self, command: str, text: str, user: str | None, channel: str | None) -> str:
        if not command.startswith("/"):
            raise ValueError(f"a slash command starts with '/', e.g. '/deploy'; got {command!r}")
        person, conv = self._person(user), self._conversation(channel)
        ws = self.host._ws
        envelope_id = str(uuid.uuid4())
        # Slack sends a slash command's fields as strings, as the HTTP form it mirrors.
        payload = {
            "token": self.verification_token, "team_id": ws.team_id, "team_domain": ws.team["domain"],
            "channel_id": conv.id, "channel_name": conv.name if conv.kind != "im" else "directmessage",
            "user_id": person["id"], "user_name": person["name"], "command": command, "text": text,
            "api_app_id": self.app_id, "is_enterprise_install": "false",
            "response_url": self._response_url("commands", envelope_id, conv.id), "trigger_id": self._trigger_id(),
        }
        record = {"envelope_id": envelope_id, "command": command, "text": text, "user": person["id"],
                  "channel": conv.id, "timed_out": False}
        return self._inject("slash_commands", payload, envelope_id, command=record, accepts=True)

    def _interactive_base(self, type_: str, person: dict[str, Any]) -> dict[str, Any]:
        ws = self.host._ws
        return {"type": type_, "token": self.verification_token, "api_app_id": self.app_id,
                "team": {"id": ws.team_id, "domain": ws.team["domain"]}, "enterprise": None,
                "is_enterprise_install": False,
                "user": {"id": person["id"], "username": person["name"], "name": person["name"],
                         "team_id": ws.team_id},
                "trigger_id": self._trigger_id()}

    def _message_context(self, payload: dict[str, Any], channel: str | None, message_ts: str, envelope_id: str) -> None:
        conv = self._conversation(channel)
        message = conv.messages.get(message_ts)
        if message is None:
            raise ValueError(f"no message with ts {message_ts!r} in {conv.name or conv.id}; "
                             "use the ts of a message posted there")
        payload["channel"] = {"id": conv.id, "name": conv.name if conv.kind != "im" else "directmessage"}
        payload["message"] = dict(message)
        payload["response_url"] = self._response_url("actions", envelope_id, conv.id)
        payload["container"] = {"type": "message", "message_ts": message_ts, "channel_id": conv.id,
                                "is_ephemeral": False}

    def block_action(self, action_id: str, value: str | None, user: str | None, channel: str | None,
                     message_ts: str | None, block_id: str | None) -> str:
        person = self._person(user)
        envelope_id = str(uuid.uuid4())
        payload = self._interactive_base("block_actions", person)
        action_ts = f"{time.time():.6f}"
        action = {"action_id": action_id, "block_id": block_id or secrets.token_urlsafe(4),
                  "type": "button", "action_ts": action_ts,
                  "text": {"type": "plain_text", "text": action_id, "emoji": True}}
        if value is not None:
            action["value"] = value
        if message_ts is not None:
            self._message_context(payload, channel, message_ts, envelope_id)
        else:
            # No message: the button is in a view (the App Home), which has no response_url.
            if channel is not None:
                raise ValueError("channel needs message_ts: a block action in a channel comes from a message")
            payload["container"] = {"type": "view", "view_id": "V" + secrets.token_hex(5).upper()}
        payload["state"] = {"values": {}}
        payload["actions"] = [action]
        return self._inject("interactive", payload, envelope_id)

    def shortcut(self, callback_id: str, user: str | None, channel: str | None, message_ts: str | None) -> str:
        person = self._person(user)
        envelope_id = str(uuid.uuid4())
        if message_ts is None:  # a global shortcut
            if channel is not None:
                raise ValueError("channel needs message_ts: a message shortcut acts on a message")
            payload = self._interactive_base("shortcut", person)
        else:  # a message shortcut
            payload = self._interactive_base("message_action", person)
            self._message_context(payload, channel, message_ts, envelope_id)
            del payload["container"]
            payload["message_ts"] = message_ts
        payload["callback_id"] = callback_id
        payload["action_ts"] = f"{time.time():.6f}"
        return self._inject("interactive", payload, envelope_id)

    def view_submission(self, callback_id: str, values: dict[str, Any] | None, user: str | None) -> str:
        person = self._person(user)
        envelope_id = str(uuid.uuid4())
        payload = self._interactive_base("view_submission", person)
        payload["view"] = {"id": "V" + secrets.token_hex(5).upper(), "team_id": self.host._ws.team_id,
                           "type": "modal", "callback_id": callback_id, "private_metadata": "",
                           "title": {"type": "plain_text", "text": callback_id}, "blocks": [],
                           "state": {"values": values or {}}, "hash": secrets.token_hex(8),
                           "app_id": self.app_id, "bot_id": self.host._ws.bot_id}
        payload["response_urls"] = []
        # A view submission's ack may carry a response_action (errors, update,
        # push, clear): Slack marks it as accepting a payload; block actions
        # and shortcuts do not.
        return self._inject("interactive", payload, envelope_id, accepts=True)

    def _answer_command(self, env: _Envelope, payload: Any, now: float) -> None:
        """A slash command's ack payload is its answer, shown as Slack shows it."""
        command = env.command
        if not isinstance(payload, dict) or not (payload.get("text") or payload.get("blocks")):
            return  # an empty ack: Slack shows the person nothing
        visible = payload.get("response_type") == "in_channel"
        answer = {"envelope_id": env.id, "command": command["command"], "text": payload.get("text", ""),
                  "payload": payload, "channel": command["channel"], "user": command["user"],
                  "visible": visible, "at": now}
        self.command_answers.append(answer)
        if visible:
            self._post_visible(command["channel"], payload)
        # Otherwise Slack shows it to the person only (ephemeral): no message,
        # no event; the record above is all that is left of it.

    def _post_visible(self, channel: str, body: dict[str, Any]) -> None:
        """An ``in_channel`` answer: a message from the app's bot user, seen by everyone."""
        host = self.host
        conv = host._ws.conversation(channel)
        text = body.get("text") or ""
        if conv is None or not isinstance(text, str):
            return
        _, event = host._api.new_message(conv, host._ws.bot_user_id, text)
        host._broadcast(event)

    async def handle_response_url(self, request: web.Request) -> web.Response:
        """Record what is POSTed to a response_url; in_channel answers become messages.

        Slack answers a good POST with HTTP 200 and the plain text ``ok``
        (not JSON, unlike the Web API), and an unknown URL with 404; the sim
        does the same. Ephemeral answers, ``replace_original`` and
        ``delete_original`` are recorded only.
        """
        target = self._response_urls.get(request.path)
        if target is None:
            return web.Response(status=404, text="no_service")
        envelope_id, channel = target
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return web.Response(status=400, text="invalid_payload")
        self.responses.append({"url": str(request.url), "envelope_id": envelope_id, "kind": request.match_info["kind"],
                               "body": body, "at": time.monotonic()})
        if body.get("response_type") == "in_channel" and channel is not None:
            self._post_visible(channel, body)
        return web.Response(text="ok")


class _Acks:
    """Acknowledgements: the record of each ack, and the redelivery of what was not acked in time.

    A base class of :class:`SocketMode`."""

    def _on_ack(self, conn: _SocketConn, envelope_id: str, payload: Any) -> None:
        now = time.monotonic()
        env = self._envelopes.get(envelope_id)
        late = False
        if env is not None:
            delivery = env.delivery
            if delivery is not None:
                # Late: a retry had already been written (or Slack had given up) when it came.
                later = delivery.attempts[env.attempt + 1:]
                late = any(a.sent_at is not None for a in later) or (delivery.done and not delivery.acked)
                if not delivery.acked:
                    for retry, record in zip(later, delivery.redeliveries[env.attempt:]):
                        if retry.sent_at is not None:
                            record["acked_late"] = True
                if not delivery.acked:
                    delivery.acked = delivery.done = True
                    delivery.payload = None
            else:
                late = env.expired
            env.acked = True
        record = {"envelope_id": envelope_id, "type": env.type if env is not None else None,
                  "event_id": env.delivery.event_id if env is not None and env.delivery is not None else None,
                  "retry_attempt": env.attempt if env is not None else None,
                  "acked_at": now, "sent_at": env.sent_at if env is not None else None,
                  "payload": payload, "connection": conn.number, "late": late}
        if env is not None and env.command is not None and not late:
            self._answer_command(env, payload, now)
        # Published last, so a thread that sees the ack (wait_for_ack) also sees what it caused.
        self.acks.append(record)
        if env is not None:
            self.acks_by_id.setdefault(envelope_id, record)

    async def _watch_acks(self) -> None:
        """Expire envelopes not acknowledged within ``ack_timeout`` of being written."""
        due, wake = self._due, self._due_wake
        while True:
            if not due:
                wake.clear()
                await wake.wait()
                continue
            now = time.monotonic()
            if due[0][0] > now:
                await asyncio.sleep(min(due[0][0] - now, 0.05))
                continue
            for _ in range(BACKLOG_CHECK):
                if not due or due[0][0] > now:
                    break
                env = heapq.heappop(due)[2]
                if not env.acked:
                    self._expire(env, now)
            await asyncio.sleep(0)

    def _expire(self, env: _Envelope, now: float) -> None:
        env.expired = True
        delivery = env.delivery
        if delivery is None:
            self._expire_unsent(env, now, sent=True)
            return
        if delivery.done or delivery.attempts[-1] is not env:
            return
        if env.attempt >= MAX_RETRIES:
            self._give_up(env, "retries_exhausted")
            return
        retry = self._events_envelope(delivery, env.attempt + 1)
        conn_open = env.conn in self.conns and not self.conns[env.conn].closing
        record = {"event_id": delivery.event_id, "sim_seq": delivery.sim_seq, "envelope_id": retry.id,
                  "previous_envelope_id": env.id, "retry_attempt": retry.attempt,
                  # Slack says "timeout" on the wire either way; the record tells the two apart.
                  "reason": "timeout" if conn_open else "connection_closed",
                  "at": now, "acked_late": False}
        self.redelivered.append(record)
        delivery.redeliveries.append(record)
        self._route(retry)

    def _give_up(self, env: _Envelope, reason: str) -> None:
        delivery = env.delivery
        delivery.done = True
        delivery.payload = None
        self.undelivered.append({"event_id": delivery.event_id, "sim_seq": delivery.sim_seq,
                                 "envelope_id": env.id, "retry_attempt": env.attempt, "reason": reason,
                                 "at": time.monotonic()})

    def _expire_unsent(self, env: _Envelope, now: float | None = None, sent: bool = False) -> None:
        """A slash command or interactive payload that was not acknowledged, or could not be sent."""
        now = time.monotonic() if now is None else now
        env.expired = True
        record = {"envelope_id": env.id, "type": env.type, "sent_at": env.sent_at, "at": now,
                  "reason": "timeout" if sent else "no_connection"}
        if env.type == "slash_commands":
            # The person sees "/deploy failed with the error "operation_timeout""
            # (or "dispatch_failed" with no connection); Slack does not retry.
            record["command"] = env.command["command"]
            env.command["timed_out"] = True
            self.slash_timeouts.append(record)
        elif env.type == "interactive":
            self.interactive_timeouts.append(record)
        else:  # an event Slack could not deliver with no connection open
            self._give_up(env, "no_connection")


class SocketMode(_Interactions, _Acks):
    """The Socket Mode server of one simulated workspace (see the module docstring)."""

    def __init__(self, host: SimWorkspace) -> None:
        self.host = host
        ws = host._ws
        self.app_id = ws.app_id
        # Slack's app-level tokens: xapp-1-<app id>-<number>-<64 hex>.
        self.app_token = f"xapp-1-{ws.app_id}-{secrets.randbelow(10**13):013d}-{secrets.token_hex(32)}"
        # The (deprecated) verification token every Events API payload carries; not a credential here.
        self.verification_token = "".join(secrets.choice(ID_ALPHABET + "abcdefghijkmnopqrstuvwxyz") for _ in range(24))
        self.applink_host = f"applink-sim-{secrets.token_hex(5)}-{secrets.token_hex(3)}"
        # Tunables (seconds), public on SimWorkspace.
        self.ack_timeout = 3.0  # Slack: 3 s, then a retry (events) or an error for the user (commands)
        self.debug_reconnect_after = 360.0  # Slack: about 360 s with &debug_reconnects=true
        # Between a refresh_requested / too_many_websockets / link_disabled
        # disconnect and the close. Slack closes "soon" and says no more; 1 s
        # lets a client open its next connection first, as Slack's SDKs do.
        self.disconnect_close_after = 1.0
        self.ping_interval = 10.0  # WebSocket pings from the server; Slack's interval is undocumented
        self.link_disabled = False

        self.tickets: dict[str, _Ticket] = {}
        self.conns: dict[int, _SocketConn] = {}
        self.live: list[_SocketConn] = []  # open and not retiring, in opening order
        self.ever_opened = False
        self._rr = 0
        self._seq = 0
        self._event_counter = secrets.randbelow(34 ** 9)
        self._envelopes: dict[str, _Envelope] = {}
        self._due: list[tuple[float, int, _Envelope]] = []  # (deadline, tiebreak, envelope)
        self._due_count = 0
        self._due_wake: asyncio.Event | None = None
        self._waiting: deque[_Envelope] = deque()  # for the next connection to open
        self._rate_limit_calls = 0
        self._retry_after = 1
        self._fail_calls = 0
        self._fail_error = ""
        self._response_urls: dict[str, tuple[str, str | None]] = {}  # path -> (envelope id, channel)
        self._envelope_order: deque[str] = deque()  # for forgetting the oldest past ENVELOPES_CAP
        # Records, for tests (public on SimWorkspace): the newest RECORDS_CAP of each.
        self.open_calls: deque[float] = deque(maxlen=RECORDS_CAP)
        self.envelopes_sent: deque[dict[str, Any]] = deque(maxlen=RECORDS_CAP)
        self.acks: deque[dict[str, Any]] = deque(maxlen=RECORDS_CAP)
        self.acks_by_id: dict[str, dict[str, Any]] = {}  # the first ack of each envelope still remembered
        self.redelivered: deque[dict[str, Any]] = deque(maxlen=RECORDS_CAP)
        self.undelivered: deque[dict[str, Any]] = deque(maxlen=RECORDS_CAP)
        self.slash_timeouts: deque[dict[str, Any]] = deque(maxlen=RECORDS_CAP)
        self.interactive_timeouts: deque[dict[str, Any]] = deque(maxlen=RECORDS_CAP)
        self.command_answers: deque[dict[str, Any]] = deque(maxlen=RECORDS_CAP)
        self.responses: deque[dict[str, Any]] = deque(maxlen=RECORDS_CAP)
        self.disconnects: deque[dict[str, Any]] = deque(maxlen=RECORDS_CAP)

    def start(self, app: web.Application) -> None:
        """Mount the routes (before the app starts) and the ack watcher (on the loop)."""
        app.router.add_get("/link/", self.handle_socket)
        # response_url, shaped like Slack's hooks.slack.com/commands|actions/T…/…/….
        app.router.add_post(r"/{kind:commands|actions}/{team}/{number}/{secret}", self.handle_response_url)

    def run(self) -> None:
        self._due_wake = asyncio.Event()
        self.host._spawn(self._watch_acks())

    # -- apps.connections.open ------------------------------------------

    def connections_open(self, request: web.Request, data: dict[str, Any]) -> web.Response:
        """``apps.connections.open``: the app-level token in ``Authorization`` only."""
        self.open_calls.append(time.monotonic())
        if self._rate_limit_calls > 0:
            self._rate_limit_calls -= 1
            return json_response({"ok": False, "error": "ratelimited"}, status=429,
                                 headers={"Retry-After": str(self._retry_after)})
        if self._fail_calls > 0:
            self._fail_calls -= 1
            return json_response({"ok": False, "error": self._fail_error})
        token = bearer(request)
        if token is None:
            # Slack: "passing it as a POST parameter will result in an error";
            # people who tried report invalid_auth, so that is the answer to a
            # form-field (or JSON) token. No token at all is not_authed.
            body_token = data.get("token")
            error = "invalid_auth" if isinstance(body_token, str) and body_token else "not_authed"
            return json_response({"ok": False, "error": error})
        if token != self.app_token:
            # A bot or user token of this workspace is a real token of the
            # wrong type; anything else is not a token Slack knows.
            error = "not_allowed_token_type" if token in self.host._tokens else "invalid_auth"
            return json_response({"ok": False, "error": error})
        if self.link_disabled:
            return json_response({"ok": False, "error": LINK_DISABLED_ERROR})
        now = time.monotonic()
        for key in [k for k, t in self.tickets.items() if now - t.issued > 2 * TICKET_TTL]:
            del self.tickets[key]
        ticket = _Ticket(self.host._expire_next)
        self.host._expire_next = False
        key = str(uuid.uuid4())
        self.tickets[key] = ticket
        return json_response({
            "ok": True,
            "url": f"ws://{local_address(request)}/link/?ticket={key}&app_id={self.app_id}",
            # Slack adds the token's scopes to every answer.
            "response_metadata": {"scopes": ["connections:write"], "acceptedScopes": ["connections:write"]},
        })

    # -- the socket ----------------------------------------------------

    async def handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = self.tickets.get(request.query.get("ticket", ""))
        if ticket is None:
            return json_response({"ok": False, "error": "invalid_url"}, status=404)
        if ticket.used or ticket.expired or time.monotonic() - ticket.issued > TICKET_TTL or self.link_disabled:
            # Slack does not document what a stale (or reused: URLs are
            # single-use) ticket gets; the sim refuses the handshake, which
            # clients treat as a failed connect and answer with a new
            # apps.connections.open.
            return json_response({"ok": False, "error": "expired_url"}, status=401)
        ticket.used = True
        # autoping off: a stalled server must not answer pings. autoclose off:
        # the reader answers a client's close itself (see SimWorkspace._close_now).
        ws = web.WebSocketResponse(max_msg_size=MAX_CLIENT_FRAME, compress=False, timeout=CLOSE_TIMEOUT,
                                   autoping=False, autoclose=False)
        await ws.prepare(request)
        host = self.host
        host._conn_count += 1
        conn = _SocketConn(host._conn_count, ws, request)
        conn.sender = host._spawn(self._sender(conn))
        self.conns[conn.number] = conn
        if len(self.live) >= MAX_CONNECTIONS:
            # The 11th gets no hello: Slack refuses it with this disconnect
            # (the sim's reading of "too_many_websockets"), then closes it.
            # Connections already told to go do not count, so a client can
            # replace all ten during a refresh (Slack does not say either way).
            self._disconnect(conn, "too_many_websockets")
        else:
            self.live.append(conn)
            self.ever_opened = True
            # num_connections: every open one, those told to go included.
            conn.send({"type": "hello", "num_connections": sum(not c.closing for c in self.conns.values()),
                       "debug_info": {"host": self.applink_host, "build_number": BUILD_NUMBER,
                                      "approximate_connection_time": APPROXIMATE_CONNECTION_TIME},
                       "connection_info": {"app_id": self.app_id}})
            self._flush_waiting()
            if request.query.get("debug_reconnects") == "true":
                conn.timers.append(asyncio.get_running_loop().call_later(
                    self.debug_reconnect_after, self._disconnect, conn, "refresh_requested"))
            conn.pinger = host._spawn(self._pinger(conn))
            host._socket_opened()
        try:
            while True:
                msg = await ws.receive()
                kind = msg.type
                if kind is WSMsgType.TEXT:
                    if not conn.ignore_input:
                        self._on_client_frame(conn, msg.data)
                elif kind is WSMsgType.PING:
                    if not host._stalled:
                        await ws.pong(msg.data)
                elif kind is WSMsgType.CLOSE:
                    if conn.closing:  # the answer to our close frame
                        request.transport.close()
                    else:
                        conn.closing = True
                        await ws.close(drain=False)
                    break
                elif kind not in (WSMsgType.PONG, WSMsgType.BINARY):
                    # Binary frames are ignored, as Slack documents no answer to
                    # them; CLOSED or ERROR (a frame over the limit) end the socket.
                    break
        finally:
            self._closed(conn)
        return ws

    def _closed(self, conn: _SocketConn) -> None:
        self.conns.pop(conn.number, None)
        if conn in self.live:
            self.live.remove(conn)
        conn.closing = True
        conn.sender.cancel()
        if conn.pinger is not None:
            conn.pinger.cancel()
        for timer in conn.timers:
            timer.cancel()
        # Envelopes still queued never left the server: they go to another
        # connection as they are (or wait for the next one), not as retries.
        unsent = [item for item in conn.queue if type(item) is _Envelope]
        conn.queue.clear()
        for env in unsent:
            self._route(env)

    async def _pinger(self, conn: _SocketConn) -> None:
        """Slack pings its Socket Mode clients (WebSocket pings); a stalled server does not."""
        while not conn.closing:
            await asyncio.sleep(self.ping_interval)
            if not (self.host._stalled or conn.closing or conn.ws.closed):
                try:
                    await conn.ws.ping(b"sim-" + str(int(time.time())).encode())
                except ConnectionError:
                    return

    async def _sender(self, conn: _SocketConn) -> None:
        """Write the socket's queue in order, a slice of frames per transport write (as the RTM sender)."""
        ws, queue, host = conn.ws, conn.queue, self.host
        transport = conn.request.transport
        try:
            while not conn.closing and not ws.closed:
                if not queue or host._stalled:
                    conn.wake.clear()
                    await conn.wake.wait()
                    continue
                parts: list[bytes] = []
                sent: list[_Envelope] = []
                control = None
                while queue and len(parts) < 2 * SEND_SLICE:
                    item = queue.popleft()
                    kind = type(item)
                    if kind is _Envelope:
                        if item.delivery is not None and item.delivery.done:
                            continue  # a retry made moot by a late ack before it went out
                        data = item.data
                        sent.append(item)
                    elif kind is bytes:
                        data = item
                    else:
                        control = item
                        break
                    parts.append(text_header(len(data)))
                    parts.append(data)
                if parts:
                    if transport is None or transport.is_closing() or ws.closed:
                        queue.extendleft(reversed(sent))  # unsent: _closed() routes them elsewhere
                        raise ConnectionResetError
                    # Recorded before the write: the write's send() releases the
                    # GIL, and a client in another thread of this process could
                    # read the frames and look at the records before they exist.
                    if sent:
                        self._sent(conn, sent)
                    transport.write(b"".join(parts))
                if control is not None:
                    if control[0] == "raw":
                        await ws.send_frame(control[1], control[2])
                    else:
                        host._close_now(conn, control[1], control[2])
                        return
                while transport.get_write_buffer_size() > WRITE_BUFFER_HIGH and not transport.is_closing():
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0)
        except ConnectionError:
            conn.closing = True

    def _sent(self, conn: _SocketConn, envelopes: list[_Envelope]) -> None:
        now = time.monotonic()
        deadline = now + self.ack_timeout
        record = self.envelopes_sent.append
        due = self._due
        for env in envelopes:
            env.sent_at = now
            env.conn = conn.number
            env.data = None  # written: only acks and retries need the envelope now
            delivery = env.delivery
            record({"envelope_id": env.id, "type": env.type,
                    "event_id": delivery.event_id if delivery is not None else None,
                    "sim_seq": delivery.sim_seq if delivery is not None else None,
                    "retry_attempt": env.attempt, "retry_reason": "timeout" if env.attempt else "",
                    "connection": conn.number, "sent_at": now})
            self._due_count += 1
            heapq.heappush(due, (deadline, self._due_count, env))
        self._due_wake.set()

    # -- routing -------------------------------------------------------

    def _pick(self) -> _SocketConn | None:
        """Round robin over the open connections that were not told to go; else any open one."""
        live = self.live
        if live:
            self._rr += 1
            return live[self._rr % len(live)]
        for conn in self.conns.values():
            if not conn.closing:
                return conn
        return None

    def _route(self, env: _Envelope) -> None:
        conn = self._pick()
        if conn is not None:
            queue = conn.queue
            if not queue:
                conn.wake.set()
            queue.append(env)
        elif env.type == "events_api" and self.ever_opened and not self.link_disabled:
            # No connection open: the event waits for the next one (Slack
            # retries deliveries an app could not take), within a bound.
            if len(self._waiting) >= MAX_WAITING:
                lost = self._waiting.popleft()
                self._give_up(lost, "no_connection")
            self._waiting.append(env)
        else:
            self._expire_unsent(env)

    def _flush_waiting(self) -> None:
        waiting, self._waiting = self._waiting, deque()
        for env in waiting:
            if not (env.delivery is not None and env.delivery.done):
                self._route(env)

    def dispatch(self, event: dict[str, Any]) -> None:
        """Wrap one broadcast event as an ``events_api`` envelope and send it on one connection."""
        etype = event.get("type")
        if etype in RTM_ONLY or not (self.conns or (self.ever_opened and not self.link_disabled)):
            return
        event = dict(event)
        channel = event.get("channel")
        if etype == "message" and isinstance(channel, str):
            event["channel_type"] = CHANNEL_TYPES.get(channel[:1], "channel")
        event_ts = event.get("event_ts")
        if event_ts is None:
            event_ts = event["event_ts"] = event.get("ts") or self.host._ws.clock.next()
        self._seq += 1
        event["sim_seq"] = self._seq  # simulator-only: per app, 1, 2, 3, ... in dispatch order
        ws = self.host._ws
        payload = {
            "token": self.verification_token, "team_id": ws.team_id, "context_team_id": ws.team_id,
            "context_enterprise_id": None, "api_app_id": self.app_id, "event": event,
            "type": "event_callback", "event_id": self._next_event_id(),
            "event_time": int(str(event_ts).partition(".")[0] or 0),
            "authorizations": [{"enterprise_id": None, "team_id": ws.team_id, "user_id": ws.bot_user_id,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
            "event_context": "4-" + secrets.token_urlsafe(24),
        }
        delivery = _Delivery(payload["event_id"], self._seq, payload)
        self._route(self._events_envelope(delivery, 0))

    def _events_envelope(self, delivery: _Delivery, attempt: int) -> _Envelope:
        # Each delivery attempt is a new envelope (new envelope_id, same
        # event_id), as Slack's retries of one event are separate deliveries.
        envelope_id = str(uuid.uuid4())
        data = orjson.dumps({"envelope_id": envelope_id, "payload": delivery.payload, "type": "events_api",
                             "accepts_response_payload": False, "retry_attempt": attempt,
                             "retry_reason": "timeout" if attempt else ""})
        env = _Envelope("events_api", data, envelope_id, attempt, delivery=delivery)
        delivery.attempts.append(env)
        self._remember(env)
        return env

    def _remember(self, env: _Envelope) -> None:
        envelopes, order = self._envelopes, self._envelope_order
        envelopes[env.id] = env
        order.append(env.id)
        if len(order) > ENVELOPES_CAP:
            old = order.popleft()
            envelopes.pop(old, None)
            self.acks_by_id.pop(old, None)

    def _next_event_id(self) -> str:
        self._event_counter += 1
        n, digits = self._event_counter, []
        for _ in range(9):
            n, d = divmod(n, 34)
            digits.append(ID_ALPHABET[d])
        return "Ev0" + "".join(reversed(digits))

    # -- acks and retries ----------------------------------------------

    def _on_client_frame(self, conn: _SocketConn, text: str) -> None:
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            return  # Slack answers nothing to a frame it cannot read
        if not isinstance(frame, dict):
            return
        self.host._received.append(frame)
        envelope_id = frame.get("envelope_id")
        if isinstance(envelope_id, str):
            self._on_ack(conn, envelope_id, frame.get("payload"))

    # -- faults --------------------------------------------------------

    def disconnect(self, reason: str, connection: int | None) -> int:
        if reason not in DISCONNECT_REASONS:
            raise ValueError(f"unknown disconnect reason {reason!r}; use one of {', '.join(DISCONNECT_REASONS)}")
        conns = [c for c in self.conns.values() if not c.closing and (connection is None or c.number == connection)]
        if connection is not None and not conns:
            raise ValueError(f"no open Socket Mode connection {connection}; open ones: {sorted(self.conns)}")
        if reason == "link_disabled":
            self.link_disabled = True  # Socket Mode was turned off: new opens are refused too
        for conn in conns:
            self._disconnect(conn, reason)
        return len(conns)

    def _disconnect(self, conn: _SocketConn, reason: str) -> None:
        if conn.closing:
            return
        # Ahead of what is queued: Slack's control frames are not held behind a
        # burst, so a client learns of the refresh while the close is still ahead.
        conn.queue.appendleft(orjson.dumps({"type": "disconnect", "reason": reason,
                                            "debug_info": {"host": self.applink_host}}))
        conn.wake.set()
        self.disconnects.append({"connection": conn.number, "reason": reason, "at": time.monotonic()})
        if reason == "warning":  # a refresh comes later; the connection stays as it is
            return
        conn.retiring = True
        if conn in self.live:
            self.live.remove(conn)
        # The close does not wait behind a backlog: what is still queued then
        # was never sent, and goes to another connection (see _closed).
        conn.timers.append(asyncio.get_running_loop().call_later(
            self.disconnect_close_after, self.host._close_now, conn, 1000, b""))

    def enable(self) -> None:
        self.link_disabled = False

    def rate_limit(self, calls: int, retry_after: int) -> None:
        self._rate_limit_calls, self._retry_after = calls, retry_after

    def fail(self, error: str, calls: int) -> None:
        self._fail_error, self._fail_calls = error, calls

    def backlogged(self, high: int) -> bool:
        return any(len(c.queue) >= high for c in self.conns.values())


class SocketModeApi:
    """SimWorkspace's Socket Mode face: its records, tunables, people's actions and faults.

    A base class of ``SimWorkspace`` (which provides ``_sm``, ``_call`` and
    ``_thread``), kept here so that server.py stays the RTM server and the
    Web API's router. Every method may be called from any thread while the
    workspace runs; records are copies of lists of the server's own dicts.
    """

    _sm: SocketMode

    @property
    def app_token(self) -> str:
        """The app's app-level token (``xapp-…``) for apps.connections.open (accepted only by this workspace)."""
        return self._sm.app_token

    @property
    def app_id(self) -> str:
        return self._sm.app_id

    @property
    def verification_token(self) -> str:
        """The ``token`` field of Events API and slash command payloads (Slack's deprecated verification token)."""
        return self._sm.verification_token

    @property
    def socket_mode_connections(self) -> int:
        """Socket Mode connections open now (including any told to go and not yet closed)."""
        return len(self._sm.conns)

    @property
    def events_dispatched(self) -> int:
        """Events wrapped as events_api envelopes so far: the last ``sim_seq`` handed out (retries not counted)."""
        return self._sm._seq

    @property
    def connections_open_calls(self) -> list[float]:
        """``time.monotonic()`` of every apps.connections.open call, answered or not."""
        return list(self._sm.open_calls)

    @property
    def envelopes_sent(self) -> list[dict[str, Any]]:
        """Every envelope written:
        ``{envelope_id, type, event_id, sim_seq, retry_attempt, retry_reason, connection, sent_at}``."""
        return list(self._sm.envelopes_sent)

    @property
    def acks(self) -> list[dict[str, Any]]:
        """Every ack received:
        ``{envelope_id, type, event_id, retry_attempt, acked_at, sent_at, payload, connection, late}``.

        ``type`` is None for an envelope id the workspace never sent. ``late``:
        a retry had already been written (events), or the 3 s had passed
        (slash commands, interactive payloads).
        """
        return list(self._sm.acks)

    @property
    def redelivered(self) -> list[dict[str, Any]]:
        """Every retry of an unacknowledged event: ``{event_id, sim_seq, envelope_id, previous_envelope_id,
        retry_attempt, reason ("timeout" | "connection_closed"), at, acked_late}``.

        ``acked_late`` turns true when the attempt before it is acked after the retry went out.
        """
        return list(self._sm.redelivered)

    @property
    def undelivered(self) -> list[dict[str, Any]]:
        """Events given up on: ``reason`` "retries_exhausted" (3 retries unacked) or "no_connection"."""
        return list(self._sm.undelivered)

    @property
    def slash_timeouts(self) -> list[dict[str, Any]]:
        """Slash commands not acked within ``ack_timeout`` (reason "timeout"), or sent with no connection open."""
        return list(self._sm.slash_timeouts)

    @property
    def interactive_timeouts(self) -> list[dict[str, Any]]:
        """Interactive payloads not acked within ``ack_timeout`` (Slack does not retry them either)."""
        return list(self._sm.interactive_timeouts)

    @property
    def command_answers(self) -> list[dict[str, Any]]:
        """Slash command answers from ack payloads:
        ``{envelope_id, command, text, payload, channel, user, visible, at}``."""
        return list(self._sm.command_answers)

    @property
    def responses(self) -> list[dict[str, Any]]:
        """Every POST to a response_url: ``{url, envelope_id, kind ("commands" | "actions"), body, at}``."""
        return list(self._sm.responses)

    @property
    def socket_mode_disconnects(self) -> list[dict[str, Any]]:
        """Every ``disconnect`` frame sent: ``{connection, reason, at}``."""
        return list(self._sm.disconnects)

    def _sm_setting(name: str, doc: str):  # noqa: N805 (a property factory used in the class body)
        def get(self) -> float:
            return getattr(self._sm, name)

        def set_(self, value: float) -> None:
            if not (value > 0):
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
            if self._thread is None:
                setattr(self._sm, name, float(value))
            else:
                self._call(setattr, self._sm, name, float(value))
        return property(get, set_, doc=doc)

    ack_timeout = _sm_setting(
        "ack_timeout", "Seconds an envelope waits for its ack before a retry (events) or a timeout (Slack: 3).")
    debug_reconnect_after = _sm_setting(
        "debug_reconnect_after",
        "Seconds a ``&debug_reconnects=true`` connection lives before refresh_requested (Slack: about 360).")
    disconnect_close_after = _sm_setting(
        "disconnect_close_after",
        "Seconds between a refresh_requested / too_many_websockets / link_disabled disconnect and the close.")
    socket_mode_ping_interval = _sm_setting(
        "ping_interval", "Seconds between the server's WebSocket pings on Socket Mode connections.")
    del _sm_setting

    def slash_command(self, command: str = "/deploy", text: str = "", user: str | None = None,
                      channel: str | None = None) -> str:
        """A person runs ``command text`` in ``channel`` (default #general; ``user`` default: the first human).

        Sends a ``slash_commands`` envelope on one Socket Mode connection and
        returns its envelope id (see ``wait_for_ack``, ``command_answers``).
        """
        return self._call(self._sm.slash_command, command, text, user, channel)

    def block_action(self, action_id: str, value: str | None = None, user: str | None = None,
                     channel: str | None = None, message_ts: str | None = None, block_id: str | None = None) -> str:
        """A person clicks a button: an ``interactive`` envelope with a ``block_actions`` payload.

        With ``channel`` and ``message_ts`` the button is on that message (the
        payload has ``message``, ``channel`` and a ``response_url``); without
        them it is in a view (the App Home). Returns the envelope id.
        """
        return self._call(self._sm.block_action, action_id, value, user, channel, message_ts, block_id)

    def shortcut(self, callback_id: str, user: str | None = None, channel: str | None = None,
                 message_ts: str | None = None) -> str:
        """A global shortcut, or with ``channel`` and ``message_ts`` a message shortcut. Returns the envelope id."""
        return self._call(self._sm.shortcut, callback_id, user, channel, message_ts)

    def view_submission(self, callback_id: str, values: dict[str, Any] | None = None, user: str | None = None) -> str:
        """A person submits a modal (``values`` is its ``state.values``). Returns the envelope id."""
        return self._call(self._sm.view_submission, callback_id, values, user)

    def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Block until ``envelope_id`` is acknowledged and return the ack record (TimeoutError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            record = self._sm.acks_by_id.get(envelope_id)
            if record is not None:
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"envelope {envelope_id} was not acknowledged within {timeout:g} s")
            time.sleep(0.005)

    def socket_mode_disconnect(self, reason: str = "refresh_requested", connection: int | None = None) -> int:
        """Send ``{"type":"disconnect","reason":reason}`` on every Socket Mode connection (or just ``connection``),
        ahead of the envelopes still queued for it.

        ``warning`` only warns. ``refresh_requested``, ``too_many_websockets``
        and ``link_disabled`` also stop new envelopes going to that
        connection (while another is open) and close it
        ``disconnect_close_after`` seconds later; ``link_disabled`` also turns
        Socket Mode off, so apps.connections.open is refused until
        ``enable_socket_mode()``. Returns how many connections got it.
        """
        return self._call(self._sm.disconnect, reason, connection)

    def enable_socket_mode(self) -> None:
        """Turn Socket Mode back on after a ``link_disabled``."""
        self._call(self._sm.enable)

    def rate_limit_connections_open(self, calls: int, retry_after: int = 1) -> None:
        """Answer the next ``calls`` apps.connections.open with HTTP 429 and ``Retry-After``."""
        self._call(self._sm.rate_limit, calls, retry_after)

    def fail_connections_open(self, error: str, calls: int = 1) -> None:
        """Answer the next ``calls`` apps.connections.open with ``{"ok": false, "error": error}``."""
        self._call(self._sm.fail, error, calls)
