"""LiveLog: the live view of a client's events (``rtm.log``).

Cost model: the client calls :meth:`LiveLog.tap` on its loop for every
recorded event, and the tap only appends to a bounded ring buffer. A timer on
the client's loop renders the visible rows as ONE HTML string at most
``1 / interval`` times a second, and only when something changed, so the
cost of the log does not grow with the number of events received. (An
``Output`` widget appended per event gets slower with every line, which is
why it is not used here.)

Outside a kernel there are no widgets: the same buffer renders as text
(``log.text()``, ``print(log)``, ``%rtm_log``).

Every string that reaches the HTML is escaped: a message containing
``<script>`` shows as text. The widget never sees the token: it only reads
events, the state, the team and the counts.
"""

from __future__ import annotations

import collections
import contextlib
import html
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from rtm_notebook.fields import channel_of, summary, type_label, user_of
from rtm_notebook.handlers import handler_label
from rtm_notebook.loops import call_soon, in_kernel
from rtm_notebook.session import Session

ALL = "__all__"
# A handler inside one call for longer than this is named in the status bar:
# its calls/errors counters do not move while it is stuck.
STUCK_AFTER = 5.0
# A handler with more than LAG_QUEUED events waiting, and waiting for longer
# than LAG_AFTER seconds (since its queue was last empty), is lagging: named
# in the status bar with its backlog, and warned about once per episode.
LAG_QUEUED = 10
LAG_AFTER = 2.0

_ROW_CSS = (
    "<style>"
    ".rtm-log table{border-collapse:collapse;font-family:var(--jp-code-font-family,monospace);font-size:12px;width:100%}"
    ".rtm-log td{padding:1px 6px;vertical-align:top;text-align:left;white-space:nowrap}"
    ".rtm-log td.x{white-space:pre-wrap;word-break:break-word;width:100%}"
    ".rtm-log tr.err td{color:#c00}"
    ".rtm-log tr.out td{color:#555}"
    ".rtm-log tr.warn td{color:#a60}"
    ".rtm-log details pre{margin:2px 0;white-space:pre-wrap}"
    "</style>"
)


def _lagging(stats: list[dict]) -> list[tuple[str, int, float]]:
    """(name, queued, seconds behind) of each handler that is lagging (see LAG_QUEUED)."""
    return [(s["name"], s["queued"], s["behind_for"]) for s in stats
            if s.get("behind_for") is not None and s["queued"] > LAG_QUEUED and s["behind_for"] > LAG_AFTER]


