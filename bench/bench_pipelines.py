"""Pipelines: on-demand submit-to-running and 40 chained tasks, through the platform vs bare Prefect.

A fresh embedded platform is started with the CLI (``selfserve up --no-demo`` in a temporary home,
on free ports), as a user would; it runs the Prefect server, the platform's worker, the API and the
console. The baseline runs in the same run on the same Prefect server: a plain
``prefect worker start --pool bare --type process`` serving deployments of the same flow file made
with Prefect's own ``flow.from_source(...).deploy(...)``, both workers polling every second
(``PREFECT_WORKER_QUERY_SECONDS=1``) with 5 s of prefetch, as the platform's worker does.

a. Submit-to-running of an empty ``async`` flow: ``client.flows.run`` (then ``client.runs.get``
   polled every 0.25 s) vs ``prefect.deployments.run_deployment(name, timeout=0)``, rounds
   alternating, each run awaited to its end before the next. The latency is Prefect's
   ``start_time`` of the run (set when the engine enters RUNNING) minus the wall-clock time taken
   just before the submit call. Each run's time is split with Prefect's state history
   (``GET /flow_run_states/?flow_run_id=``), its logs, the launcher's start record in the platform's
   metadata DB, and the start times of the run's processes, sampled from ``/proc``
   (:class:`ProcessWatch`): the worker's poll (SCHEDULED -> PENDING), the worker starting the
   launcher, the launcher's imports and ``start`` call to the API, unpacking the code, the engine's
   start (a fresh Python importing Prefect), and loading the flow until RUNNING. The bare worker's
   runs are split the same way (Prefect 3.8 starts a workspace supervisor that ``exec``s the engine).
b. 40 chained trivial ``@task`` calls in a sync flow (each takes the previous output): the flow's
   own duration (Prefect's ``start_time`` to ``end_time``, start-up excluded) through the platform
   and through the bare worker, vs 40 plain Python calls.

The platform's runs are limited as any project's are: pinned to one core (the default ``cpu``
quota), their Prefect calls going through the API's runner proxy with the run's token.

    uv run python bench/bench_pipelines.py [--runs 10] [--chain-runs 3] [--tasks 40]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import REPO, free_port, python

SUBMIT_GOAL = 3.0  # seconds from submit to running, through the platform
CHAIN_GOAL = 5.0  # seconds for 40 chained tasks, through the platform
PROJECT = "bench"
POOL = "bare"
PREFETCH_SECONDS = "5"  # the platform's worker's prefetch (selfserve.runtime._services)
# Seconds between state polls: the latency comes from Prefect's start_time, so polling only has to be
# gentle (through the platform each poll is an API call and one or two Prefect calls).
POLL = 0.25

FLOWS = textwrap.dedent(
    """
    from prefect import flow, task


    @flow(name="noop")
    async def noop() -> int:
        return 1


    @task
    def step(x: int) -> int:
        return x + 1


    @flow(name="chain")
    def chain(n: int = 40) -> int:
        x = 0
        for _ in range(n):
            x = step(x)
        return x
    """
)


def plain_step(x: int) -> int:
    return x + 1


def plain_chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = plain_step(x)
    return x


def ts(value: Any) -> float:
    """Seconds since the epoch of a Prefect timestamp (ISO 8601) or a datetime."""
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- the stack --------------------------------------------------------------------------------------


class Stack:
    """A fresh ``selfserve up --no-demo`` in a temporary home, on free ports."""

    def __init__(self, tmp: Path) -> None:
        self.home = tmp / "home"
        self.env = {
            "SELFSERVE_HOME": str(self.home),
            "SELFSERVE_CONFIG_DIR": str(tmp / "cli"),
            "SELFSERVE_SERVER__API_PORT": str(free_port()),
            "SELFSERVE_SERVER__CONSOLE_PORT": str(free_port()),
            "SELFSERVE_PIPELINES__ENABLED": "true",
            "SELFSERVE_PIPELINES__PREFECT_PORT": str(free_port()),
            "SELFSERVE_PIPELINES__WORKER_PORT": str(free_port()),
        }

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python(), "-m", "selfserve.cli", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @contextlib.contextmanager
    def running(self) -> Iterator[Stack]:
        t0 = time.perf_counter()
        started = self.cli("up", "--no-demo", "--timeout", "180")
        try:
            if started.returncode != 0:
                raise RuntimeError(f"selfserve up failed:\n{started.stdout}\n{started.stderr}")
            print(f"selfserve up --no-demo: healthy after {time.perf_counter() - t0:.1f} s", flush=True)
            yield self
        finally:
            self.cli("down", timeout=60)

    @property
    def admin_password(self) -> str:
        return (self.home / "admin-credentials.txt").read_text().split("password:")[1].split()[0]

    def launcher_started(self, flow_run_id: str) -> float | None:
        """When the API handled the launcher's ``start`` call (the launcher's run record)."""
        with contextlib.closing(sqlite3.connect(self.home / "selfserve.db")) as db:
            row = db.execute("select started_at from pipeline_runs where flow_run_id = ?", (flow_run_id,)).fetchone()
        return ts(row[0]) if row and row[0] else None


@contextlib.contextmanager
def bare_worker(env: dict[str, str], log: Path) -> Iterator[None]:
    """``prefect worker start --pool bare --type process``, stopped with two SIGINTs (it ignores the first)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [python(), "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield
        finally:
            for _ in range(2):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# -- measuring ----------------------------------------------------------------------------------------

BEYOND_RUNNING = {"RUNNING", "COMPLETED", "FAILED", "CRASHED", "CANCELLED", "CANCELLING", "PAUSED"}
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class ProcessWatch:
    """Start times of the processes that carry a flow run, sampled from ``/proc`` every ``period`` s.

    Only descendants of the two workers are looked at (a full ``/proc`` read per sample would load
    the machine): the platform's launcher and its engine, Prefect's workspace supervisor and the
    engine it ``exec``s into (same pid). A process's run is ``PREFECT__FLOW_RUN_ID`` in its
    environment; its start time is the kernel's (``/proc/<pid>/stat`` field 22, counted from boot on
    CLOCK_BOOTTIME), except for an ``exec``, which is timed when first seen (within ``period``).
    """

    KINDS = {
        "selfserve.pipelines.launch": "launcher",
        "selfserve.pipelines._engine": "engine",
        "prefect.engine": "engine",
        "prefect.runner._workspace_supervisor": "supervisor",
    }

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self.started: dict[tuple[str, str], float] = {}  # (flow run id, kind) -> epoch seconds
        self._boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        self._tick = os.sysconf("SC_CLK_TCK")
        self._known: dict[int, float] = {}  # every pid seen -> its start time
        self._workers: set[int] = set()
        self._tracked: dict[int, str | None] = {}  # worker descendants -> kind seen so far
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            alive = {int(e.name) for e in os.scandir("/proc") if e.name.isdigit()}
            for pid in sorted(alive - set(self._known)):  # parents before children, mostly
                with contextlib.suppress(OSError, ValueError, IndexError):
                    self._new(pid)
            for pid in list(self._tracked):
                if pid not in alive:
                    del self._tracked[pid]
                    continue
                with contextlib.suppress(OSError, ValueError, IndexError):
                    self._identify(pid)
            for pid in set(self._known) - alive:
                del self._known[pid]
                self._workers.discard(pid)

    @staticmethod
    def _read(pid: int, what: str) -> list[str]:
        with open(f"/proc/{pid}/{what}", "rb") as f:
            return f.read().decode(errors="replace").split("\0")

    def _new(self, pid: int) -> None:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rfind(")") + 2 :].split()
        ppid, start = int(fields[1]), self._boot + int(fields[19]) / self._tick
        self._known[pid] = start
        if ppid in self._workers or ppid in self._tracked:  # a run's process (maybe not exec'd yet)
            self._tracked[pid] = None
            self._identify(pid)
            return
        cmdline = self._read(pid, "cmdline")
        if "selfserve.pipelines.worker" in cmdline or {"prefect", "worker", "start", POOL} <= set(cmdline):
            self._workers.add(pid)

    def _identify(self, pid: int) -> None:
        kind = next((self.KINDS[arg] for arg in self._read(pid, "cmdline") if arg in self.KINDS), None)
        previous = self._tracked[pid]
        if kind is None or kind == previous:
            return
        env = dict(v.split("=", 1) for v in self._read(pid, "environ") if "=" in v)
        run_id = env.get("PREFECT__FLOW_RUN_ID")
        if not run_id:
            return
        # A kind change of a pid already known is an exec: time it now.
        started = self._known[pid] if previous is None else time.time()
        self.started.setdefault((run_id, kind), started)
        self._tracked[pid] = kind


