"""slackclient 2.x's ``RTMClient`` surface, as a layer over :class:`~rtm_notebook.rtm.client.RTMSession`.

::

    @RTMClient.run_on(event="message")
    def say_hello(**payload):
        data, web_client = payload["data"], payload["web_client"]
        ...
    RTMClient(token=token).start()

What slackclient users rely on behaves as there: the class-level registry
(``run_on`` and ``RTMClient.on`` register for every client), ``**payload``
callbacks with ``rtm_client``, ``web_client`` and ``data`` (an ``error``
callback's ``data`` is the exception), the constructor options, ``start()``
on the caller's current loop, ``auto_reconnect=False`` raising out of
``start()``, and slackclient's exception names. The deliberate differences
(handler exceptions isolated, sends waiting for ``hello``, instance-level
``on`` registering for that client only) and why are in docs/architecture.md.
"""

from __future__ import annotations

import inspect
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Any, ClassVar

from rtm_notebook.errors import SlackClientError
from rtm_notebook.handlers import event_types
from rtm_notebook.loops import call_soon
from rtm_notebook.rtm.client import RTMSession

__all__ = ["RTMClient"]


def _validate_seed_callback(callback: Any) -> None:
    """slackclient's checks, with its messages: callable, and accepts **kwargs."""
    cb_name = callback.__name__ if hasattr(callback, "__name__") else callback
    if not callable(callback):
        raise SlackClientError(f"The specified callback '{cb_name}' is not callable.")
    params = inspect.signature(callback).parameters.values()
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        raise SlackClientError(f"The callback '{cb_name}' must accept keyword arguments (**kwargs).")


def _seed_name(event: str, callback: Callable) -> str:
    qual = getattr(callback, "__qualname__", None) or getattr(callback, "__name__", None) or repr(callback)
    return f"seed:{event}:{getattr(callback, '__module__', '')}.{qual}"


class _On:
    """``on``: seed registration on the class, both forms on an instance.

    * ``RTMClient.on(event="message", callback=fn)`` registers a seed
      callback for every client (as slackclient did).
    * ``@rtm.on("message", name=None, match=None, channel=None, subtype=None)``
      registers a modern handler ``fn(client, event)`` on this client only;
      ``rtm.on(event=..., callback=fn)`` a seed-style callback on this client only.
    """

    def __get__(self, obj: RTMClient | None, owner: type[RTMClient]) -> Callable:
        return owner._class_on if obj is None else obj._instance_on


class RTMClient(RTMSession):
    """slackclient 2.x's RTM client, on the running event loop.

    Constructor options are slackclient's: ``token`` (default:
    ``$SLACK_BOT_TOKEN``), ``run_async``, ``auto_reconnect``, ``ssl``,
    ``proxy``, ``timeout``, ``base_url``, ``connect_method``,
    ``ping_interval``, ``loop`` and ``headers``; plus ``record_to``,
    ``max_rows`` and ``record`` for the EventFrame.
    """

    _callbacks: ClassVar[defaultdict[str, list[Callable]]] = defaultdict(list)
    _live: ClassVar[weakref.WeakSet[RTMClient]] = weakref.WeakSet()

    on = _On()

    def __init__(self, token: str | None = None, **options: Any) -> None:
        super().__init__(token, **options)
        self.handlers.seed_kwargs = self._seed_kwargs
        for event, callbacks in RTMClient._callbacks.items():
            for cb in callbacks:
                self._adopt_seed(event, cb)
        RTMClient._live.add(self)

    @staticmethod
    def run_on(*, event: str | list[str]) -> Callable[[Callable], Callable]:
        """Seed decorator: register ``callback(**payload)`` for ``event`` on every client."""

        def decorator(callback: Callable) -> Callable:
            RTMClient.on(event=event, callback=callback)
            return callback

        return decorator

    @classmethod
    def _class_on(cls, *, event: str | list[str], callback: Callable | list[Callable]) -> None:
        """Seed ``RTMClient.on(event=, callback=)``: link callback(s) to event(s) for every client.

        Raises SlackClientError when a callback is not callable or does not
        accept keyword arguments (``**kwargs``).
        """
        callbacks = callback if isinstance(callback, list) else [callback]
        for cb in callbacks:
            _validate_seed_callback(cb)
        for ev in event_types(event):
            known = cls._callbacks[ev]
            for cb in callbacks:
                # A notebook cell run again defines a new function of the same
                # name: it replaces the old one instead of running beside it.
                name = _seed_name(ev, cb)
                known[:] = [k for k in known if _seed_name(ev, k) != name]
                known.append(cb)
                for client in list(cls._live):
                    call_soon(client.loop, client._adopt_seed, ev, cb)

    def _instance_on(self, event: str | list[str] = "*", callback: Callable | list[Callable] | None = None,
                     **modern: Any) -> Any:
        """``rtm.on(event=..., callback=fn)``: a seed callback on this client
        only; without ``callback``, :meth:`Session.on`'s decorator."""
        if callback is None:
            return RTMSession.on(self, event, **modern)
        callbacks = callback if isinstance(callback, list) else [callback]
        for cb in callbacks:
            _validate_seed_callback(cb)
        filters = {k: modern.get(k) for k in ("match", "channel", "subtype")}
        for ev in event_types(event):
            for cb in callbacks:
                self.handlers.add(ev, cb, name=modern.get("name") or _seed_name(ev, cb), style="seed",
                                  filters=filters, call_context=modern.get("call_context"))
        return callback

    def _adopt_seed(self, event: str, callback: Callable) -> None:
        self.handlers.add(event, callback, name=_seed_name(event, callback), style="seed")

    def _seed_kwargs(self, is_async: bool) -> dict:
        return {"rtm_client": self, "web_client": self._web(is_async)}
