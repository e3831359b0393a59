"""A simulated Slack workspace: Web API, RTM and Socket Mode over real loopback sockets.

``with SimWorkspace(seed=1, rate=20) as sim:`` serves a seeded workspace on
127.0.0.1 (its own thread and event loop); point any Slack client at
``sim.base_url`` with ``sim.token`` (and, for Socket Mode, ``sim.app_token``).
``rtm-notebook sim`` runs one in the foreground.
"""

from rtm_notebook.sim.server import MALFORMED_KINDS, SimWorkspace, serve

__all__ = ["MALFORMED_KINDS", "SimWorkspace", "serve"]