# Polls the API or Prefect failed to answer (time, message): reported, and polling goes on.
POLL_ERRORS: list[tuple[float, str]] = []


def wait_state(read: Any, run_id: str, states: set[str], timeout: float = 300, poll: float = POLL) -> dict[str, Any]:
    """Poll ``read(run_id)`` (a flow run as a dict with its state type) until the type is in ``states``."""
    from selfserve.errors import ServiceUnavailable

    deadline = time.monotonic() + timeout
    state = "unknown"
    while True:
        try:
            fr = read(run_id)
        except ServiceUnavailable as e:
            POLL_ERRORS.append((time.time(), str(e)))
            print(f"poll of run {run_id} failed: {e}", flush=True)
        else:
            state = fr["state"]["type"]
            if state in states:
                return fr  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} is still {state} after {timeout} s")
        time.sleep(poll)


def state_history(prefect: Any, run_id: str) -> dict[str, float]:
    """First time of each state type of a flow run, from Prefect's state history."""
    rows = prefect.request("GET", f"flow_run_states/?flow_run_id={run_id}") or []
    first: dict[str, float] = {}
    for row in sorted(rows, key=lambda r: r["timestamp"]):
        first.setdefault(row["type"], ts(row["timestamp"]))
    return first


# Segments of submit-to-running on each side: (what it covers, the marker it starts at, the one it ends at).
SEGMENTS = {
    "platform": [
        ("submit call: the flow run is created (SCHEDULED)", "submit", "scheduled"),
        ("worker poll: SCHEDULED -> PENDING", "scheduled", "pending"),
        ("worker starts the launcher process", "pending", "process"),
        ("launcher: Python start, imports, its `start` call to the API answered", "process", "api_start"),
        ("launcher: code unpacked from storage, engine process started", "api_start", "engine"),
        ("engine: Python start, Prefect import, flow run read (to its first log)", "engine", "first_log"),
        ("engine: pull step, flow import, RUNNING", "first_log", "running"),
    ],
    "bare": [
        ("submit call: the flow run is created (SCHEDULED)", "submit", "scheduled"),
        ("worker poll: SCHEDULED -> PENDING", "scheduled", "pending"),
        ("worker starts its workspace supervisor process", "pending", "process"),
        ("supervisor: Python start, Prefect import (to its first log)", "process", "first_log"),
        ("supervisor: pull step, engine process started", "first_log", "engine"),
        ("engine: Python start, Prefect import, flow import, RUNNING", "engine", "running"),
    ],
}


