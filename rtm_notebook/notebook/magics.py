"""The ``%rtm_*`` magics: ``%load_ext rtm_notebook``.

``%rtm_connect`` connects (to Slack over Socket Mode when ``SLACK_APP_TOKEN``
is set, over RTM when only ``SLACK_BOT_TOKEN``/``SLACK_API_TOKEN`` is, else
to the simulated workspace) and shows the live log;
``%%rtm_on EVENT`` turns a cell into a handler; ``%rtm_off``,
``%rtm_handlers``, ``%rtm_status``, ``%rtm_log`` and ``%rtm_stop`` manage
them. Type ``%rtm_on?`` (or any other) for its options.

Where things run. In a kernel the magics run on the kernel's loop thread,
which is the client's loop: they change client state directly and never
block (``client.start()`` schedules and returns). Outside a kernel there is
no running loop between statements, so the client gets a background loop
thread and the magics hand work to it and wait.

Handler names. ``%%rtm_on`` replaces the handler of the same name, so
re-running a cell replaces its handler instead of adding one. The name is
``--name`` when given; otherwise ``EVENT_xxxxxx`` where ``xxxxxx`` is a hash of
the cell's id when the front end sends one (JupyterLab and Notebook do, so
editing the cell body or its options still replaces the handler); without a
cell id (nbclient, terminal IPython) it is a hash of the magic line, the event
and its options, so two cells with identical magic lines share a name: give
one of them ``--name``.
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import difflib
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.process import arg_split

from rtm_notebook.datasets import as_utc
from rtm_notebook.fields import channel_of
from rtm_notebook.loops import BackgroundLoop, call, in_kernel, on_loop_thread, running_loop, submit
from rtm_notebook.notebook.livelog import LiveLog
from rtm_notebook.notebook.output import HandlerSink, install_routing, uninstall_routing

# Event types a handler can listen to: Slack's RTM events (shared PROTOCOL.md
# and Slack's event reference) plus the client's own (state_change, error).
KNOWN_EVENTS = frozenset(
    """
    * hello goodbye error pong reconnect_url state_change open close reply
    message reaction_added reaction_removed user_typing presence_change manual_presence_change
    channel_created channel_joined channel_left channel_deleted channel_rename channel_archive
    channel_unarchive channel_history_changed channel_marked member_joined_channel member_left_channel
    group_joined group_left group_open group_close group_archive group_unarchive group_rename group_marked
    group_history_changed im_created im_open im_close im_marked im_history_changed mpim_joined mpim_open
    mpim_close team_join team_rename team_domain_change team_pref_change team_plan_change team_profile_change
    user_change user_huddle_changed user_profile_changed bot_added bot_changed pin_added pin_removed
    star_added star_removed file_created file_shared file_unshared file_public file_change file_deleted
    file_comment_added file_comment_edited file_comment_deleted emoji_changed dnd_updated dnd_updated_user
    pref_change commands_changed subteam_created subteam_updated subteam_members_changed
    subteam_self_added subteam_self_removed email_domain_changed accounts_changed desktop_notification
    external_org_migration_started external_org_migration_finished
    app_mention app_home_opened app_uninstalled tokens_revoked channel_id_changed disconnect
    slash_command block_actions shortcut message_action view_submission view_closed block_suggestion ack response
    """.split()
)
#: what a Socket Mode handler may answer by returning a value (a slash command is also written "/deploy")
ANSWERABLE = frozenset(("slash_command", "block_actions", "shortcut", "message_action", "view_submission",
                        "view_closed", "block_suggestion"))

# Named when an event type is unknown and no known one is close to it.
COMMON_EVENTS = ("message", "reaction_added", "reaction_removed", "user_typing", "presence_change",
                 "channel_joined", "member_joined_channel", "error")

DEFAULT_TIMEOUT = 15.0

_current: RTMMagics | None = None


class Session:
    """One client started by ``%rtm_connect``: the client, its log, its handlers' output areas."""

    def __init__(self, name: str, client: Any, log: LiveLog | None, sim: Any, background: BackgroundLoop | None,
                 *, options: dict | None = None, line: str = "") -> None:
        self.name = name
        self.client = client
        self.log = log
        self.sim = sim
        self.background = background
        self.sinks: dict[str, HandlerSink] = {}
        #: what %rtm_connect was asked for (to tell a re-run cell from a changed one), and how it was typed
        self.options = options or {}
        self.line = line
        #: --since of %rtm_history -> the oldest it meant the first time (so a re-run resumes)
        self.since: dict[str | None, float | None] = {}
        #: handler name -> its filters as the person typed them (for %rtm_handlers)
        self.labels: dict[str, dict[str, str]] = {}

    @property
    def where(self) -> str:
        return f"simulated workspace {self.sim.base_url}" if self.sim is not None else "Slack"

    @property
    def loop(self) -> Any:
        return self.background.loop if self.background is not None else getattr(self.client, "loop", None)

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn(*args)`` on the client's loop and return its result (waiting
        for it when the loop is a background one)."""
        return call(self.loop, fn, *args, timeout=DEFAULT_TIMEOUT)

    def tap(self, event: Any) -> None:
        """Route a handler's ``error`` event to that handler's output area (O(1))."""
        if event.get("type") == "error":
            handler = event.get("handler")
            if handler is not None:
                sink = self.sinks.get(handler)
                if sink is not None:
                    sink.error(event)


def session(name: str | None = None) -> Session:
    """The session bound to variable ``name`` (default: the latest one).

    ``session().sim`` is the simulated workspace of a ``--demo`` connection.
    """
    if _current is None:
        raise UsageError("The rtm_notebook extension is not loaded: run %load_ext rtm_notebook")
    return _current._session(name)


def _arguments(fn: Callable) -> list[tuple[tuple, dict]]:
    """The magic's ``@argument(...)`` declarations, in the order written: IPython's
    magic_arguments keeps them on the function (innermost first), so no parser
    internals are read."""
    return [(d.args, d.kwds) for d in reversed(getattr(fn, "decorators", [])) if type(d).__name__ == "argument"]


def _options(fn: Callable) -> list[str]:
    return [name for names, _ in _arguments(fn) for name in names if name.startswith("-")]


def _usage(fn: Callable) -> str:
    """One line, ``%magic POSITIONAL [OPTIONAL] [--option VALUE]``, from the magic's arguments.

    (argparse's own usage of a magic starts with ``::`` and wraps over lines.)
    """
    parts = [f"%{fn.__name__}"]
    declared = _arguments(fn)
    for names, kw in declared:
        if not names[0].startswith("-"):
            name = str(kw.get("metavar") or names[0]).upper()
            parts.append(f"[{name}]" if kw.get("nargs") == "?" else name)
    for names, kw in declared:
        if names[0].startswith("-"):
            option = max(names, key=len)
            if kw.get("action") in ("store_true", "store_false"):
                parts.append(f"[{option}]")
            else:
                choices = kw.get("choices")
                value = kw.get("metavar") or ("|".join(choices) if choices else option.lstrip("-").upper())
                parts.append(f"[{option} {value}]")
    return " ".join(parts)


def _no_arguments(magic: str, line: str) -> None:
    if line.strip():
        raise UsageError(f"%{magic} takes no arguments.\nType: %{magic}")


def _syntax_message(exc: SyntaxError, cell_number: int) -> str:
    """A SyntaxError in a handler body as Python shows one, with the cell's own number and line."""
    text = (exc.text or "").rstrip("\n")
    stripped = text.lstrip()
    column = max(0, (exc.offset or 1) - 1 - (len(text) - len(stripped)))
    where = f"Cell In[{cell_number}], line {exc.lineno}"
    shown = f"\n    {stripped}\n    {' ' * column}^" if stripped else ""
    return (f"{type(exc).__name__} in the handler cell, {where}:{shown}\n{exc.msg}\n"
            "Nothing was registered for this cell: fix the line and run the cell again.")


def _duration(seconds: float | None) -> str:
    """``0.81 ms``, ``120 ms``, ``2.5 s``, ``75 s``; blank for None."""
    if seconds is None:
        return ""
    ms = seconds * 1000
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds:.0f} s"


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        return token[1:-1]
    return token


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def _own_level(tree: ast.AST):
    """The nodes of the code at its own level (not inside a nested def/lambda/class)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        yield node
        yield from _own_level(node)


def _contains_await(tree: ast.AST) -> bool:
    return any(
        isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)) or (isinstance(node, ast.comprehension) and node.is_async)
        for node in _own_level(tree)
    )


_TEMPLATE = """
def __rtm_factory(__rtm_web, __rtm_say, __rtm_answer):
    {kw}def handler(client, event):
        web_client = __rtm_web(client)
        say = __rtm_say(client, event)
        pass
    return handler
