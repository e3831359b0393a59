"""Shared fixtures of the reliability suite: a fresh simulated workspace per test.

Each test gets its own SimWorkspace, so the workspace's socket numbers are
exactly the client's connection numbers and a fault armed by one test can
never leak into the next.
"""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from rtm_notebook.sim import SimWorkspace


@pytest.fixture
def sim():
    with SimWorkspace(seed=7) as workspace:
        yield workspace


@pytest.fixture
def fast_backoff(monkeypatch):
    """Shrink the reconnect backoff so minutes of refusals fit in seconds.

    The client's policy (base doubling per failure, capped, with jitter) is
    unchanged; only its two scale constants are made smaller.
    """
    import rtm_notebook.client as client_module

    monkeypatch.setattr(client_module, "RECONNECT_BASE", 0.05)
    monkeypatch.setattr(client_module, "RECONNECT_MAX", 0.4)
    return client_module


@pytest.fixture
def token_env(sim, monkeypatch):
    """The name of an environment variable holding ``sim``'s bot token, for ``%rtm_connect --token-env``.

    Request it before ``shell`` so the variable outlives the shell's teardown.
    """
    monkeypatch.setenv("RTM_RELIABILITY_TOKEN", sim.token)
    return "RTM_RELIABILITY_TOKEN"


@pytest.fixture
def shell():
    """An IPython shell with the extension loaded; afterwards the magics' client
    is stopped and the names a test left in the namespace are forgotten."""
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "rtm_notebook")
    yield shell
    try:
        shell.run_line_magic("rtm_stop", "")
    except UsageError:
        pass  # no client was started
    shell.run_line_magic("unload_ext", "rtm_notebook")
    for name in [n for n in shell.user_ns if n.startswith(("rtm", "rel_"))]:
        del shell.user_ns[name]