class Timeline:
    """The markers of one run, in seconds after its submit."""

    def __init__(self, prefect: Any, stack: Stack, watch: ProcessWatch, run_id: str, t_submit: float, side: str):
        states = state_history(prefect, run_id)
        logs = [(ts(r["timestamp"]), str(r.get("name") or ""), str(r["message"])) for r in prefect.logs(run_id)]
        engine_logs = [t for t, name, _ in logs if name == "prefect.flow_runs"]
        marks: dict[str, float | None] = {
            "scheduled": states.get("SCHEDULED"),
            "pending": states.get("PENDING"),
            "running": states.get("RUNNING"),
            "first_log": min(engine_logs) if engine_logs else None,
            "engine": watch.started.get((run_id, "engine")),
        }
        if side == "platform":
            marks["process"] = watch.started.get((run_id, "launcher"))
            marks["api_start"] = stack.launcher_started(run_id)
        else:
            marks["process"] = watch.started.get((run_id, "supervisor"))
        self.side = side
        self.run_id = run_id
        self.marks = {"submit": 0.0} | {k: v - t_submit for k, v in marks.items() if v is not None}
        self.logs = [(t - t_submit, name, msg) for t, name, msg in logs]

    def segments(self) -> dict[str, float]:
        """Length of each segment of this side (absent when one of its markers was not seen)."""
        return {
            what: self.marks[end] - self.marks[start]
            for what, start, end in SEGMENTS[self.side]
            if start in self.marks and end in self.marks
        }

    def show(self) -> None:
        print(f"{self.side} run {self.run_id}:")
        for k, v in sorted(self.marks.items(), key=lambda kv: kv[1]):
            print(f"  {v:7.3f} {k}")
        for t, name, msg in self.logs:
            print(f"  {t:7.3f} log {name}: {msg[:100]}")


# Fresh interpreters doing only the imports of a run's processes, for scale (same flags as a run's engine).
IMPORTS = {
    "launcher": "import selfserve.pipelines.launch, selfserve.pipelines.prefect, selfserve.pipelines.code, "
    "selfserve.data.objectstore",
    "engine": "import prefect.engine, prefect.flow_engine",
}


