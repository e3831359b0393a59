"""The ``rtm-notebook`` command: ``demo`` and ``sim``."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtm-notebook",
        description="Slack RTM in Jupyter: run the demo or serve the simulated workspace.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the seed 'Hello' bot against the simulated workspace and stream events")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to run (default 20; Ctrl-C stops early)")
    demo.add_argument("--rate", type=float, default=20.0, help="simulated traffic, events per second (default 20)")
    demo.add_argument("--seed", type=int, default=1, help="seed of the simulated workspace (default 1)")
    demo.add_argument("--token-env", metavar="VAR", help="use a real workspace: read the bot token from this environment variable")
    demo.add_argument("--record-to", metavar="PATH", default="rtm-demo-events.jsonl", help="where to write the recorded events (JSON lines)")

    sim = sub.add_parser("sim", help="serve the simulated Slack workspace in the foreground")
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    sim.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    sim.add_argument("--rate", type=float, default=1.0, help="simulated traffic, events per second (default 1)")
    sim.add_argument("--seed", type=int, default=1, help="seed: the same seed gives the same workspace and traffic")
    return parser


def run_demo(*, seconds: float, rate: float, seed: int, token_env: str | None, record_to: str) -> int:
    """Run the seed's "Hello" bot, stream events with a live summary, print a table."""
    raise NotImplementedError("the demo is being built (issue 5)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sim":
        from rtm_notebook.sim import serve

        return serve(host=args.host, port=args.port, rate=args.rate, seed=args.seed)
    if args.command == "demo":
        return run_demo(
            seconds=args.seconds, rate=args.rate, seed=args.seed,
            token_env=args.token_env, record_to=args.record_to,
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