def _names(items: Mapping[str, str] | Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """id → name from a mapping or from Slack objects (``users.list`` members, channels)."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    out: dict[str, str] = {}
    for item in items:
        if isinstance(item, Mapping) and item.get("id"):
            profile = item.get("profile") if isinstance(item.get("profile"), Mapping) else {}
            name = item.get("name") or profile.get("display_name") or profile.get("real_name") or item["id"]
            out[str(item["id"])] = str(name)
    return out


class LiveLog:
    """A live, filterable view of the newest events of an RTM client.

    ``LiveLog(client)`` registers itself as a tap on the client (its
    ``tap(event)`` is called on the client's loop for every recorded event);
    displaying it (``display(log)`` or just ``log`` as the last line of a
    cell) shows the widget in a kernel and text elsewhere.

    Parameters: ``maxlen`` rows kept in the ring buffer, ``visible`` rows
    rendered at most, ``interval`` seconds between renders at most,
    ``widgets`` forces widgets on or off (default: on in a kernel), ``loop``
    for a log without a client (the client's loop otherwise).
    """

    def __init__(
        self,
        client: Any = None,
        *,
        maxlen: int = 2000,
        visible: int = 100,
        interval: float = 0.2,
        widgets: bool | None = None,
        loop: Any = None,
    ) -> None:
        if maxlen < 1 or visible < 1 or interval <= 0:
            raise ValueError("LiveLog needs maxlen >= 1, visible >= 1 and interval > 0")
        self.client = client
        self._loop = loop
        self.maxlen = maxlen
        self.visible = visible
        self.interval = interval
        self._rows: collections.deque[tuple[float, Mapping[str, Any]]] = collections.deque(maxlen=maxlen)
        self._received = 0
        self._dirty = False
        self.renders = 0
        self.paused = False
        self.type_filter: str | None = None
        self.channel_filter: str | None = None
        self.search = ""
        # The client's own name lookups (filled from rtm.start or the Web API),
        # shared, so names learned once serve both the log and rtm.messages().
        users, channels = getattr(client, "user_names", None), getattr(client, "channel_names", None)
        self.users: dict[str, str] = users if isinstance(users, dict) else {}
        self.channels: dict[str, str] = channels if isinstance(channels, dict) else {}
        self._rate = 0.0
        self._rate_mark = (time.monotonic(), self._total())
        self._timer: Any = None
        self._ticking = False
        self._closed = False
        self._known_types: tuple[str, ...] = ()
        self._known_channels: tuple[str, ...] = ()
        self._names_known = 0
        self._lagging: set[str] = set()   # handlers warned about in this lag episode
        self.widget: Any = None
        if widgets if widgets is not None else in_kernel():
            self._build_widgets()
        if client is not None:
            client.add_tap(self.tap)
        self._start_timer()

    # -- intake: the client's loop, once per event, O(1) -------------------

    def tap(self, event: Mapping[str, Any]) -> None:
        """Take one event (called by the client on its loop): an append, nothing else."""
        self._rows.append((time.time(), event))
        self._received += 1
        self._dirty = True
        if not self._ticking:
            # A client that had no loop yet when the log was made has one now.
            self._start_timer()

    def add_output(self, handler: str, stream: str, text: str) -> None:
        """Show text a handler printed as a row of the log (on the loop thread)."""
        self.tap({"type": "output", "handler": handler, "stream": stream, "text": text.rstrip("\n")})

    # -- state changes (all on the loop thread) ----------------------------

    @property
    def loop(self) -> Any:
        return self._loop if self._loop is not None else getattr(self.client, "loop", None)

    def set_names(self, users: Any = None, channels: Any = None) -> None:
        """Give the log id → name lookups (mappings or Slack user/channel objects)."""
        self.users.update(_names(users))
        self.channels.update(_names(channels))
        self._dirty = True

    def set_filter(self, *, type: str | None = ALL, channel: str | None = ALL, search: str | None = None) -> None:
        """Show only one event type / one channel / rows whose text contains ``search``.

        ``None`` clears a filter; arguments left out keep theirs.
        """
        if type != ALL:
            self.type_filter = type or None
        if channel != ALL:
            self.channel_filter = channel or None
        if search is not None:
            self.search = search
        self._dirty = True
        self._sync_controls()

    def pause(self) -> None:
        """Freeze the view; events keep being buffered (and recorded by the client)."""
        self.paused = True
        self._sync_controls()

    def resume(self) -> None:
        """Unfreeze the view; the next render shows the newest rows."""
        self.paused = False
        self._dirty = True
        self._sync_controls()

    def toggle_pause(self) -> None:
        self.resume() if self.paused else self.pause()

    def clear(self) -> None:
        """Empty the view (not the client's recording: ``rtm.events`` keeps everything)."""
        self._rows.clear()
        self._dirty = True

    # -- rendering ---------------------------------------------------------

    def _start_timer(self) -> None:
        """Start the render timer on the loop (from any thread; idempotent)."""
        loop = self.loop
        if loop is None or self.widget is None or self._ticking:
            return
        self._ticking = True
        call_soon(loop, self._schedule)

    def _schedule(self) -> None:
        if not self._closed:
            self._timer = self.loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        try:
            self.flush()
        finally:
            self._schedule()

    def flush(self) -> None:
        """Render now if anything changed (the timer calls this; tests may too)."""
        if self.widget is None:
            return
        self._warn_lagging()
        status = self.status_html()
        if status != self._status.value:
            self._status.value = status
        if self._dirty and not self.paused:
            self._dirty = False
            self._rows_html.value = self.rows_html()
            self.renders += 1

    def _warn_lagging(self) -> None:
        """One warning row when a handler starts to lag; the episode ends once
        its queue has been empty again (on the loop thread, from the timer)."""
        handlers = getattr(self.client, "handlers", None)
        if handlers is None or not len(handlers):
            self._lagging.clear()
            return
        try:
            stats = handlers.stats()
        except Exception:  # a registry mid-change: next tick
            return
        behind = {s["name"] for s in stats if s.get("behind_for") is not None}
        self._lagging &= behind
        for name, queued, lag in _lagging(stats):
            if name not in self._lagging:
                self._lagging.add(name)
                self.tap({"type": "warning", "handler": name, "text": (
                    f"handler {name} is falling behind: {queued} queued, behind {lag:.0f} s "
                    "(events arrive faster than it handles them; %rtm_handlers shows its mean time)")})

    def _total(self) -> int:
        # The client's counts, when there is one: rows the log adds itself
        # (handler output) are not events received.
        counts = getattr(self.client, "counts", None)
        return sum(counts.values()) if counts is not None else self._received

    def _update_rate(self) -> None:
        total = self._total()
        now = time.monotonic()
        then, count = self._rate_mark
        if now - then >= 1.0:
            self._rate = (total - count) / (now - then)
            self._rate_mark = (now, total)

    def _visible_rows(self) -> list[tuple[float, Mapping[str, Any]]]:
        """Newest first, filtered, at most ``visible``; also refreshes the filter choices."""
        types: set[str] = set()
        channels: set[str] = set()
        out: list[tuple[float, Mapping[str, Any]]] = []
        needle = self.search.lower()
        for row in reversed(self._rows):
            event = row[1]
            etype = str(event.get("type", ""))
            channel = channel_of(event)
            types.add(etype)
            if channel:
                channels.add(channel)
            if len(out) >= self.visible:
                continue
            if self.type_filter and etype != self.type_filter:
                continue
            if self.channel_filter and channel != self.channel_filter:
                continue
            if needle and needle not in self._search_text(event):
                continue
            out.append(row)
        self._refresh_choices(types, channels)
        return out

    def _search_text(self, event: Mapping[str, Any]) -> str:
        user = user_of(event) or ""
        return f"{summary(event)} {self.users.get(user, user)} {event.get('handler', '')}".lower()

    def _row_cells(self, received: float, event: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
        etype = type_label(event)
        channel = channel_of(event) or ""
        if channel:
            channel = "#" + self.channels.get(channel, channel)
        user = user_of(event)
        user = self.users.get(user, user) if user else ""
        text = summary(event)
        if etype == "output":
            user = f"[{handler_label(str(event.get('handler', '')))}]"
        elif etype == "error" and event.get("handler"):
            # The message first, so a narrow view or a cut line still shows it.
            user = ""
            text = f"{text}  · {handler_label(str(event['handler']))}"
        clock = time.strftime("%H:%M:%S", time.localtime(received)) + f".{int(received * 1000) % 1000:03d}"
        return clock, etype, channel, user, text

    def rows_html(self) -> str:
        """The rows as one escaped HTML table, newest first."""
        esc = html.escape
        parts = [_ROW_CSS, '<div class="rtm-log"><table>']
        for received, event in self._visible_rows():
            clock, etype, channel, user, text = self._row_cells(received, event)
            if len(text) > 500:
                text = text[:500] + "…"
            if event.get("type") == "error" and event.get("traceback"):
                body = (
                    f"<details><summary>{esc(text)}</summary><pre>{esc(str(event['traceback']))}</pre></details>"
                )
                css = ' class="err"'
            else:
                body = esc(text)
                kind = event.get("type")
                css = ' class="err"' if kind == "error" else (
                    ' class="out"' if etype == "output" else (' class="warn"' if kind == "warning" else ""))
            parts.append(
                f"<tr{css}><td>{clock}</td><td>{esc(etype)}</td><td>{esc(channel)}</td>"
                f"<td>{esc(user)}</td><td class=\"x\">{body}</td></tr>"
            )
        parts.append("</table></div>")
        return "".join(parts)

    def status(self) -> dict[str, Any]:
        """What the status bar shows, as data."""
        self._update_rate()
        client = self.client
        counts = getattr(client, "counts", None) or {}
        team = getattr(client, "team", None)
        if isinstance(team, Mapping):
            team = team.get("name") or team.get("domain") or team.get("id")
        errors = 0
        stuck: list[tuple[str, float]] = []
        lagging: list[tuple[str, int, float]] = []
        handlers = getattr(client, "handlers", None)
        if handlers is not None:
            try:
                stats = handlers.stats()
                errors = sum(int(s.get("errors", 0)) for s in stats)
                stuck = [(s["name"], s["busy_for"]) for s in stats
                         if s.get("busy_for") is not None and s["busy_for"] > STUCK_AFTER]
                lagging = _lagging(stats)
            except Exception:  # a registry mid-change must not break the status bar
                errors, stuck, lagging = 0, [], []
        return {
            "state": getattr(client, "state", None) or ("no client" if client is None else "unknown"),
            "team": team or "",
            "connection": getattr(client, "connection_number", None),
            "events_per_second": self._rate,
            "counts": collections.Counter(counts).most_common(6),
            "handler_errors": errors,
            "stuck_handlers": stuck,
            "lagging_handlers": lagging,
            "buffered": len(self._rows),
            "paused": self.paused,
        }

    def status_text(self) -> str:
        s = self.status()
        parts = [f"state: {s['state']}"]
        if s["team"]:
            parts.append(f"team: {s['team']}")
        if s["connection"] is not None:
            parts.append(f"connection #{s['connection']}")
        parts.append(f"{s['events_per_second']:.1f} events/s")
        if s["counts"]:
            parts.append(", ".join(f"{k} {v}" for k, v in s["counts"]))
        parts.append(f"handler errors: {s['handler_errors']}")
        if s["stuck_handlers"]:
            parts.append("stuck: " + ", ".join(f"{name} (busy {busy:.0f} s)" for name, busy in s["stuck_handlers"]))
        if s["lagging_handlers"]:
            parts.append("lagging: " + "; ".join(f"{name}: {queued} queued, behind {lag:.0f} s"
                                                 for name, queued, lag in s["lagging_handlers"]))
        if s["paused"]:
            parts.append("PAUSED")
        return " · ".join(parts)

    def status_html(self) -> str:
        s = self.status()
        text = html.escape(self.status_text())
        if s["lagging_handlers"]:
            text = text.replace("lagging:", '<span style="color:#a60;font-weight:bold">lagging:</span>', 1)
        if s["handler_errors"]:
            text = text.replace("handler errors:", '<span style="color:#c00">handler errors:', 1) + "</span>"
        return f'<div style="font-family:var(--jp-code-font-family,monospace);font-size:12px">{text}</div>'

    def text(self, n: int = 20) -> str:
        """The status line and the newest ``n`` rows (filters applied) as plain text."""
        saved, self.visible = self.visible, n
        try:
            rows = self._visible_rows()
        finally:
            self.visible = saved
        lines = [self.status_text()]
        for received, event in rows:
            clock, etype, channel, user, text = self._row_cells(received, event)
            line = f"{clock}  {etype:<16} {channel:<14} {user:<12} {text}".rstrip()
            lines.append(line if len(line) <= 200 else line[:199] + "…")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<LiveLog {len(self._rows)} rows buffered; {self.status_text()}>"

    def __str__(self) -> str:
        return self.text()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self.widget is not None:
            display(self.widget)
        else:
            print(self.text())

    # -- widgets -----------------------------------------------------------

    def _build_widgets(self) -> None:
        import ipywidgets as w

        self._status = w.HTML(value="")
        self._type = w.Dropdown(options=[("all types", "")], value="", description="type", layout=w.Layout(width="210px"))
        self._channel = w.Dropdown(options=[("all channels", "")], value="", description="channel", layout=w.Layout(width="230px"))
        self._search = w.Text(value="", placeholder="search text", layout=w.Layout(width="200px"))
        self._pause = w.Button(description="pause", icon="pause", layout=w.Layout(width="100px"))
        self._clear = w.Button(description="clear view", icon="trash", layout=w.Layout(width="110px"))
        self._rows_html = w.HTML(value="", layout=w.Layout(max_height="420px", overflow="auto"))
        # Under ipykernel 7 these callbacks run on a subshell thread: hand every
        # one to the client's loop, which owns this log's state.
        self._type.observe(lambda change: self._from_widget(self.set_filter, type=change["new"]), names="value")
        self._channel.observe(lambda change: self._from_widget(self.set_filter, channel=change["new"]), names="value")
        self._search.observe(lambda change: self._from_widget(self.set_filter, search=change["new"]), names="value")
        self._pause.on_click(lambda _button: self._from_widget(self.toggle_pause))
        self._clear.on_click(lambda _button: self._from_widget(self.clear))
        self._syncing_thread: int | None = None
        controls = w.HBox([self._type, self._channel, self._search, self._pause, self._clear])
        self.widget = w.VBox([self._status, controls, self._rows_html])
        self.widget.add_class("rtm-live-log")

    def _from_widget(self, fn: Any, **kwargs: Any) -> None:
        # Changes this log makes to its own controls (on the loop thread)
        # echo back through the observers; a person's change arrives on
        # another thread (or later) and always goes through.
        if self._syncing_thread == threading.get_ident():
            return
        call_soon(self.loop, lambda: fn(**kwargs))

    @contextlib.contextmanager
    def _syncing(self) -> Iterator[None]:
        outer, self._syncing_thread = self._syncing_thread, threading.get_ident()
        try:
            yield
        finally:
            self._syncing_thread = outer

    def _sync_controls(self) -> None:
        """Make the controls show the current filters (when set from code)."""
        if self.widget is None:
            return
        with self._syncing():
            self._pause.description = "resume" if self.paused else "pause"
            self._pause.icon = "play" if self.paused else "pause"
            if self._search.value != self.search:
                self._search.value = self.search
            if self._type.value != (self.type_filter or ""):
                self._set_options(self._type, list(self._type.options), self.type_filter or "")
            if self._channel.value != (self.channel_filter or ""):
                self._set_options(self._channel, list(self._channel.options), self.channel_filter or "")

    def _refresh_choices(self, types: set[str], channels: set[str]) -> None:
        if self.widget is None:
            return
        new_types = tuple(sorted(types | set(self._known_types)))
        if new_types != self._known_types:
            self._known_types = new_types
            options = [("all types", "")] + [(t, t) for t in new_types]
            self._set_options(self._type, options, self.type_filter or "")
        new_channels = tuple(sorted(channels | set(self._known_channels)))
        # The client learns channel names after connecting: relabel then too.
        names = len(self.channels)
        if new_channels != self._known_channels or names != self._names_known:
            self._known_channels, self._names_known = new_channels, names
            options = [("all channels", "")] + [("#" + self.channels.get(c, c), c) for c in new_channels]
            self._set_options(self._channel, options, self.channel_filter or "")

    def _set_options(self, dropdown: Any, options: list[tuple[str, str]], value: str) -> None:
        """Replace a dropdown's choices keeping the filter's value selected.

        One combined sync message (``hold_sync``): ipywidgets resets the
        selection to the first option when options change, and sending that
        intermediate state would show the wrong selection in the browser.
        """
        if value not in [v for _, v in options]:
            options.append((value, value))
        with self._syncing(), dropdown.hold_sync():
            dropdown.options = options
            if dropdown.value != value:
                dropdown.value = value

    def close(self) -> None:
        """Render the final state, stop the timer and detach from the client (on the loop thread).

        The widget stays on screen, showing how things ended.
        """
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.client is not None:
            self.client.remove_tap(self.tap)
        self._dirty = True
        self.flush()


# display(client) and client.log show a LiveLog once this module is loaded;
# the core imports nothing of the notebook layer.
Session.view_factory = LiveLog
