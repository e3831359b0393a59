"""The ``rtm-notebook`` command: ``demo`` and ``sim``."""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import time

from rtm_notebook.fields import channel_of, summary, type_label, user_of


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtm-notebook",
        description="Slack RTM in Jupyter: run the demo or serve the simulated workspace.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the seed 'Hello' bot against the simulated workspace and stream events")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to run (default 20; Ctrl-C stops early)")
    demo.add_argument("--rate", type=float, default=20.0, help="simulated traffic, events per second (default 20)")
    demo.add_argument("--seed", type=int, default=1, help="seed of the simulated workspace (default 1)")
    demo.add_argument("--token-env", metavar="VAR", help="use a real workspace: read the bot token from this environment variable")
    demo.add_argument("--record-to", metavar="PATH", default="rtm-demo-events.jsonl", help="where to write the recorded events (JSON lines)")

    sim = sub.add_parser("sim", help="serve the simulated Slack workspace in the foreground")
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    sim.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    sim.add_argument("--rate", type=float, default=1.0, help="simulated traffic, events per second (default 1)")
    sim.add_argument("--seed", type=int, default=1, help="seed: the same seed gives the same workspace and traffic")
    return parser


def run_demo(*, seconds: float, rate: float, seed: int, token_env: str | None, record_to: str) -> int:
    """Run the seed's "Hello" bot, stream events with a live summary, print a table.

    Without ``token_env`` it runs against a simulated workspace (``rate``
    events per second of traffic, ``seed`` picks the workspace and its
    traffic); with it, against the Slack workspace whose bot token is in that
    environment variable. Stops after ``seconds`` or at Ctrl-C. Returns the
    process exit status.
    """
    import asyncio

    if seconds <= 0:
        print("rtm-notebook demo: --seconds must be more than 0, e.g. --seconds 20", file=sys.stderr)
        return 2
    if rate < 0:
        print("rtm-notebook demo: --rate must be 0 or more events per second, e.g. --rate 20", file=sys.stderr)
        return 2
    token = None
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            print(f"rtm-notebook demo: environment variable {token_env} is not set or empty; "
                  f"set it to a classic app's bot token (xoxb-...), or leave out --token-env to use the simulated workspace",
                  file=sys.stderr)
            return 2
    out = _DemoOutput(sys.stdout)
    return asyncio.run(_demo(seconds=seconds, rate=rate, seed=seed, token=token, record_to=record_to, out=out))


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
    return " ".join(summary(event).split())


class _DemoOutput:
    """Event lines plus a summary: redrawn in place on a terminal, plain lines otherwise."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.width = shutil.get_terminal_size((100, 24)).columns if self.tty else 120
        self._status = ""

    def line(self, text: str) -> None:
        text = text if len(text) <= self.width - 1 else text[: self.width - 2] + "…"
        if self.tty:
            # Clear the status line, print the event above it, redraw the status.
            self.stream.write(f"\r\x1b[K{text}\n{self._status}")
        else:
            self.stream.write(text + "\n")
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


async def _demo(*, seconds: float, rate: float, seed: int, token: str | None, record_to: str, out: _DemoOutput) -> int:
    import asyncio

    from rtm_notebook import RTMClient
    from rtm_notebook.errors import RTMConnectError
    from rtm_notebook.events import EventFrame

    sim = None
    if token is None:
        from rtm_notebook.sim import SimWorkspace

        sim = SimWorkspace(seed=seed, rate=rate)
        sim.start()
        token, base_url = sim.token, sim.base_url
        where = f"the simulated workspace {sim.team['name']!r} at {sim.base_url} (seed {seed}, {rate:g} events/s)"
    else:
        from rtm_notebook.web import DEFAULT_BASE_URL as base_url

        where = "Slack (your workspace)"
    record_path = os.path.abspath(record_to)
    _install_seed_bot()
    client = RTMClient(token=token, base_url=base_url, record_to=record_path)
    del token
    stats = _DemoStats()
    channels: dict[str, str] = {}
    users: dict[str, str] = {}

    def show(event: dict) -> None:
        stats.add(event)
        if event.get("direction") == "out":
            return
        channel = channel_of(event)
        channel = "#" + channels.get(channel, channel) if channel else ""
        user = user_of(event)
        if event.get("handler"):
            user = f"[{event['handler']}]"
        user = users.get(user, user) if isinstance(user, str) else ""
        clock = time.strftime("%H:%M:%S")
        out.line(f"{clock}  {type_label(event):<24} {channel:<14} {user:<12} {_event_text(event)}".rstrip())

    client.add_tap(show)
    out.line(f"rtm-notebook demo: the seed's \"Hello\" bot on {where}, for {seconds:g} s (Ctrl-C stops early)")
    started = time.monotonic()
    interrupted = False
    try:
        client.start()
        try:
            await asyncio.wait_for(client.connect(), timeout=min(30.0, seconds + 10))
        except (TimeoutError, RTMConnectError) as exc:
            out.end_status()
            print(f"rtm-notebook demo: could not connect: {exc or 'no hello within 30 s'}", file=sys.stderr)
            return 1
        stats.bot_id = (client.self or {}).get("id")
        try:
            users, channels = await _names(client)
        except Exception as exc:  # names make the output readable; ids still work
            out.line(f"(could not load user and channel names: {exc}; showing ids)")
        deadline = started + seconds
        last_mark, last_count = time.monotonic(), 0
        rate_now = 0.0
        while (now := time.monotonic()) < deadline:
            await asyncio.sleep(min(1.0, deadline - now))
            now = time.monotonic()
            if now - last_mark >= 0.5:
                rate_now = (stats.received - last_count) / (now - last_mark)
                last_mark, last_count = now, stats.received
            out.status(_status_line(stats, channels, now - started, rate_now))
    except asyncio.CancelledError:
        # Ctrl-C: asyncio.run cancels this task; finish the summary instead.
        interrupted = True
        asyncio.current_task().uncancel()
    finally:
        elapsed = time.monotonic() - started
        await client.async_stop()
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


async def _names(client) -> tuple[dict[str, str], dict[str, str]]:
    """Channel and user names, one Web API pass, so lines and tables show #general not C123."""
    users: dict[str, str] = {}
    channels: dict[str, str] = {}
    web = client.web_client
    async for page in web.paginate("conversations.list", limit=200, types="public_channel,private_channel"):
        channels.update({c["id"]: c.get("name") or c["id"] for c in page.get("channels") or [] if c.get("id")})
    async for page in web.paginate("users.list", limit=200):
        users.update({u["id"]: u.get("name") or u["id"] for u in page.get("members") or [] if u.get("id")})
    client.user_names.update(users)
    client.channel_names.update(channels)
    return users, channels


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
        from rtm_notebook.sim import serve

        return serve(host=args.host, port=args.port, rate=args.rate, seed=args.seed)
    if args.command == "demo":
        return run_demo(
            seconds=args.seconds, rate=args.rate, seed=args.seed,
            token_env=args.token_env, record_to=args.record_to,
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
