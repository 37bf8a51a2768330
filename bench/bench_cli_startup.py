"""Cold start of ``selfserve --help`` vs ``python -c pass``, each a new process, in the same run.

The baseline is the interpreter's own start-up on this machine, so the difference is what the CLI
adds: Typer, the command modules and the help rendering. A third row renders the same help without
Rich (``TYPER_USE_RICH=0``), to show how much of the time is Rich's. Runs alternate between the
commands so that machine noise hits all alike; one unmeasured run of each comes first. Exits 1 when
the median of ``selfserve --help`` is over the target.

    uv run python bench/bench_cli_startup.py [--runs 5] [--target 0.5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, python


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs of each command")
    parser.add_argument("--target", type=float, default=0.5, help="seconds the median of `selfserve --help` must beat")
    args = parser.parse_args()

    exe = Path(python()).parent / "selfserve"
    if not exe.exists():
        sys.exit(f"{exe} not found: run `uv sync` first")
    env = {k: v for k, v in os.environ.items() if k != "TYPER_USE_RICH"}
    commands = {
        "python -c pass": ([python(), "-c", "pass"], env),
        "selfserve --help": ([str(exe), "--help"], env),
        "TYPER_USE_RICH=0 selfserve --help": ([str(exe), "--help"], {**env, "TYPER_USE_RICH": "0"}),
    }

    for argv, cmd_env in commands.values():
        timed(argv, cmd_env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, (argv, cmd_env) in commands.items():
            times[name].append(timed(argv, cmd_env))

    median = {name: statistics.median(t) for name, t in times.items()}
    base, cli = median["python -c pass"], median["selfserve --help"]
    print(f"CLI start-up, median of {args.runs} runs (Python {sys.version.split()[0]}, {sys.platform})\n")
    print("| command | median (s) | min (s) | max (s) |")
    print("|---|---:|---:|---:|")
    for name, t in times.items():
        print(f"| `{name}` | {median[name]:.3f} | {min(t):.3f} | {max(t):.3f} |")
    ok = cli < args.target
    print(f"\nratio selfserve --help / python -c pass: {cli / base:.1f}x; added by the CLI: {cli - base:.3f} s")
    print(f"target: < {args.target} s -> {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