"""


def compile_handler(body: str, *, filename: str, namespace: dict, web: Callable, say: Callable,
                    answers: bool = False) -> Callable:
    """Turn a cell body into ``handler(client, event)``.

    ``event``, ``client``, ``web_client`` and ``say`` are in scope; the body's
    globals are ``namespace`` (the notebook's), so imports and variables of
    other cells work and ``global x`` assigns a notebook variable. The body
    becomes an ``async def`` when it awaits, a plain function otherwise (run
    on the handler's own worker thread). Line numbers in tracebacks are the
    body's own. With ``answers`` (a slash command's or an interactive
    payload's handler) the body's last expression, as a cell's value, is
    what the handler returns: its answer (``return`` works too).
    """
    tree = ast.parse(body, filename, "exec")
    if answers and tree.body and isinstance(tree.body[-1], ast.Expr):
        # Only a str or a dict answers: a cell ending in say(...) or print(...) answers nothing.
        last = tree.body[-1]
        value = last.value
        if isinstance(value, ast.Await):
            value = ast.Await(value=value.value)
        call = ast.Call(func=ast.Name(id="__rtm_answer", ctx=ast.Load()), args=[value], keywords=[])
        tree.body[-1] = ast.fix_missing_locations(ast.copy_location(ast.Return(value=call), last))
    if any(isinstance(node, (ast.Yield, ast.YieldFrom)) for node in _own_level(tree)):
        # The body would become a generator that nobody iterates: it would never run.
        raise UsageError("A handler cell cannot use yield: its body runs once per event. Collect results in a list instead")
    is_async = _contains_await(tree)
    module = ast.parse(_TEMPLATE.format(kw="async " if is_async else ""))
    for node in ast.walk(module):
        if hasattr(node, "lineno"):
            node.lineno = node.end_lineno = 1
            node.col_offset = node.end_col_offset = 0
    inner = module.body[0].body[0]
    inner.body[-1:] = tree.body or [ast.Pass(lineno=1, col_offset=0, end_lineno=1, end_col_offset=0)]
    code = compile(module, filename, "exec", dont_inherit=True)
    scope: dict[str, Any] = {}
    exec(code, namespace, scope)
    return scope["__rtm_factory"](web, say, _cell_answer)


def _cell_answer(value: Any) -> Any:
    """A handler cell's last value as its answer: a str or a dict; anything else is no answer."""
    return value if isinstance(value, (str, dict)) else None


def _web_client(client: Any) -> Any:
    return getattr(client, "web_client", None)


def _say_factory(sink: HandlerSink | None) -> Callable[[Any, Any], Callable[..., Any]]:
    """``say(text, thread=False)`` for one event: reply in its channel (or its thread).

    From an async handler (on the loop) ``say`` queues the message and returns
    an awaitable future of Slack's reply; from a sync handler (its worker
    thread) it waits for that reply and returns it, raising what went wrong.
    """

    def make(client: Any, event: Any) -> Callable[..., Any]:
        def say(text: str, thread: bool = False) -> Any:
            channel = channel_of(event)  # a slash command's is channel_id, a block action's an object
            if not isinstance(channel, str):
                raise ValueError(f"say(): a {event.get('type')!r} event has no channel to reply in; use client.send_message(channel, text)")
            # An edit's own ts names no message: its thread is the edited message's.
            inner = event.get("message") if event.get("subtype") == "message_changed" else None
            about = inner if isinstance(inner, dict) else event
            thread_ts = (about.get("thread_ts") or about.get("ts")) if thread else None
            reply = client.send_message(channel, str(text), thread_ts=thread_ts)
            if isinstance(reply, asyncio.Future):
                # Not awaited by the handler, a failure would go unseen: show it
                # under the handler's cell.
                reply.add_done_callback(lambda fut: _report_say(fut, sink))
                return reply
            return reply.result(DEFAULT_TIMEOUT)

        return say

    return make


def _tokens(args: Any) -> tuple[str | None, str | None]:
    """The bot token and the app-level token %rtm_connect's options and the environment name."""
    def read(var: str, what: str) -> str:
        value = os.environ.get(var)
        if not value:
            raise UsageError(f"Environment variable {var} is not set or empty. Set it to your {what}, "
                             "or type %rtm_connect --demo")
        return value

    token = (read(args.token_env, "bot token (xoxb-...)") if args.token_env
             else os.environ.get("SLACK_BOT_TOKEN") or os.environ.get("SLACK_API_TOKEN") or None)
    app_token = (read(args.app_token_env, "app-level token (xapp-...)") if args.app_token_env
                 else os.environ.get("SLACK_APP_TOKEN") or None)
    return token, app_token


def _report_say(fut: asyncio.Future, sink: HandlerSink | None) -> None:
    if fut.cancelled() or fut.exception() is None or sink is None:
        return
    sink.write("stderr", f"say() failed: {fut.exception()}\n")


@magics_class
class RTMMagics(Magics):
    """The ``%rtm_*`` magics; one instance per shell."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.sessions: dict[str, Session] = {}
        self._latest: str | None = None
        self._cell_id: str | None = None
        #: the last client bound to each name: a new one records on in its EventFrame
        self._earlier: dict[str, Any] = {}

    # -- plumbing ------------------------------------------------------------

    def pre_run_cell(self, info: Any) -> None:
        self._cell_id = getattr(info, "cell_id", None)

    def _session(self, name: str | None = None) -> Session:
        name = name or self._latest
        if name is None or name not in self.sessions:
            if name is not None and self.sessions:
                raise UsageError(f"No client is bound to {name!r}; connected: {', '.join(self.sessions)}")
            raise UsageError("No RTM client is connected yet: run %rtm_connect first (or %rtm_connect --demo for the simulated workspace)")
        return self.sessions[name]

    def _parse(self, fn: Callable, line: str) -> Any:
        # IPython's splitter keeps backslashes (regexes such as \bhi\b survive)
        # but also keeps the quotes around "two words"; drop those.
        try:
            return fn.parser.parse_args([_unquote(token) for token in arg_split(line)])
        except ValueError as exc:  # unbalanced quotes
            raise UsageError(f"Cannot split the options ({exc}): check the quotes. See %{fn.__name__}?") from None
        except UsageError as exc:
            magic = fn.__name__
            hint = ""
            bad = re.search(r"unrecognized arguments: (\S+)", str(exc))
            if bad:
                near = difflib.get_close_matches(bad.group(1).split("=")[0], _options(fn), n=1)
                if near:
                    hint = f" Did you mean {near[0]}?"
            raise UsageError(f"{exc}.{hint}\nType: {_usage(fn)}   (see %{magic}? for help)") from None

    def _cell_number(self) -> int:
        """The execution count of the cell being run (``In[N]``).

        IPython 9 increments ``shell.execution_count`` before the cell runs
        (8 after), so it is read from the running cell's result instead.
        """
        result = getattr(self.shell.displayhook, "exec_result", None)
        count = getattr(result, "execution_count", None)
        return count if isinstance(count, int) else self.shell.execution_count

    def _stop_session(self, sess: Session) -> asyncio.Task | None:
        """Stop a client, then its handlers, log, output areas and simulated workspace.

        In a kernel (on the client's loop) this cannot wait: it returns the
        task doing it (``await`` it to be sure it is done). Elsewhere it
        returns when everything has stopped.
        """
        self.sessions.pop(sess.name, None)
        self._earlier[sess.name] = sess.client
        if self._latest == sess.name:
            self._latest = next(reversed(self.sessions), None)
        client = sess.client

        def detach() -> None:
            client.handlers.clear()
            client.remove_tap(sess.tap)
            for sink in sess.sinks.values():
                sink.close()
            sess.sinks.clear()
            if sess.log is not None:
                sess.log.close()

        async def shutdown() -> None:
            try:
                await client.async_stop()
            finally:
                detach()
                if sess.sim is not None:
                    await asyncio.get_running_loop().run_in_executor(None, sess.sim.stop)

        if sess.background is not None:
            try:
                sess.background.run(shutdown(), DEFAULT_TIMEOUT)
            finally:
                sess.background.stop()
            return None
        loop = client.loop
        if loop is not None and loop.is_running():
            if on_loop_thread(loop):
                task = loop.create_task(shutdown(), name=f"rtm-shutdown-{sess.name}")
                _pending.add(task)
                task.add_done_callback(_pending.discard)
                return task
            submit(loop, shutdown()).result(DEFAULT_TIMEOUT)
            return None
        # The loop that ran the client has ended: nothing left to await.
        client.stop()
        detach()
        if sess.sim is not None:
            sess.sim.stop()
        return None

    # -- %rtm_connect ----------------------------------------------------------

    @magic_arguments()
    @argument("--demo", action="store_true", help="connect to the simulated workspace even if a token is set")
    @argument("--token-env", metavar="VAR", help="read the bot token from environment variable VAR (default: SLACK_BOT_TOKEN, then SLACK_API_TOKEN)")
    @argument("--app-token-env", metavar="VAR", help="read the app-level token (xapp-..., Socket Mode) from VAR (default: SLACK_APP_TOKEN)")
    @argument("--socket-mode", action="store_true", help="use Socket Mode (without an app token: on the simulated workspace)")
    @argument("--connect-method", default=None, choices=["rtm.connect", "rtm.start"], help="rtm.connect (default) or rtm.start, which also returns a snapshot of users and channels; either means RTM even when SLACK_APP_TOKEN is set")
    @argument("--base-url", metavar="URL", default=None, help="Web API base URL (default Slack's; the simulated workspace's with --demo)")
    @argument("--rate", type=float, default=None, help="events per second of simulated traffic (default 5; ignored when connecting to Slack)")
    @argument("--replay", metavar="PATH", help="play a recording (JSON-lines, Parquet dataset, Slack export) instead of connecting: what handlers send goes nowhere")
    @argument("--speed", type=float, default=None, help="with --replay: 2 plays twice as fast, 0 as fast as possible (default 1)")
    @argument("--name", default="rtm", help="variable the client is bound to (default rtm)")
    @argument("--reconnect", action="store_true", help="replace the client bound to --name even if it was connected with these options")
    @line_magic
    def rtm_connect(self, line: str = "") -> None:
        """Connect a client on this kernel's loop and show the live log.

        Chooses by the tokens it finds: an app-level token (SLACK_APP_TOKEN,
        or --app-token-env VAR) means Socket Mode (with the bot token from
        SLACK_BOT_TOKEN for say() and web_client); a bot token alone
        (SLACK_BOT_TOKEN or SLACK_API_TOKEN) means RTM; nothing (or --demo)
        starts the simulated workspace and says so, speaking Socket Mode with
        --socket-mode.
        The client is bound to ``rtm`` (or --name): ``rtm.events`` is the
        DataFrame of everything received, ``rtm.log`` the live log.

        Running the cell again keeps the connected client (and says so);
        with other options, or --reconnect, it replaces it and the new client
        takes over its handlers and their output areas. Either way
        ``rtm.events`` goes on: one DataFrame for every client bound to that
        name in this kernel, the ``connection`` column numbering their sockets
        one after the other.
        """
        args = self._parse(self.rtm_connect, line)
        if not args.name.isidentifier():
            raise UsageError(f"--name must be a Python variable name, not {args.name!r}. Type: %rtm_connect --name rtm")
        if args.rate is not None and args.rate < 0:
            raise UsageError("--rate must be 0 or more events per second, e.g. %rtm_connect --demo --rate 20")
        if args.speed is not None and (args.replay is None or args.speed < 0):
            raise UsageError("--speed goes with --replay PATH, and is 0 (as fast as possible) or more, e.g. --speed 10")
        if args.replay is not None and (args.demo or args.token_env or args.base_url):
            raise UsageError("--replay plays a recording: it takes no --demo, --token-env or --base-url")
        if args.replay is not None and (args.socket_mode or args.app_token_env):
            raise UsageError("--replay plays a recording: it takes no --socket-mode or --app-token-env")
        if args.replay is not None and not os.path.exists(args.replay):
            raise UsageError(f"--replay {args.replay!r}: no such file or directory (a .jsonl recording, a Parquet "
                             "dataset directory or a Slack export)")
        if args.demo and (args.token_env or args.app_token_env or args.base_url):
            option = "--token-env" if args.token_env else "--app-token-env" if args.app_token_env else "--base-url"
            raise UsageError(f"--demo connects to the simulated workspace, {option} to a real one: drop one of them")
        token, app_token = (None, None) if args.demo or args.replay is not None else _tokens(args)
        if args.connect_method and not args.socket_mode and not args.app_token_env:
            app_token = None  # --connect-method asks for RTM, even with SLACK_APP_TOKEN set
        socket_mode = app_token is not None or args.socket_mode
        if socket_mode and args.connect_method:
            raise UsageError("--connect-method is RTM's; Socket Mode opens with apps.connections.open: drop it")
        if app_token is None and args.socket_mode and (args.token_env or args.base_url):
            raise UsageError("Socket Mode on Slack needs the app-level token (xapp-...): set SLACK_APP_TOKEN or "
                             "pass --app-token-env VAR; without --token-env/--base-url, --socket-mode uses the "
                             "simulated workspace")
        if app_token is None and token is not None and args.socket_mode:
            token = None  # --socket-mode without an app token: the simulated workspace's Socket Mode
        if token is None and app_token is None and args.base_url:
            raise UsageError("--base-url needs a token: set SLACK_BOT_TOKEN (or SLACK_APP_TOKEN for Socket Mode), "
                             "or pass --token-env VAR naming the variable that holds it")
        # --rate is kept (not refused) with a token: a notebook may say
        # `%rtm_connect --rate 10` to run on Slack or, without a token, on the sim.
        rate = 5.0 if args.rate is None else args.rate

        from rtm_notebook.seed import RTMClient

        real = token is not None or app_token is not None
        options = {"workspace": "replay" if args.replay else "Slack" if real else "simulated",
                   "transport": "socket_mode" if socket_mode else "rtm",
                   "replay": args.replay, "speed": args.speed, "token_env": args.token_env,
                   "app_token_env": args.app_token_env, "base_url": args.base_url,
                   "connect_method": None if socket_mode else args.connect_method or "rtm.connect",
                   "rate": None if real else rate}
        typed = " ".join(t for t in arg_split(line) if t != "--reconnect")
        existing = self.sessions.get(args.name)
        if existing is not None and not args.reconnect and self._same_client(existing, options, token, app_token):
            self._keep(existing)
            return

        carried: list[tuple[Any, HandlerSink | None, dict | None]] = []
        replaced: list[tuple[str, str]] = []
        if existing is not None:
            carried = existing.run(self._take_handlers, existing)
            state = existing.client.state
            replaced = [("replaces", f"{args.name} (%rtm_connect {existing.line}".rstrip() + f"; was {state})"),
                        ("with", f"%rtm_connect {typed}".rstrip())]
            if carried:
                replaced.append(("handlers", ", ".join(repr(h.name) for h, _, _ in carried)
                                 + ": carried over, with their output areas"))
            self._stop_session(existing)
        # Events of the earlier client of this name (replaced now, or stopped before) go on in the new one's.
        previous = self._earlier.get(args.name)

        loop = running_loop()
        background = BackgroundLoop() if loop is None else None
        sim = None
        base_url = args.base_url
        fields: list[tuple[str, str]] = []
        try:
            if args.replay is not None:
                title = f"{args.name}: replaying {args.replay}"
                speed = 1.0 if args.speed is None else args.speed or None
                fields += [("speed", "as fast as possible" if speed is None else f"{speed:g}x"),
                           ("sends", "recorded, not sent (say and Web API calls included)")]
            elif not real:
                from rtm_notebook.sim import SimWorkspace

                sim = SimWorkspace(rate=rate)
                sim.start()
                token = sim.token
                app_token = sim.app_token if socket_mode else None
                base_url = sim.base_url
                why = ("--demo" if args.demo else "no SLACK_APP_TOKEN set" if socket_mode
                       else "no SLACK_BOT_TOKEN or SLACK_API_TOKEN set")
                title = f"{why}: connecting to the simulated workspace"
                fields += [("Web API", base_url), ("traffic", f"{rate:g} events/s of demo traffic")]
            else:
                title = f"{args.name}: connecting to Slack"
                if base_url:
                    fields.append(("Web API", base_url))
            if socket_mode:
                title += " (Socket Mode)"
                if token is None:
                    fields.append(("bot token", "none (SLACK_BOT_TOKEN unset): events arrive; say() and "
                                                "web_client need it"))
            kwargs: dict[str, Any] = {"token": token}
            if base_url:
                kwargs["base_url"] = base_url
            if args.connect_method:
                kwargs["connect_method"] = args.connect_method
            if args.replay is not None:
                from rtm_notebook.playback import replay

                # Paused at hello: the handler cells come after this one.
                client = replay(args.replay, speed=speed, paused=True)
                fields.append(("paused", f"register handlers (%%rtm_on ...), then run {args.name}.play()"))
            elif socket_mode:
                from rtm_notebook.socketmode.client import SocketModeClient

                client = SocketModeClient(app_token=app_token, **kwargs)
            else:
                client = RTMClient(**kwargs)
            del token, app_token
            if previous is not None:
                client.continue_recording(previous)
            sess = Session(args.name, client, None, sim, background, options=options, line=typed)

            def start() -> None:
                for handler, sink, labels in carried:
                    client.handlers.add(handler.event, handler.fn, name=handler.name, style=handler.style,
                                        filters=handler.filters or None, call_context=handler.call_context)
                    if sink is not None:
                        sess.sinks[handler.name] = sink
                    if labels is not None:
                        sess.labels[handler.name] = labels
                client.start()  # on a running loop: schedules the session and returns
                client.add_tap(sess.tap)
                sess.log = client.log
                for sink in sess.sinks.values():
                    sink.loop = sess.loop
                    sink.on_text = sess.log.add_output if sess.log is not None else None

            if background is not None:
                call(background.loop, start, timeout=DEFAULT_TIMEOUT)
            else:
                start()
        except BaseException:
            if background is not None:
                background.stop()
            if sim is not None:
                sim.stop()
            raise

        self.sessions[args.name] = sess
        self._latest = args.name
        self.shell.user_ns[args.name] = client

        if previous is not None and len(client.event_frame):
            last = previous.connection_number
            sockets = f"connection #{last}" if last == 1 else f"connections #1-#{last}"
            fields.append(("events", f"{args.name}.events goes on from the {len(client.event_frame):,} events "
                                     f"recorded before ({sockets}); this client's start at #{last + 1}"))
        else:
            fields.append(("events", f"{args.name}.events (a DataFrame of everything received)"))
        print(title)
        _show_fields(None, replaced + fields)

        if background is not None:
            # Not on the loop: wait for hello here.
            try:
                background.run(client.connect(), DEFAULT_TIMEOUT)
            except concurrent.futures.TimeoutError:
                print(f"{args.name}: still {client.state} after {DEFAULT_TIMEOUT:g} s; it keeps trying (%rtm_status, {args.name}.events)", file=sys.stderr)
                return
            except BaseException:
                self._stop_session(sess)
                raise
            print(f"{args.name}: connected to {_team_name(client)}; %rtm_log shows the newest events")
        else:
            # On the loop (a kernel): waiting for hello would freeze it; the
            # log shows the state as it changes.
            from IPython.display import display

            display(sess.log)

    def _same_client(self, sess: Session, options: dict, token: str | None, app_token: str | None) -> bool:
        """Whether ``%rtm_connect`` asks again for the client ``sess`` runs (and it still runs)."""
        if sess.options != options or str(sess.client.state) == "stopped":
            return False
        if token is None and app_token is None:
            return sess.sim is not None
        # The tokens themselves are never kept anywhere else: ask the client whether they are the same.
        return (sess.sim is None and sess.client.token == token
                and getattr(sess.client, "app_token", None) == app_token)

    def _keep(self, sess: Session) -> None:
        """The cell was run again with the same options: keep the client, say so, show its log again."""
        client = sess.client
        state = str(client.state)
        team = _team_name(client) if client.team else "the workspace"
        where = f"({sess.where})"
        now = f"connected to {team} {where}" if state == "connected" else f"started ({state}) {where}"
        again = f"%rtm_connect {sess.line} --reconnect".replace("  ", " ")
        print(f"{sess.name}: already {now}, kept with its {len(client.handlers)} handler(s); "
              f"to reconnect: {again}")
        if sess.log is not None and sess.log.widget is not None:
            from IPython.display import display

            display(sess.log)  # the cell's output was cleared when it ran again

    @staticmethod
    def _take_handlers(sess: Session) -> list[tuple[Any, HandlerSink | None, dict | None]]:
        """Take the handlers (and their output areas) off a client about to be replaced (on its loop)."""
        taken = [(h, sess.sinks.pop(h.name, None), sess.labels.pop(h.name, None)) for h in sess.client.handlers]
        # Off the old client now: what was queued for them would only be run
        # against a client that is stopping (every say() failing); it is
        # dropped instead (counted in the old handlers' `dropped`).
        sess.client.handlers.clear()
        return taken

    # -- %rtm_history ------------------------------------------------------------

    @magic_arguments()
    @argument("channels", nargs="*", help="channels, #name or id (default: every channel the bot is in)")
    @argument("--since", metavar="AGE", help="how far back: 7d, 12h, 30m, or a date such as 2026-11-24 (default: all)")
    @argument("--no-threads", action="store_true", help="skip the replies in threads")
    @line_magic
    def rtm_history(self, line: str = "") -> Any:
        """Fetch channels' history into ``rtm.events`` (rows with direction ``history``).

        Paced for Slack's limits and resumable (run it again after an
        interruption); a progress bar shows the channels done, the calls
        made and the messages fetched. In a kernel the cell returns at once
        and the bar moves; ``await`` the returned task to wait for it.
        """
        args = self._parse(self.rtm_history, line)
        sess = self._session()
        # The same --since means the same start each time in this session, so a
        # run after an interruption resumes instead of starting over.
        oldest = sess.since.get(args.since)
        if oldest is None:
            try:
                oldest = _since(args.since)
            except ValueError as exc:
                raise UsageError(f"{exc}. Type: {_usage(self.rtm_history)}") from None
            sess.since[args.since] = oldest
        view = _HistoryProgress(in_kernel() and sess.background is None)
        run = sess.client.backfill(args.channels or None, oldest=oldest, threads=not args.no_threads,
                                   progress=view.update)
        if sess.background is not None:
            status = sess.background.run(run, None)
            view.update(status)
            return None
        task = asyncio.get_running_loop().create_task(run, name=f"rtm-history-{sess.name}")
        _pending.add(task)
        task.add_done_callback(_pending.discard)
        task.add_done_callback(view.finished)
        return task

    # -- %rtm_status, %rtm_log, %rtm_stop ----------------------------------------

    @line_magic
    def rtm_status(self, line: str = "") -> None:
        """Per client: state, workspace, connection number, events/s, events recorded, counts,
        handler errors, and handlers that are stuck or lagging."""
        _no_arguments("rtm_status", line)
        if not self.sessions:
            raise UsageError("No RTM client is connected yet: run %rtm_connect first (or %rtm_connect --demo)")
        for name, sess in self.sessions.items():
            _show_fields(name, sess.run(self._status_fields, sess))

    @staticmethod
    def _status_fields(sess: Session) -> list[tuple[str, str]]:
        """What %rtm_status shows of one client, as (key, value) pairs (on the loop)."""
        client = sess.client
        recorded = f"{len(client.event_frame):,} ({sess.name}.events)"
        if sess.log is None:
            return [("state", str(client.state)), ("workspace", sess.where), ("events", recorded)]
        s = sess.log.status()
        team = f"{s['team']} ({sess.where})" if s["team"] else sess.where
        fields = [("state", str(s["state"])), ("workspace", team)]
        if s["connection"]:
            fields.append(("connection", f"#{s['connection']}"))
        fields += [("events/s", f"{s['events_per_second']:.1f}"), ("events", recorded)]
        if s["counts"]:
            fields.append(("counts", ", ".join(f"{k} {v}" for k, v in s["counts"])))
        fields.append(("handlers", f"{len(client.handlers)}, errors: {s['handler_errors']}"))
        if s["stuck_handlers"]:
            fields.append(("stuck", ", ".join(f"{n} (busy {b:.0f} s)" for n, b in s["stuck_handlers"])))
        if s["lagging_handlers"]:
            fields.append(("lagging", "; ".join(f"{n}: {q} queued, behind {lag:.0f} s"
                                                for n, q, lag in s["lagging_handlers"])))
        if s["paused"]:
            fields.append(("live log", "paused"))
        return fields

    @magic_arguments()
    @argument("-n", type=int, default=None, help="print the newest N rows as text instead of showing the widget")
    @line_magic
    def rtm_log(self, line: str = "") -> None:
        """Show the live log (as text outside a kernel, or with -n N)."""
        args = self._parse(self.rtm_log, line)
        sess = self._session()
        if sess.log is None:
            raise UsageError("This client has no live log")
        if args.n is not None or sess.log.widget is None:
            print(sess.run(sess.log.text, args.n if args.n is not None else 20))
        else:
            from IPython.display import display

            display(sess.log)

    @magic_arguments()
    @argument("name", nargs="?", help="the client variable to stop (default: every client)")
    @line_magic
    def rtm_stop(self, line: str = "") -> None:
        """Stop a client (or all): close the socket, remove handlers, stop the simulated workspace.

        The client's recorded events stay available (``rtm.events``).
        """
        args = self._parse(self.rtm_stop, line)
        targets = [self._session(args.name)] if args.name else list(self.sessions.values())
        if not targets:
            raise UsageError("No RTM client is running: nothing to stop")
        for sess in targets:
            if self._stop_session(sess) is None:
                print(f"{sess.name}: stopped")
            else:
                print(f"{sess.name}: stopping; the live log shows when it has stopped (or: await {sess.name}.async_stop())")

    def close(self) -> None:
        for sess in list(self.sessions.values()):
            self._stop_session(sess)


@magics_class
class HandlerMagics(Magics):
    """``%%rtm_on``, ``%rtm_off`` and ``%rtm_handlers``: the handlers of the clients ``clients`` binds."""

    def __init__(self, shell: Any, clients: RTMMagics) -> None:
        super().__init__(shell)
        self.clients = clients

    # -- %rtm_on ---------------------------------------------------------------

    @magic_arguments()
    @argument("event", help="event type, e.g. message, reaction_added, user_typing, * for all, or a slash command such as /deploy (Socket Mode)")
    @argument("function", nargs="?", help="(line form) an existing function fn(client, event) in the notebook to register")
    @argument("--match", metavar="REGEX", help="only events whose text matches this regular expression")
    @argument("--channel", metavar="C", help="only events in this channel (an id like C123, or #name)")
    @argument("--subtype", metavar="S", help="only message events of this subtype, e.g. bot_message")
    @argument("--name", metavar="NAME", help="handler name; re-registering a name replaces that handler")
    @line_cell_magic
    def rtm_on(self, line: str, cell: str | None = None) -> None:
        """Register a handler: the cell body runs for every matching event.

        ``%%rtm_on message --match Hello`` makes the cell body a handler with
        ``event`` (the event dict), ``client``, ``web_client`` and
        ``say(text, thread=False)`` (reply in the event's channel) in scope.
        ``await`` works in the body (the handler then runs on the loop;
        without ``await`` it runs on its own worker thread). What it prints,
        and its exceptions, appear under this cell and in the live log.

        Re-running the cell replaces its handler (see the module docs for
        how the default name is derived; --name sets it).

        ``%rtm_on message my_function`` registers an existing function
        ``my_function(client, event)``.

        On Socket Mode, ``%%rtm_on /deploy`` handles that slash command and
        ``%%rtm_on block_actions`` (``shortcut``, ``view_submission``, ...)
        an interactive payload: the cell's last expression (or a
        ``return``) answers it, a str as its text or a dict as the answer.
        """
        args = self.clients._parse(self.rtm_on, line)
        event = args.event
        if event.startswith("/"):
            if not re.fullmatch(r"/[\w.-]+", event):
                raise UsageError(f"{event!r} is not a slash command: one word after the slash, e.g. %%rtm_on /deploy")
        elif event not in KNOWN_EVENTS:
            # Only names a typo away: a loose cutoff turns any word into some event.
            near = difflib.get_close_matches(event, sorted(KNOWN_EVENTS), n=1, cutoff=0.75)
            hint = (f" Did you mean {near[0]!r}? Type: %%rtm_on {near[0]}" if near else
                    f" Common ones: {', '.join(COMMON_EVENTS)}, or * for every event; %rtm_on? has examples.")
            raise UsageError(f"Unknown event type {event!r}.{hint}")
        sess = self.clients._session()
        filters = {k: v for k, v in (("match", args.match), ("channel", args.channel), ("subtype", args.subtype)) if v}
        if args.match:
            try:
                re.compile(args.match)
            except re.error as exc:
                raise UsageError(f"--match {args.match!r} is not a valid regular expression: {exc}") from None
        labels = {k: repr(v) if k == "match" else v for k, v in filters.items()}
        if args.channel:
            filters["channel"] = self._channel_id(sess, args.channel)

        if cell is None:
            if not args.function:
                raise UsageError(f"%rtm_on needs a function, or use the cell form: %%rtm_on {event} (the cell body is the handler)")
            fn = self.shell.user_ns.get(args.function)
            if not callable(fn):
                raise UsageError(f"{args.function!r} is not a function defined in this notebook. Define def {args.function}(client, event): ... first")
            from rtm_notebook.errors import SlackClientError
            from rtm_notebook.handlers import validate_handler

            try:
                validate_handler(fn)
            except SlackClientError as exc:
                raise UsageError(str(exc)) from None
            name = args.name or args.function
            sink = self._sink(sess, name)
        else:
            if args.function:
                raise UsageError(f"In the cell form the body is the handler: type %%rtm_on {event} {' '.join(line.split()[2:])}".rstrip())
            if not cell.strip():
                raise UsageError("The cell is empty: write the handler's body below %%rtm_on, e.g. say(f\"Hi <@{event['user']}>!\")")
            identity = self.clients._cell_id or " ".join(line.split())
            name = args.name or f"{event.replace('*', 'all').lstrip('/')}_{_hash(identity)}"
            # One blank line for the magic's: line numbers in tracebacks and
            # syntax errors are then the cell's own, under the cell's own In[N].
            number = self.clients._cell_number()
            body = "\n" + self.shell.transform_cell(cell)
            filename = self.shell.compile.cache(body, number, raw_code=f"%%rtm_on {line}\n{cell}")
            sink = self._sink(sess, name)
            try:
                fn = compile_handler(body, filename=filename, namespace=self.shell.user_ns, web=_web_client,
                                     say=_say_factory(sink), answers=event.startswith("/") or event in ANSWERABLE)
            except SyntaxError as exc:
                # Raised from here, IPython would show the toolkit's frames too.
                raise UsageError(_syntax_message(exc, number)) from None
            fn.__name__ = fn.__qualname__ = name

        def register() -> Any:
            old = sess.sinks.pop(name, None)
            if old is not None:
                old.close()
            sess.sinks[name] = sink
            sess.labels[name] = labels
            return sess.client.handlers.add(event, fn, name=name, filters=filters or None, call_context=sink.context)

        handler = sess.run(register)
        where = "on the loop" if handler.is_async else "on its own thread"
        described = ", ".join(f"{k}={v}" for k, v in labels.items())
        print(f"handler {name!r} on {event}" + (f" ({described})" if described else "") + f", runs {where}; %rtm_off {name} removes it")
        if sink.output is not None:
            from IPython.display import display

            display(sink.output)

    def _sink(self, sess: Session, name: str) -> HandlerSink:
        """The output area of handler ``name``: under this cell in a kernel, the terminal elsewhere."""
        install_routing()
        return HandlerSink(name, sess.loop, widget=in_kernel(), on_text=sess.log.add_output if sess.log is not None else None)

    def _channel_id(self, sess: Session, channel: str) -> str:
        """Accept ``C123`` or ``#general`` / ``general`` (when the name is known)."""
        if re.fullmatch(r"[CGD][A-Z0-9]{2,}", channel):
            return channel
        wanted = channel.lstrip("#")
        names = sess.log.channels if sess.log is not None else {}
        for cid, cname in names.items():
            if cname == wanted:
                return cid
        known = sorted(names.values())
        near = difflib.get_close_matches(wanted, known, n=1)
        hint = f" Did you mean #{near[0]}?" if near else (" Known: " + ", ".join("#" + n for n in known[:10]) if known else " Use the channel id (C...), e.g. from rtm.messages().")
        raise UsageError(f"Unknown channel {channel!r}.{hint}")

    # -- %rtm_off, %rtm_handlers ---------------------------------------------

    @magic_arguments()
    @argument("name", nargs="?", help="the handler to remove (see %rtm_handlers)")
    @argument("--all", action="store_true", help="remove every handler")
    @line_magic
    def rtm_off(self, line: str = "") -> None:
        """Remove a handler by name (``%rtm_off NAME``) or all of them (``%rtm_off --all``)."""
        args = self.clients._parse(self.rtm_off, line)
        sess = self.clients._session()
        if args.all == bool(args.name):
            raise UsageError("Type %rtm_off NAME (names are listed by %rtm_handlers) or %rtm_off --all")

        def remove() -> list[str]:
            names = list(sess.sinks) if args.all else [args.name]
            removed = []
            if args.all:
                removed = [h.name for h in sess.client.handlers]
                sess.client.handlers.clear()
            elif sess.client.handlers.remove(args.name):
                removed = [args.name]
            for name in names:
                sess.labels.pop(name, None)
                sink = sess.sinks.pop(name, None)
                if sink is not None:
                    sink.close()
            return removed

        if not args.all and args.name not in sess.client.handlers:
            known = [h.name for h in sess.client.handlers]
            near = difflib.get_close_matches(args.name, known, n=1)
            hint = f" Did you mean %rtm_off {near[0]}?" if near else (f" Handlers: {', '.join(known)}" if known else " There are no handlers.")
            raise UsageError(f"No handler named {args.name!r}.{hint}")
        removed = sess.run(remove)
        print(f"removed {len(removed)} handler(s)" + (f": {', '.join(removed)}" if removed else ""))

    @line_magic
    def rtm_handlers(self, line: str = "") -> Any:
        """A table of the handlers, ready to read: name, event, filters (as you typed them),
        calls, errors, last error, mean time, queued (events waiting), behind (how long they
        have waited since its queue was last empty), dropped (given to it and never run: see
        docs/architecture.md, "Stopping") and busy (how long the call in progress has run).

        Times are text with their unit (``0.81 ms``, ``12 s``) and nothing is a blank; the
        numbers behind them are ``rtm.handlers.stats()``.
        """
        _no_arguments("rtm_handlers", line)
        import pandas as pd

        sess = self.clients._session()

        def rows() -> list[dict]:
            names = getattr(sess.client, "channel_names", {}) or {}
            out = []
            for s in sess.client.handlers.stats():
                labels = sess.labels.get(s["name"])
                if labels is None:  # registered in code (rtm.on, RTMClient.run_on)
                    labels = {k: repr(v) if k == "match" else ("#" + names[v] if k == "channel" and v in names else v)
                              for k, v in (s.get("filters") or {}).items()}
                out.append({
                    "name": s["name"],
                    "event": s["event"],
                    "filters": ", ".join(f"{k}={v}" for k, v in labels.items()),
                    "calls": s["calls"],
                    "errors": s["errors"],
                    "last error": s["last_error"] or "",
                    "mean time": _duration(s["mean_time"]) if s["calls"] else "",
                    "queued": s["queued"],
                    "behind": _duration(s["behind_for"]),
                    "dropped": s["dropped"],
                    "busy": _duration(s["busy_for"]),
                })
            return out

        columns = ["name", "event", "filters", "calls", "errors", "last error", "mean time", "queued", "behind",
                   "dropped", "busy"]
        return pd.DataFrame(sess.run(rows), columns=columns)


_pending: set[asyncio.Task] = set()


def _since(age: str | None) -> float | None:
    """``7d`` / ``12h`` / ``30m`` / ``90s`` ago, or a date or ISO time, as epoch seconds."""
    if age is None:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([dhms])", age.strip())
    if m:
        return time.time() - float(m.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[m.group(2)]
    try:
        return as_utc(age).timestamp()
    except (TypeError, ValueError):
        raise ValueError(f"--since {age!r} is neither an age (7d, 12h, 30m) nor a date (2026-11-24)") from None


class _HistoryProgress:
    """The progress of a backfill: an ipywidgets bar in a kernel, lines on stderr elsewhere."""

    def __init__(self, widget: bool) -> None:
        self.bar = self.label = None
        if widget:
            import ipywidgets as w
            from IPython.display import display

            self.bar = w.IntProgress(value=0, min=0, max=1, description="history")
            self.label = w.Label("starting")
            display(w.HBox([self.bar, self.label]))

    def update(self, p: Any) -> None:
        text = (f"{p.channels_done}/{p.channels} channels, {p.calls} calls, {p.messages} messages"
                + (" (done)" if p.done else f" ({p.channel})" if p.channel else ""))
        if self.bar is not None:
            self.bar.max = max(1, p.channels)
            self.bar.value = p.channels_done
            self.label.value = text
            return
        filled = 20 * p.channels_done // max(1, p.channels)
        line = f"history [{'#' * filled}{'.' * (20 - filled)}] {text}"
        if sys.stderr.isatty():  # one bar, redrawn in place
            print(f"\r{line}\033[K", end="\n" if p.done else "", file=sys.stderr, flush=True)
        elif p.done or p.calls % 10 == 1:
            print(line, file=sys.stderr)

    def finished(self, task: asyncio.Task) -> None:
        if self.label is not None and not task.cancelled() and task.exception() is not None:
            self.bar.bar_style = "danger"
            self.label.value = f"failed: {task.exception()}"


def _show_fields(title: str | None, fields: list[tuple[str, str]]) -> None:
    """Show ``key: value`` lines: aligned text in a terminal, a small table in a
    kernel (a long value wraps between words there, never inside a key)."""
    import html

    from IPython.display import display

    width = max((len(key) for key, _ in fields), default=0) + 1
    indent = "  " if title else ""
    lines = [title] if title else []
    lines += [f"{indent}{key + ':':<{width}} {value}" for key, value in fields]
    esc = html.escape
    rows = "".join(
        f'<tr><th style="text-align:left;white-space:nowrap;vertical-align:top;padding:1px 12px 1px 0;'
        f'font-weight:normal;color:#555">{esc(key)}</th>'
        f'<td style="text-align:left;word-break:normal;overflow-wrap:break-word;padding:1px 0">{esc(value)}</td></tr>'
        for key, value in fields)
    caption = (f'<caption style="text-align:left;font-weight:bold;caption-side:top">{esc(title)}</caption>'
               if title else "")
    table = (f'<table class="rtm-fields" style="border-collapse:collapse;'
             f'font-family:var(--jp-code-font-family,monospace);font-size:12px">{caption}{rows}</table>')
    display({"text/plain": "\n".join(lines), "text/html": table}, raw=True)


def _team_name(client: Any) -> str:
    team = getattr(client, "team", None)
    if isinstance(team, dict):
        return str(team.get("name") or team.get("domain") or team.get("id") or "the workspace")
    return str(team or "the workspace")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext rtm_notebook``: register the magics (idempotent)."""
    global _current
    if _current is not None:
        return
    magics = RTMMagics(ipython)
    ipython.register_magics(magics)
    ipython.register_magics(HandlerMagics(ipython, magics))
    ipython.events.register("pre_run_cell", magics.pre_run_cell)
    install_routing()
    _current = magics


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext rtm_notebook``: stop every client, remove handlers, restore stdout."""
    global _current
    magics, _current = _current, None
    if magics is None:
        return
    try:
        magics.close()
    finally:
        try:
            ipython.events.unregister("pre_run_cell", magics.pre_run_cell)
        except ValueError:
            pass
        for kind in ("line", "cell"):
            for name in [n for n in ipython.magics_manager.magics[kind] if n.startswith("rtm_")]:
                del ipython.magics_manager.magics[kind][name]
        uninstall_routing()
