"""Fixtures of the reliability suite (``sim`` and ``shell`` are tests/conftest.py's).

Each test gets its own SimWorkspace, so the workspace's socket numbers are
exactly the client's connection numbers and a fault armed by one test can
never leak into the next.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def fast_backoff(monkeypatch):
    """Shrink the reconnect backoff so minutes of refusals fit in seconds.

    The client's policy (base doubling per failure, capped, with jitter) is
    unchanged; only its two scale constants are made smaller.
    """
    import rtm_notebook.reconnect as client_module

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