def import_seconds(code: str, rounds: int = 3) -> float:
    """Median wall time of ``python -c code`` (interpreter start included)."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run(
            [python(), "-c", code],
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"},
            check=True,
        )
        times.append(time.perf_counter() - t0)
    return median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10, help="on-demand runs per side (median)")
    ap.add_argument("--chain-runs", type=int, default=3, help="runs of the task chain per side (median)")
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--verbose", action="store_true", help="print the timeline of every run")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="selfserve-bench-pipelines-"))
    try:
        results = measure(args, tmp)
    except BaseException:
        print(f"failed; the services' logs are kept in {tmp / 'home' / 'logs'}", flush=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    report(args, *results)


def measure(args: argparse.Namespace, tmp: Path) -> tuple[Any, ...]:
    """Start the stack and the baseline, take every measurement, stop everything."""
    stack = Stack(tmp)
    flow_dir = tmp / "flows"
    flow_dir.mkdir()
    (flow_dir / "flows.py").write_text(FLOWS)
    load_before = os.getloadavg()

    with stack.running():
        # This process's settings point at the stack, for the platform's Prefect admin client.
        os.environ.update(stack.env)
        from selfserve import Client
        from selfserve.pipelines.prefect import Prefect
        from selfserve.settings import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        prefect_env = {
            "PREFECT_API_URL": settings.prefect_url,
            "PREFECT_API_AUTH_STRING": settings.prefect_auth_string(),
            "PREFECT_HOME": str(tmp / "prefect-bare"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": PREFETCH_SECONDS,
        }
        os.environ.update(prefect_env)  # before Prefect is imported: it reads its settings then
        admin = Prefect.from_settings(settings)

        client = Client(url=settings.api_url, token="")
        client.login("admin", stack.admin_password, save=False)
        client.projects.create(PROJECT)
        for fn in ("noop", "chain"):
            client.flows.deploy(PROJECT, flow_dir / "flows.py", fn, name=fn)

        # The baseline: Prefect's own pool, deployments and worker on the same server.
        made = subprocess.run(
            [python(), "-m", "prefect", "work-pool", "create", POOL, "--type", "process"],
            env=os.environ.copy(),
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        from prefect import flow
        from prefect.deployments import run_deployment

        with contextlib.redirect_stdout(io.StringIO()):
            for fn in ("noop", "chain"):
                flow.from_source(source=str(flow_dir), entrypoint=f"flows.py:{fn}").deploy(  # type: ignore[attr-defined]
                    name=f"bare-{fn}", work_pool_name=POOL, print_next_steps=False, ignore_warnings=True
                )

        def submit(side: str, fn: str, parameters: dict[str, Any] | None = None) -> tuple[float, str]:
            """(wall-clock time just before the submit call, flow run id)."""
            t = time.time()
            if side == "platform":
                return t, client.flows.run(PROJECT, fn, parameters=parameters).id
            return t, str(run_deployment(f"{fn}/bare-{fn}", parameters=parameters, timeout=0).id)  # type: ignore[union-attr]

        def read(side: str) -> Any:
            if side == "platform":

                def through_platform(run_id: str) -> dict[str, Any]:
                    return {"state": {"type": client.runs.get(PROJECT, run_id).state.upper()}}

                return through_platform
            return admin.read_flow_run

        def finished(run_id: str) -> dict[str, Any]:
            fr = admin.read_flow_run(run_id)
            assert fr is not None and fr["state"]["type"] == "COMPLETED", fr
            return fr

        latency: dict[str, list[float]] = {"platform": [], "bare": []}
        seen: dict[str, list[float]] = {"platform": [], "bare": []}
        timelines: dict[str, list[Timeline]] = {"platform": [], "bare": []}
        chain: dict[str, list[float]] = {"platform": [], "bare": []}
        with bare_worker(prefect_env, tmp / "bare-worker.log"), ProcessWatch() as watch:
            for side in ("platform", "bare"):  # warm-up: first imports, the workers' first polls
                _, rid = submit(side, "noop")
                wait_state(read(side), rid, FINAL)

            for i in range(args.runs):
                for side in ("platform", "bare") if i % 2 == 0 else ("bare", "platform"):
                    t_submit, rid = submit(side, "noop")
                    wait_state(read(side), rid, BEYOND_RUNNING)
                    seen[side].append(time.time() - t_submit)
                    wait_state(read(side), rid, FINAL)
                    latency[side].append(ts(finished(rid)["start_time"]) - t_submit)
                    timeline = Timeline(admin, stack, watch, rid, t_submit, side)
                    timelines[side].append(timeline)
                    if args.verbose:
                        timeline.show()
                    print(f"run {i + 1}/{args.runs} {side}: {latency[side][-1]:.2f} s to running", flush=True)

            for i in range(args.chain_runs):
                for side in ("platform", "bare") if i % 2 == 0 else ("bare", "platform"):
                    _, rid = submit(side, "chain", {"n": args.tasks})
                    wait_state(read(side), rid, FINAL, timeout=600, poll=0.5)
                    fr = finished(rid)
                    chain[side].append(ts(fr["end_time"]) - ts(fr["start_time"]))
                    print(f"chain {i + 1}/{args.chain_runs} {side}: {chain[side][-1]:.2f} s", flush=True)
            imports = {name: import_seconds(code) for name, code in IMPORTS.items()}
        client.close()
        admin.close()

    plain: list[float] = []
    for _ in range(5):
        t0 = time.perf_counter()
        assert plain_chain(args.tasks) == args.tasks
        plain.append(time.perf_counter() - t0)
    return latency, seen, timelines, chain, plain, imports, load_before, os.getloadavg()


def report(
    args: argparse.Namespace,
    latency: dict[str, list[float]],
    seen: dict[str, list[float]],
    timelines: dict[str, list[Timeline]],
    chain: dict[str, list[float]],
    plain: list[float],
    imports: dict[str, float],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    p, b = median(latency["platform"]), median(latency["bare"])
    print(
        f"\nload average (1 min) before / after: {load_before[0]:.1f} / {load_after[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"\na. Submit-to-running, {args.runs} runs per side (start_time - submit; medians)\n")
    print("| path | median s | min s | max s | seen by polling, median s |")
    print("|---|---:|---:|---:|---:|")
    for side, label in (("platform", "platform (`client.flows.run`)"), ("bare", "bare (`run_deployment`, timeout=0)")):
        v = latency[side]
        print(f"| {label} | {median(v):.2f} | {min(v):.2f} | {max(v):.2f} | {median(seen[side]):.2f} |")
    goal = "met" if p <= SUBMIT_GOAL else "not met"
    print(f"\nratio platform/bare: **{p / b:.2f}x**; platform {p:.2f} s (goal <= {SUBMIT_GOAL:g} s: {goal})")

    for side in ("platform", "bare"):
        print(f"\nWhere the time goes, {side} (median of each segment over the runs):\n")
        print("| segment | s |")
        print("|---|---:|")
        for what, _, _ in SEGMENTS[side]:
            values = [s[what] for s in (t.segments() for t in timelines[side]) if what in s]
            print(f"| {what} | {median(values):.2f} |" if values else f"| {what} | (not seen) |")
    print(
        f"\nfor scale, a fresh Python doing only the imports (same run): launcher's {imports['launcher']:.2f} s, "
        f"Prefect's engine {imports['engine']:.2f} s"
    )

    pc, bc, pl = median(chain["platform"]), median(chain["bare"]), median(plain)
    print(
        f"\nb. {args.tasks} chained tasks: the flow's own duration (end_time - start_time), "
        f"{args.chain_runs} runs per side\n"
    )
    print("| path | median s | per task ms |")
    print("|---|---:|---:|")
    print(f"| platform flow | {pc:.2f} | {pc / args.tasks * 1000:.1f} |")
    print(f"| bare Prefect flow | {bc:.2f} | {bc / args.tasks * 1000:.1f} |")
    print(f"| {args.tasks} plain Python calls | {pl:.6f} | {pl / args.tasks * 1000:.4f} |")
    goal = "met" if pc <= CHAIN_GOAL else "not met"
    print(
        f"\nplatform/bare: {pc / bc:.2f}x; overhead per task over plain Python: platform "
        f"{(pc - pl) / args.tasks * 1000:.1f} ms, bare {(bc - pl) / args.tasks * 1000:.1f} ms; "
        f"platform total {pc:.2f} s (goal <= {CHAIN_GOAL:g} s: {goal})"
    )
    if POLL_ERRORS:
        print(f"\npolls that failed (and were retried): {len(POLL_ERRORS)}; first: {POLL_ERRORS[0][1]}")
    print(f"\nrepo: {REPO}")


if __name__ == "__main__":
    main()
