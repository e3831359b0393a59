"""Shared fixtures of the reliability suite: a fresh simulated workspace per test.

Each test gets its own SimWorkspace, so the workspace's socket numbers are
exactly the client's connection numbers and a fault armed by one test can
never leak into the next.
"""

from __future__ import annotations

import pytest

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
