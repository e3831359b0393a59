"""Fixtures shared by the whole suite.

``sim`` is a fresh simulated workspace per test (starting one takes a few
milliseconds), so faults, counters and socket numbers never leak between
tests; a module picks its traffic seed with ``SIM_SEED = N``.
"""

from __future__ import annotations

import os

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from rtm_notebook import RTMClient
from rtm_notebook.sim import SimWorkspace


@pytest.fixture
def sim(request):
    with SimWorkspace(seed=getattr(request.module, "SIM_SEED", 7)) as workspace:
        yield workspace


@pytest.fixture(autouse=True)
def seed_registry():
    """Seed callbacks are global to the class (as in slackclient): isolate each test."""
    RTMClient._callbacks.clear()
    yield
    RTMClient._callbacks.clear()


@pytest.fixture
def shell():
    """An IPython shell with the extension loaded; afterwards its clients are
    stopped and the names a test left in the namespace are forgotten."""
    for var in ("SLACK_BOT_TOKEN", "SLACK_API_TOKEN", "SLACK_APP_TOKEN"):
        assert var not in os.environ, f"unset {var} to run these tests (they use the simulated workspace)"
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "rtm_notebook")
    yield shell
    try:
        shell.run_line_magic("rtm_stop", "")
    except UsageError:
        pass  # no client was started
    shell.run_line_magic("unload_ext", "rtm_notebook")
    for name in [n for n in shell.user_ns if n.startswith(("rtm", "bot", "_test_", "rel_"))]:
        del shell.user_ns[name]
