"""rtm_notebook: Slack's Real Time Messaging API, at home in Jupyter.

``from rtm_notebook import RTMClient`` gives the seed-compatible client that
runs on the kernel's own event loop; ``%load_ext rtm_notebook`` loads the
magics; ``rtm_notebook.sim.SimWorkspace`` is the simulated workspace that
everything runs on when no token is set.

Names are imported lazily so that ``import rtm_notebook`` (and the CLI)
stays cheap: pandas and ipywidgets load only when first used.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

__version__ = "0.1.0"

# Library convention: the application decides where log records go. Without
# this, Python's last-resort handler prints the package's warnings to stderr,
# which in a notebook lands in whichever cell happens to be running.
logging.getLogger("rtm_notebook").addHandler(logging.NullHandler())

_EXPORTS = {
    "RTMClient": "rtm_notebook.seed",
    "RTMSession": "rtm_notebook.rtm.client",
    "SocketModeClient": "rtm_notebook.socketmode.client",
    "AsyncWebClient": "rtm_notebook.web",
    "WebClient": "rtm_notebook.web",
    "SlackResponse": "rtm_notebook.web",
    "EventFrame": "rtm_notebook.events",
    "SimWorkspace": "rtm_notebook.sim",
    "replay": "rtm_notebook.playback",
    "ReplaySession": "rtm_notebook.playback",
    "RTMError": "rtm_notebook.errors",
    "SlackApiError": "rtm_notebook.errors",
    "SlackClientError": "rtm_notebook.errors",
    "RTMConnectError": "rtm_notebook.errors",
    "ReplyError": "rtm_notebook.errors",
    "SlackClientNotConnectedError": "rtm_notebook.errors",
    "DeliveryError": "rtm_notebook.errors",
    "MessageTooLargeError": "rtm_notebook.errors",
}

_CLIENTS = frozenset(("RTMClient", "RTMSession", "SocketModeClient", "replay", "ReplaySession"))

__all__ = sorted(_EXPORTS) + ["load_ipython_extension", "unload_ipython_extension"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rtm_notebook' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    if name in _CLIENTS and "IPython" in sys.modules:
        # In a notebook, display(client) shows the live log: load the layer
        # that provides it (the core imports nothing of the notebook layer).
        importlib.import_module("rtm_notebook.notebook.livelog")
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext rtm_notebook``: register the ``%rtm_*`` magics."""
    from rtm_notebook.notebook.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext rtm_notebook``: stop clients and remove their handlers."""
    from rtm_notebook.notebook.magics import unload_ipython_extension as unload

    unload(ipython)
