"""Footprint of the embedded platform: how long ``selfserve up`` takes, and how much memory it holds idle.

Each round runs, on free ports and a fresh SELFSERVE_HOME:
- ``selfserve up --no-demo`` on the empty home (cold: migrations, first admin, login), then
  ``down`` and ``up`` again (warm), timing each command until it returns with every service healthy;
- the resident memory (RSS, process and children) of each service, and the CPU the stack uses, while idle;
- the baseline, in the same round and measured the same way: a bare FastAPI app under uvicorn and a
  one-line Streamlit script, started together as detached processes.

Reports the median over the rounds as markdown tables.

    uv run python bench/bench_footprint.py [--rounds 3] [--idle 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import psutil
from _common import REPO, free_port, python

MIB = 2**20

BARE_API = textwrap.dedent(
    """
    import sys
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")
    """
)
BARE_CONSOLE = 'import streamlit as st\n\nst.title("hello")\n'


def tree_rss(pid: int) -> int:
    p = psutil.Process(pid)
    return p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by the processes and their children."""
    total = 0.0
    for pid in pids:
        p = psutil.Process(pid)
        for q in (p, *p.children(recursive=True)):
            t = q.cpu_times()
            total += t.user + t.system
    return total


def idle(pids: list[int], seconds: float) -> float:
    """Let the processes idle; returns the CPU they used meanwhile, in percent of one core."""
    before = tree_cpu(pids)
    time.sleep(seconds)
    return 100 * (tree_cpu(pids) - before) / seconds


def selfserve(env: dict[str, str], *args: str) -> float:
    """Run a ``selfserve`` command; returns its wall time in seconds."""
    t0 = time.perf_counter()
    r = subprocess.run([python(), "-m", "selfserve.cli", *args], env=env, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"selfserve {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return elapsed


def platform_round(tmp: Path, idle_s: float) -> dict[str, float]:
    home = tmp / "home"
    env = {
        **os.environ,
        "SELFSERVE_HOME": str(home),
        "SELFSERVE_CONFIG_DIR": str(tmp / "config"),
        "SELFSERVE_SERVER__API_PORT": str(free_port()),
        "SELFSERVE_SERVER__CONSOLE_PORT": str(free_port()),
    }
    out: dict[str, float] = {}
    try:
        for phase in ("cold", "warm"):
            out[f"{phase}_up_s"] = selfserve(env, "up", "--no-demo")
            state = json.loads((home / "run" / "state.json").read_text())
            out[f"{phase}_healthy_s"] = max(s["ready_seconds"] for s in state["services"])
            if phase == "cold":
                out["idle_cpu_pct"] = idle([s["pid"] for s in state["services"]], idle_s)
                for s in state["services"]:
                    out[f"{s['name']}_mib"] = tree_rss(s["pid"]) / MIB
            out[f"{phase}_down_s"] = selfserve(env, "down")
    finally:
        selfserve(env, "down")
    return out


def baseline_round(tmp: Path, idle_s: float) -> dict[str, float]:
    (tmp / "bare_api.py").write_text(BARE_API)
    (tmp / "bare_console.py").write_text(BARE_CONSOLE)
    api_port, console_port = free_port(), free_port()
    argvs = {
        "api": ([python(), str(tmp / "bare_api.py"), str(api_port)], f"http://127.0.0.1:{api_port}/health"),
        "console": (
            [
                python(), "-m", "streamlit", "run", str(tmp / "bare_console.py"),
                "--server.headless", "true", "--server.address", "127.0.0.1",
                "--server.port", str(console_port), "--browser.gatherUsageStats", "false",
            ],
            f"http://127.0.0.1:{console_port}/_stcore/health",
        ),
    }  # fmt: skip
    procs: dict[str, subprocess.Popen[bytes]] = {}
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        for name, (argv, _) in argvs.items():
            procs[name] = subprocess.Popen(
                argv, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
        pending = {name: url for name, (_, url) in argvs.items()}
        with httpx.Client(timeout=2, trust_env=False) as http:
            while pending:
                for name, url in list(pending.items()):
                    try:
                        if http.get(url).status_code == 200:
                            del pending[name]
                    except httpx.HTTPError:
                        pass
                if time.perf_counter() - t0 > 60:
                    raise TimeoutError(f"baseline {sorted(pending)} not healthy within 60 s")
                time.sleep(0.05)
        out["cold_healthy_s"] = time.perf_counter() - t0
        out["idle_cpu_pct"] = idle([p.pid for p in procs.values()], idle_s)
        for name, proc in procs.items():
            out[f"{name}_mib"] = tree_rss(proc.pid) / MIB
    finally:
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=float, default=5.0, help="Seconds to let the services idle before measuring RSS.")
    args = ap.parse_args()

    platform: list[dict[str, float]] = []
    baseline: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="selfserve-bench-") as tmp:
        for i in range(args.rounds):
            round_dir = Path(tmp) / f"round-{i}"
            (round_dir / "baseline").mkdir(parents=True)
            baseline.append(baseline_round(round_dir / "baseline", args.idle))
            platform.append(platform_round(round_dir / "platform", args.idle))

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    for rows in (platform, baseline):
        for r in rows:
            r["total_mib"] = r["api_mib"] + r["console_mib"]

    print(f"{args.rounds} rounds (median), {os.cpu_count()} CPUs; RSS after {args.idle:g} s idle\n")
    print("| start | selfserve up | baseline |")
    print("|---|---|---|")
    print(f"| cold: `selfserve up --no-demo` returns (s) | {med(platform, 'cold_up_s'):.1f} | - |")
    print(
        f"| cold: services healthy after start (s) | {med(platform, 'cold_healthy_s'):.1f} "
        f"| {med(baseline, 'cold_healthy_s'):.1f} |"
    )
    print(f"| warm: `selfserve up --no-demo` returns (s) | {med(platform, 'warm_up_s'):.1f} | - |")
    print(f"| warm: services healthy after start (s) | {med(platform, 'warm_healthy_s'):.1f} | - |")
    print(f"| `selfserve down` returns (s) | {med(platform, 'cold_down_s'):.1f} | - |")
    print()
    print("| idle RSS (MiB) | selfserve up | baseline | ratio |")
    print("|---|---|---|---|")
    for name in ("api", "console", "total"):
        p, b = med(platform, f"{name}_mib"), med(baseline, f"{name}_mib")
        print(f"| {name} | {p:.0f} | {b:.0f} | {p / b:.2f}x |")
    print(
        f"| idle CPU (% of one core) | {med(platform, 'idle_cpu_pct'):.1f} | {med(baseline, 'idle_cpu_pct'):.1f} | - |"
    )
    print("\nbaseline: a bare FastAPI app under uvicorn and a one-line Streamlit script, started the same way")


if __name__ == "__main__":
    main()
