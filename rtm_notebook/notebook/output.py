"""Route what a handler prints to the cell that registered it.

A handler runs long after its cell finished, while some other cell may be
running; ``print`` would land in that other cell. So ``sys.stdout`` and
``sys.stderr`` are wrapped once by :class:`RoutedStream`, which looks up a
context variable: inside a handler call (the handler's ``call_context``) it
holds that handler's :class:`HandlerSink`, everywhere else it is unset and the
text goes to the wrapped stream untouched. A context variable, not a thread
check, because async handlers share the loop thread with the cells, while
each handler's worker task (or thread) has its own context.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from rtm_notebook.loops import call_soon

_current_sink: contextvars.ContextVar[HandlerSink | None] = contextvars.ContextVar("rtm_handler_sink", default=None)

# Text kept per handler output area: enough to read, bounded so a chatty
# handler does not grow the notebook (and every widget sync) without limit.
MAX_OUTPUT_CHARS = 20_000


class RoutedStream:
    """A stand-in for ``sys.stdout``/``sys.stderr`` that diverts handler output."""

    def __init__(self, name: str, target: TextIO) -> None:
        self.stream_name = name
        self.target = target

    def write(self, text: str) -> int:
        sink = _current_sink.get()
        if sink is None:
            return self.target.write(text)
        sink.write(self.stream_name, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _current_sink.get() is None:
            self.target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


_install_lock = threading.Lock()


def install_routing() -> None:
    """Wrap ``sys.stdout``/``sys.stderr`` unless they already are (idempotent).

    Called when the extension loads and again for every handler registered,
    so that a stream replaced in between (a test harness, ``%%capture``) is
    wrapped too.
    """
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, RoutedStream):
                setattr(sys, name, RoutedStream(name, stream))


def uninstall_routing() -> None:
    """Restore the streams that :func:`install_routing` wrapped."""
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            while isinstance(stream, RoutedStream):
                stream = stream.target
            setattr(sys, name, stream)


class HandlerSink:
    """The output area of one handler.

    In a kernel it is an ``ipywidgets.Output`` displayed under the registering
    cell; elsewhere it is the terminal. Writes come from any thread (sync
    handlers run on worker threads); they are buffered and applied on the
    client's loop at most every ``interval`` seconds, so a handler printing on
    every event costs one widget update per interval, not one per line.
    ``on_text(handler, stream, text)`` (the live log) gets the same text.
    """

    def __init__(
        self,
        name: str,
        loop: Any,
        *,
        widget: bool,
        on_text: Callable[[str, str, str], None] | None = None,
        interval: float = 0.2,
    ) -> None:
        self.name = name
        self.loop = loop
        self.interval = interval
        self.on_text = on_text
        self.output: Any = None
        if widget:
            import ipywidgets

            # Scrolls instead of pushing the rest of the notebook down.
            self.output = ipywidgets.Output(layout=ipywidgets.Layout(max_height="300px", overflow="auto"))
        self._pending: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self._scheduled = False
        self._timer: Any = None
        self._closed = False

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Context manager the handler registry enters around each call."""
        token = _current_sink.set(self)
        try:
            yield
        finally:
            _current_sink.reset(token)

    def write(self, stream: str, text: str, *, to_log: bool = True) -> None:
        """Queue ``text`` for the ``stream`` ("stdout"/"stderr") area; any thread.

        ``to_log=False`` keeps it out of the live log (which shows errors as
        their own rows already).
        """
        if not text or self._closed:
            return
        if self.output is None and self.on_text is None:
            self._terminal(stream).write(text)
            return
        with self._lock:
            self._pending.append((stream, text, to_log))
            if self._scheduled:
                return
            self._scheduled = True
        call_soon(self.loop, self._schedule)

    def _terminal(self, stream: str) -> TextIO:
        target = sys.stderr if stream == "stderr" else sys.stdout
        return target.target if isinstance(target, RoutedStream) else target

    def _schedule(self) -> None:
        if self._closed:
            return
        self._timer = self.loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Apply the queued text now (on the loop thread)."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._scheduled = False
        self._timer = None
        if not pending:
            return
        merged: list[list[Any]] = []
        for stream, text, to_log in pending:
            if merged and merged[-1][0] == stream and merged[-1][2] == to_log:
                merged[-1][1] += text
            else:
                merged.append([stream, text, to_log])
        for stream, text, to_log in merged:
            if to_log and self.on_text is not None:
                self.on_text(self.name, stream, text)
            if self.output is not None:
                self._append_output(stream, text)
            else:
                self._terminal(stream).write(text)

    def _append_output(self, stream: str, text: str) -> None:
        outputs = list(self.output.outputs)
        if outputs and outputs[-1].get("output_type") == "stream" and outputs[-1].get("name") == stream:
            text = outputs[-1]["text"] + text
            outputs.pop()
        if len(text) > MAX_OUTPUT_CHARS:
            # Cut at a line start so the oldest line shown is a whole one.
            text = text[-MAX_OUTPUT_CHARS:]
            text = text[text.find("\n") + 1:] if "\n" in text[:-1] else text
        outputs.append({"output_type": "stream", "name": stream, "text": text})
        # Keep the total bounded: drop the oldest blocks first.
        while len(outputs) > 1 and sum(len(o.get("text", "")) for o in outputs) > MAX_OUTPUT_CHARS:
            outputs.pop(0)
        self.output.outputs = tuple(outputs)

    def error(self, event: dict) -> None:
        """Show a handler ``error`` event (on the loop thread)."""
        where = event.get("event_type") or ""
        head = f"Handler {self.name!r} failed" + (f" on a {where} event" if where else "") + f": {event.get('error', '')}\n"
        tb = event.get("traceback") or ""
        self.write("stderr", head + (tb if tb.endswith("\n") or not tb else tb + "\n"), to_log=False)

    def close(self) -> None:
        """Flush what is queued and stop accepting output (on the loop thread)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        self._closed = True
