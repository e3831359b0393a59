"""The ``rtm-notebook`` command: ``demo`` and ``sim``."""

from __future__ import annotations

import argparse
import collections
import math
import os
import shutil
import sys
import time

from rtm_notebook.fields import channel_of, summary, type_label, user_of
from rtm_notebook.handlers import handler_label


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("rtm-notebook")
    except Exception:  # not installed (run from a checkout): the package's own
        from rtm_notebook import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtm-notebook",
        description="Slack RTM in Jupyter: run the demo or serve the simulated workspace.",
    )
    parser.add_argument("--version", action="version", version=f"rtm-notebook {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the seed 'Hello' bot against the simulated workspace and stream events")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to run (default 20; inf: until Ctrl-C, which also stops it early)")
    demo.add_argument("--rate", type=float, default=20.0, help="simulated traffic, events per second (default 20)")
    demo.add_argument("--seed", type=int, default=1, help="seed of the simulated workspace (default 1)")
    demo.add_argument("--token-env", metavar="VAR", help="use a real workspace: read the bot token from this environment variable")
    demo.add_argument("--base-url", metavar="URL", help="Web API base URL with --token-env (default Slack's, "
                      "https://slack.com/api/; the base URL `rtm-notebook sim` prints runs the demo on that workspace)")
    demo.add_argument("--record-to", metavar="PATH", default="rtm-demo-events.jsonl", help="where to write the recorded events (JSON lines)")

    sim = sub.add_parser("sim", help="serve the simulated Slack workspace in the foreground")
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    sim.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    sim.add_argument("--rate", type=float, default=1.0, help="simulated traffic, events per second (default 1)")
    sim.add_argument("--seed", type=int, default=1, help="seed: the same seed gives the same workspace and traffic")
    sim.add_argument("--export", metavar="PATH", help="write the workspace's history as a Slack export (a .zip, "
                     "or a folder) and exit")
    sim.add_argument("--replay", metavar="PATH", help="serve a recording (JSON-lines, Parquet dataset or Slack "
                     "export) as the traffic, over and over, instead of generated events")
    sim.add_argument("--speed", type=float, default=1.0, help="with --replay: 2 plays twice as fast (default 1)")
    return parser


def _refuse(command: str, message: str) -> int:
    """Bad input: one line on stderr that says what to type, and exit status 2 (as argparse does)."""
    print(f"rtm-notebook {command}: {message}", file=sys.stderr)
    return 2


def _rate_problem(rate: float, example: str) -> str | None:
    # NaN compares false with everything, so it is refused by this form; inf is a firehose.
    if not rate >= 0:
        return f"--rate must be 0 or more events per second (inf: as fast as possible), e.g. {example}"
    return None


def _record_problem(path: str) -> str | None:
    """Why the demo could not append to ``path``, or None: checked before anything starts."""
    full = os.path.abspath(path)
    parent = os.path.dirname(full)
    example = "--record-to events.jsonl"
    if os.path.isdir(full):
        return f"--record-to {path} is a directory; give a file name in it, e.g. --record-to {os.path.join(path, 'events.jsonl')}"
    if not os.path.isdir(parent):
        return f"--record-to {path}: the directory {parent} does not exist; create it or pick another path, e.g. {example}"
    if os.path.exists(full) and not os.access(full, os.W_OK):
        return f"--record-to {path}: the file is not writable; pick another path, e.g. {example}"
    if not os.path.exists(full) and not os.access(parent, os.W_OK | os.X_OK):
        return f"--record-to {path}: cannot create files in {parent}; pick another path, e.g. {example}"
    return None


