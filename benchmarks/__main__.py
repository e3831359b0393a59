"""Run every benchmark in turn: ``.venv/bin/python -m benchmarks`` (what ``make bench`` does).

Each module runs in its own interpreter, as ``python -m benchmarks.<name>``
with its default settings, so one benchmark's processes, threads and memory
cannot skew the next one's figures. The exit status is non-zero if any of
them failed. ``python -m benchmarks bench_socketmode --quick`` runs one
module, passing it the arguments after its name.
"""

from __future__ import annotations

import subprocess
import sys
import time

MODULES = ("bench_sim", "bench_events", "bench_kernel", "bench_client", "bench_socketmode", "bench_scale")


def main(argv: list[str]) -> int:
    if argv and argv[0] in MODULES:  # one module, with its own arguments
        return subprocess.run([sys.executable, "-m", f"benchmarks.{argv[0]}", *argv[1:]]).returncode
    if argv:
        print(f"usage: python -m benchmarks [MODULE [ARGS...]], MODULE one of {', '.join(MODULES)}", file=sys.stderr)
        return 2
    failed = []
    for name in MODULES:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        started = time.monotonic()
        status = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"]).returncode
        print(f"=== benchmarks.{name}: {'ok' if status == 0 else f'FAILED (exit {status})'}, "
              f"{time.monotonic() - started:.0f} s ===", flush=True)
        if status != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
