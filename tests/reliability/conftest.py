"""Shared fixtures of the reliability suite: a fresh simulated workspace per test.

Each test gets its own SimWorkspace, so the workspace's socket numbers are
exactly the client's connection numbers and a fault armed by one test can
never leak into the next.
"""

from __future__ import annotations

import os
import sys

import pytest

# The suite's helpers live beside this file; pytest puts this directory on
# sys.path only for test modules, not when a helper is imported first.
sys.path.insert(0, os.path.dirname(__file__))

from rtm_notebook.sim import SimWorkspace  # noqa: E402


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