def _base_url_problem(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return f"--base-url must be an http(s) URL such as https://slack.com/api/ or http://127.0.0.1:8080/api/, not {url!r}"
    return None


def run_sim(*, host: str, port: int, rate: float, seed: int, export: str | None = None, replay: str | None = None,
            speed: float = 1.0) -> int:
    """``rtm-notebook sim``: check the options, then serve until Ctrl-C (or write an export and exit)."""
    if export is not None:
        parent = os.path.dirname(os.path.abspath(export))
        if not os.path.isdir(parent):
            return _refuse("sim", f"--export {export}: the folder {parent} does not exist")
        from rtm_notebook.sim import SimWorkspace

        with SimWorkspace(seed=seed) as workspace:
            print(f"wrote the history of {workspace.team['name']!r} as a Slack export: {workspace.export(export)}")
        return 0
    played = None
    if replay is not None:
        if not os.path.exists(replay):
            return _refuse("sim", f"--replay {replay}: no such file or folder (a .jsonl recording, a Parquet "
                                  "dataset folder or a Slack export)")
        if not speed > 0:
            return _refuse("sim", "--speed must be more than 0, e.g. --speed 2")
        import orjson

        from rtm_notebook.fields import inner_event
        from rtm_notebook.playback import recorded_events

        # A Socket Mode recording holds envelopes: the workspace sends what they carried, wrapped anew.
        played = [(at, inner_event(orjson.loads(raw))) for at, raw in recorded_events(replay)[0]]
        rate = 0.0
    if not 0 <= port <= 65535:
        return _refuse("sim", "--port must be from 0 to 65535 (0 picks a free port), e.g. --port 8080")
    problem = _rate_problem(rate, "--rate 5")
    if problem:
        return _refuse("sim", problem)
    if not host:
        return _refuse("sim", "--host must be an address to listen on, e.g. --host 127.0.0.1")
    from rtm_notebook.sim import serve

    try:
        return serve(host=host, port=port, rate=rate, seed=seed, play=played, speed=speed)
    except OSError as exc:  # only starting can fail: the address cannot be resolved or bound
        import socket

        why = exc.strerror or str(exc)
        if isinstance(exc, socket.gaierror):
            return _refuse("sim", f"cannot resolve --host {host} ({why}); use an address of this machine, e.g. --host 127.0.0.1")
        hint = "pick another --port, or --port 0 for any free one" if port else "use an address of this machine, e.g. --host 127.0.0.1"
        return _refuse("sim", f"cannot listen on {host} port {port} ({why}); {hint}")


def run_demo(*, seconds: float, rate: float, seed: int, token_env: str | None, record_to: str,
             base_url: str | None = None) -> int:
    """Run the seed's "Hello" bot, stream events with a live summary, print a table.

    Without ``token_env`` it runs against a simulated workspace (``rate``
    events per second of traffic, ``seed`` picks the workspace and its
    traffic); with it, against the Slack workspace (or the one at
    ``base_url``) whose bot token is in that environment variable. Stops
    after ``seconds`` or at Ctrl-C. Returns the process exit status: 2 for
    bad options (nothing was started), 1 when it could not connect.
    """
    import asyncio

    if not seconds > 0:  # NaN included; inf runs until Ctrl-C
        return _refuse("demo", "--seconds must be more than 0, e.g. --seconds 20")
    problem = _rate_problem(rate, "--rate 20")
    if problem:
        return _refuse("demo", problem)
    if base_url is not None:
        if not token_env:
            return _refuse("demo", "--base-url needs a token: add --token-env VAR, VAR naming the environment "
                                   "variable that holds it (the simulated workspace's token is printed by `rtm-notebook sim`)")
        problem = _base_url_problem(base_url)
        if problem:
            return _refuse("demo", problem)
    token = None
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            return _refuse("demo", f"environment variable {token_env} is not set or empty; "
                                   f"set it to a classic app's bot token (xoxb-...), or leave out --token-env to use the simulated workspace")
    problem = _record_problem(record_to)
    if problem:
        return _refuse("demo", problem)
    out = _DemoOutput(sys.stdout)
    return asyncio.run(_demo(seconds=seconds, rate=rate, seed=seed, token=token, record_to=record_to, out=out,
                             base_url=base_url))


def _install_seed_bot() -> None:
    """The seed's example bot (slackclient 2.x README), verbatim but for the import.

    ``RTMClient.run_on`` registers for every client of the process, as the
    seed's did, so it is registered only here, in the demo's own process.
    """
    from rtm_notebook import RTMClient

    @RTMClient.run_on(event="message")
    def say_hello(**payload):
        data = payload["data"]
        web_client = payload["web_client"]
        rtm_client = payload["rtm_client"]  # noqa: F841 (the seed's example unpacks it too)
        if "Hello" in data.get("text", []):
            channel_id = data["channel"]
            thread_ts = data["ts"]
            user = data["user"]

            web_client.chat_postMessage(
                channel=channel_id,
                text=f"Hi <@{user}>!",
                thread_ts=thread_ts
            )


class _DemoStats:
    """What the demo counts, updated by a tap on the client's loop (O(1) per event)."""

    def __init__(self) -> None:
        self.received = 0
        self.by_type: collections.Counter[str] = collections.Counter()
        self.by_channel: collections.Counter[str] = collections.Counter()
        self.hellos = 0
        self.replies = 0
        self.handler_errors = 0
        self.bot_id: str | None = None

    def add(self, event: dict) -> None:
        etype = event.get("type")
        if etype == "error" and event.get("handler"):
            self.handler_errors += 1
        if event.get("direction", "in") != "in" or etype in _CLIENT_EVENTS:
            return
        self.received += 1
        self.by_type[type_label(event)] += 1
        channel = channel_of(event)
        if channel:
            self.by_channel[channel] += 1
        if etype == "message" and not event.get("subtype"):
            text = event.get("text")
            if isinstance(text, str) and "Hello" in text:
                self.hellos += 1
            # The bot's replies come back over the socket like everyone's messages.
            if self.bot_id and event.get("user") == self.bot_id and event.get("thread_ts"):
                self.replies += 1


# Events the client makes itself (not from Slack): shown, not counted as traffic.
_CLIENT_EVENTS = frozenset({"state_change", "open", "close", "error", "hello"})


def _event_text(event: dict) -> str:
    text = summary(event)
    text = " ".join(text.split())
    if event.get("type") == "error" and event.get("handler"):
        # The message first (a long line is cut at the end), then which handler.
        text = f"{text}  · {handler_label(str(event['handler']))}"
    return text


class _DemoOutput:
    """Event lines plus a summary: redrawn in place on a terminal, plain lines otherwise."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.width = shutil.get_terminal_size((100, 24)).columns if self.tty else 120
        self._status = ""

    def line(self, text: str) -> None:
        self.lines([text])

    def lines(self, texts: list[str]) -> None:
        """Print lines above the status line, in one write."""
        if not texts:
            return
        cut = [t if len(t) <= self.width - 1 else t[: self.width - 2] + "…" for t in texts]
        if self.tty:
            # Clear the status line, print the events above it, redraw the status.
            self.stream.write("\r\x1b[K" + "\n".join(cut) + "\n" + self._status)
        else:
            self.stream.write("\n".join(cut) + "\n")
        self.stream.flush()

    def status(self, text: str) -> None:
        if self.tty:
            self._status = "\x1b[7m" + text[: self.width - 1] + "\x1b[0m"
            self.stream.write("\r\x1b[K" + self._status)
            self.stream.flush()
        else:
            self.stream.write("-- " + text + "\n")
            self.stream.flush()

    def end_status(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._status = ""


# Event lines are printed in batches, FLUSH_INTERVAL apart, at most
# LINES_PER_FLUSH at a time: printing every event of a fast workspace as it
# arrives blocks the loop on the terminal (or a full pipe), and the demo then
# ran well past --seconds. The summary still counts every event.
FLUSH_INTERVAL = 0.1
LINES_PER_FLUSH = 25
CONNECT_TIMEOUT = 30.0
NAMES_TIMEOUT = 15.0


class _EventLines:
    """The demo's event lines: taken in on the loop (an append), printed in batches with names."""

    def __init__(self, out: _DemoOutput, users: dict[str, str], channels: dict[str, str]) -> None:
        self.out = out
        self.users = users
        self.channels = channels
        self.pending: collections.deque[tuple[float, dict]] = collections.deque()
        # Held back until the names are known, so that no row shows raw ids.
        self.hold = True
        self.skipped = 0

    def add(self, event: dict) -> None:
        self.pending.append((time.time(), event))

    def format(self, received: float, event: dict) -> str:
        channel = channel_of(event)
        channel = "#" + self.channels.get(channel, channel) if channel else ""
        user = user_of(event)
        if event.get("handler"):
            user = None  # the handler is named after the message (see _event_text)
        user = self.users.get(user, user) if isinstance(user, str) else ""
        clock = time.strftime("%H:%M:%S", time.localtime(received))
        head = f"{clock}  {type_label(event):<24} {channel:<14} {user:<12} "
        text = _event_text(event)
        if event.get("type") == "error" and event.get("handler"):
            # A handler's error has no channel or user of its own: the message
            # takes their columns, and is cut rather than the handler's name.
            head = f"{clock}  {type_label(event):<24} "
            msg, sep, label = text.rpartition("  · ")
            room = self.out.width - 1 - len(head) - len(sep) - len(label)
            if len(msg) > room > 10:
                text = msg[: room - 1] + "…" + sep + label
        return (head + text).rstrip()

    def flush(self, *, everything: bool = False) -> None:
        if self.hold and not everything:
            return
        pending, lines = self.pending, []
        budget = len(pending) if everything else LINES_PER_FLUSH
        while pending and len(lines) < budget:
            lines.append(self.format(*pending.popleft()))
        if pending and not everything:
            self.skipped += len(pending)
            lines.append(f"… {len(pending)} more events not shown (over {LINES_PER_FLUSH / FLUSH_INTERVAL:g} lines/s); "
                         "the summary and the recording have them all")
            pending.clear()
        self.out.lines(lines)


def _without_retry_note(msg: str) -> str:
    """A client error message without its "(retrying in N s)": the demo does not retry."""
    import re

    return re.sub(r"\s*\(retrying in [\d.]+ s\)\s*$", "", msg)


async def _demo(*, seconds: float, rate: float, seed: int, token: str | None, record_to: str, out: _DemoOutput,
                base_url: str | None = None) -> int:
    import asyncio

    from rtm_notebook import RTMClient
    from rtm_notebook.errors import RTMError
    from rtm_notebook.events import EventFrame

    users: dict[str, str] = {}
    channels: dict[str, str] = {}
    sim = None
    if token is None:
        from rtm_notebook.sim import SimWorkspace

        sim = SimWorkspace(seed=seed, rate=rate)
        sim.start()
        token, base_url = sim.token, sim.base_url
        where = f"the simulated workspace {sim.team['name']!r} at {sim.base_url} (seed {seed}, {rate:g} events/s)"
        # The simulated workspace knows every name before anyone connects.
        users.update({u["id"]: u.get("name") or u["id"] for u in sim.users})
        channels.update({c["id"]: c.get("name") or c["id"] for c in sim.channels})
    else:
        from rtm_notebook.web import DEFAULT_BASE_URL

        base_url = base_url or DEFAULT_BASE_URL
        where = "Slack (your workspace)" if base_url == DEFAULT_BASE_URL else f"the workspace at {base_url}"
    record_path = os.path.abspath(record_to)
    _install_seed_bot()
    try:
        client = RTMClient(token=token, base_url=base_url, record_to=record_path)
    except (OSError, RTMError) as exc:
        if sim is not None:
            sim.stop()
        print(f"rtm-notebook demo: {exc}", file=sys.stderr)
        return 2
    del token
    client.user_names.update(users)
    client.channel_names.update(channels)
    stats = _DemoStats()
    lines = _EventLines(out, users, channels)
    lines.hold = sim is None
    # Why connecting failed, from the client's own error events.
    connect_errors: list[str] = []
    connect_failed = asyncio.Event()

    def show(event: dict) -> None:
        stats.add(event)
        if event.get("direction") == "out":
            return
        if event.get("type") == "error" and not event.get("handler") and stats.bot_id is None:
            err = event.get("error")
            msg = err.get("msg") if isinstance(err, dict) else err
            connect_errors.append(_without_retry_note(str(msg or err)))
            connect_failed.set()
        lines.add(event)

    async def print_lines() -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            lines.flush()

    client.add_tap(show)
    how_long = "until Ctrl-C" if math.isinf(seconds) else f"for {seconds:g} s (Ctrl-C stops early)"
    out.line(f"rtm-notebook demo: the seed's \"Hello\" bot on {where}, {how_long}")
    started = time.monotonic()
    interrupted = False
    printer = None
    try:
        client.start()
        printer = asyncio.ensure_future(print_lines())
        problem = await _connect(client, connect_failed, connect_errors, timeout=min(CONNECT_TIMEOUT, seconds + 10))
        if problem is not None:
            lines.flush(everything=True)
            out.end_status()
            print(f"rtm-notebook demo: could not connect to {base_url}: {problem}", file=sys.stderr)
            return 1
        stats.bot_id = (client.self or {}).get("id") or ""
        if sim is None:
            try:
                await asyncio.wait_for(_names(client, users, channels), NAMES_TIMEOUT)
            except Exception as exc:  # names make the output readable; ids still work
                why = str(exc) or f"no answer within {NAMES_TIMEOUT:g} s"
                out.line(f"(could not load user and channel names: {why}; showing ids)")
            lines.hold = False
        deadline = started + seconds
        last_mark, last_count = time.monotonic(), stats.received
        rate_now = 0.0
        while (now := time.monotonic()) < deadline:
            await asyncio.sleep(min(1.0, deadline - now))
            now = time.monotonic()
            if now - last_mark >= 0.5:
                rate_now = (stats.received - last_count) / (now - last_mark)
                last_mark, last_count = now, stats.received
            lines.flush()
            out.status(_status_line(stats, channels, now - started, rate_now))
    except asyncio.CancelledError:
        # Ctrl-C: asyncio.run cancels this task; finish the summary instead.
        interrupted = True
        asyncio.current_task().uncancel()
    finally:
        elapsed = time.monotonic() - started
        if printer is not None:
            printer.cancel()
        await client.async_stop()
        if stats.bot_id is not None:
            lines.flush()
        out.end_status()
        if sim is not None:
            sim.stop()

    in_file = len(EventFrame.read(record_path)) if os.path.exists(record_path) else 0
    print(f"\nRecorded {len(client.event_frame)} events of this run to {record_path} "
          f"({in_file} in the file; it is appended to, run after run).", file=out.stream)
    print(f'Load them with: from rtm_notebook import EventFrame; EventFrame.read("{record_path}").to_pandas()',
          file=out.stream)
    # Last, so that a terminal shows the table when the demo ends.
    print(_summary(stats, channels, elapsed, where, interrupted), file=out.stream)
    out.stream.flush()
    return 0


async def _connect(client, failed, errors: list[str], *, timeout: float) -> str | None:
    """Wait for hello; None once connected, else why not (Slack's error code, the network error).

    The demo gives up at the first failed attempt and says why, rather than
    retrying quietly until a timeout with nothing to show.
    """
    import asyncio

    from rtm_notebook.errors import RTMConnectError

    hello = asyncio.ensure_future(client.connect())
    failure = asyncio.ensure_future(failed.wait())
    try:
        done, _ = await asyncio.wait({hello, failure}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        failure.cancel()
        if not hello.done():
            hello.cancel()
    if hello in done:
        exc = hello.exception()
        if exc is None:
            return None
        if isinstance(exc, RTMConnectError):  # Slack's error code and what to do about it
            return str(exc)
        return errors[-1] if errors else f"{type(exc).__name__}: {exc}"
    if errors:
        return errors[-1]
    return f"no hello from Slack within {timeout:g} s (state: {client.state})"


async def _names(client, users: dict[str, str], channels: dict[str, str]) -> None:
    """Channel and user names, one Web API pass, so lines and tables show #general not C123."""
    web = client.web_client
    async for page in web.paginate("conversations.list", limit=200, types="public_channel,private_channel"):
        channels.update({c["id"]: c.get("name") or c["id"] for c in page.get("channels") or [] if c.get("id")})
    async for page in web.paginate("users.list", limit=200):
        users.update({u["id"]: u.get("name") or u["id"] for u in page.get("members") or [] if u.get("id")})
    client.user_names.update(users)
    client.channel_names.update(channels)


def _status_line(stats: _DemoStats, channels: dict[str, str], elapsed: float, rate_now: float) -> str:
    types = ", ".join(f"{t} {n}" for t, n in stats.by_type.most_common(4))
    chans = ", ".join(f"#{channels.get(c, c)} {n}" for c, n in stats.by_channel.most_common(3))
    return (f"{elapsed:5.1f}s  {stats.received} events ({rate_now:.1f}/s)  |  {types}  |  {chans}  |  "
            f"Hello seen {stats.hellos}, replies sent {stats.replies}, handler errors {stats.handler_errors}")


def _summary(stats: _DemoStats, channels: dict[str, str], elapsed: float, where: str, interrupted: bool) -> str:
    how = "stopped by Ctrl-C" if interrupted else "done"
    rows = [("events received", str(stats.received)),
            ("events/s", f"{stats.received / elapsed:.1f}" if elapsed > 0 else "-")]
    rows += [(f"  {t}", str(n)) for t, n in stats.by_type.most_common()]
    rows.append(("channels", str(len(stats.by_channel))))
    rows += [(f"  #{channels.get(c, c)}", str(n)) for c, n in stats.by_channel.most_common()]
    rows += [('"Hello" messages seen', str(stats.hellos)),
             ("replies sent", str(stats.replies)),
             ("handler errors", str(stats.handler_errors))]
    width = max(len(k) for k, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    rule = "-" * (width + vwidth + 3)
    lines = ["", f"Summary: {how} after {elapsed:.1f} s on {where}", rule]
    lines += [f"{k:<{width}}   {v:>{vwidth}}" for k, v in rows]
    lines.append(rule)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sim":
        return run_sim(host=args.host, port=args.port, rate=args.rate, seed=args.seed, export=args.export,
                       replay=args.replay, speed=args.speed)
    if args.command == "demo":
        return run_demo(
            seconds=args.seconds, rate=args.rate, seed=args.seed,
            token_env=args.token_env, record_to=args.record_to, base_url=args.base_url,
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
