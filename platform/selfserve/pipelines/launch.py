"""The launcher: the process a worker starts for each flow run (``python -m selfserve.pipelines.launch``).

It runs on the platform's side of the line. It asks the API for the run's context (its token, code,
environment and limits), unpacks the code into a fresh working directory, and starts Prefect's
engine in a child process whose environment holds only the run's token and the project's scope:

- CPU: the child is pinned to ``cpus`` cores (``sched_setaffinity``), the project's ``cpu`` quota
  rounded up to whole cores.
- Memory: the launcher sums the resident memory of the child's process group every 0.2 s and
  kills the group when it passes the project's ``memory`` quota; the run is marked crashed with
  the reason. (No cgroups: they need privileges the platform does not assume.)
- Time: the group is killed after the deployment's timeout; the run is marked failed.
- Files: the child confines itself with Landlock (reads its working directory and the Python
  installation) before Prefect loads any user code.
- It reports CPU-seconds and peak memory to the API every few seconds and at the end; if the
  launcher disappears, its child dies with it (``PR_SET_PDEATHSIG``) and the API marks the run
  crashed once the heartbeats stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from selfserve.settings import Settings, get_settings, inherited_environ

_PR_SET_PDEATHSIG = 1
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")
POLL_SECONDS = 0.2
# The start call waits on Prefect, which retries while its SQLite is busy: give it longer than the rest.
START_TIMEOUT = 120.0


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def group_usage(pgid: int) -> tuple[int, float]:
    """(resident bytes, CPU-seconds) of the live processes in process group ``pgid``."""
    rss, cpu = 0, 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields[0] is state (field 3); pgrp is field 5 -> index 2; utime 14 -> 11; stime 15 -> 12; rss 24 -> 21
        if int(fields[2]) != pgid:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / _TICKS
        rss += int(fields[21]) * _PAGE
    return rss, cpu


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def child_env(ctx: dict[str, Any], flow_run_id: str, workdir: Path) -> dict[str, str]:
    """Everything the run's process gets: its token, project and MLflow account, nothing else of the platform's."""
    base = inherited_environ()
    api = str(ctx["api_url"]).rstrip("/")
    env = {
        "PATH": base.get("PATH", "/usr/bin:/bin"),
        "LANG": base.get("LANG", "C.UTF-8"),
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PREFECT_API_URL": f"{api}/api/v1/runner/prefect",
        "PREFECT_API_AUTH_STRING": f"run:{ctx['token']}",
        "PREFECT__FLOW_RUN_ID": flow_run_id,
        "PREFECT_HOME": str(workdir / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
        "SELFSERVE_URL": api,
        "SELFSERVE_TOKEN": str(ctx["token"]),
        "SELFSERVE_PROJECT": str(ctx["project"]),
        "SELFSERVE_RUN_ID": flow_run_id,
        "SELFSERVE_STORAGE_PREFIX": str(ctx["storage_prefix"]),
        "SELFSERVE_CONFIG_DIR": str(workdir / ".selfserve"),
    }
    mlflow = ctx.get("mlflow")
    if mlflow:
        env.update(
            {
                "MLFLOW_TRACKING_URI": str(mlflow["tracking_uri"]),
                "MLFLOW_TRACKING_USERNAME": str(mlflow["username"]),
                "MLFLOW_TRACKING_PASSWORD": str(mlflow["password"]),
                "MLFLOW_WORKSPACE": str(mlflow["workspace"]),
                "MLFLOW_DISABLE_TELEMETRY": "true",
            }
        )
    return env


class Launcher:
    def __init__(self, settings: Settings, flow_run_id: str) -> None:
        from selfserve.pipelines.prefect import Prefect

        self.settings = settings
        self.flow_run_id = flow_run_id
        self.api = httpx.Client(
            base_url=f"{settings.runner_api_url.rstrip('/')}/api/v1/runner/runs/{flow_run_id}/",
            headers={"Authorization": f"Bearer {settings.runner_key()}"},
            timeout=30,
        )
        self.prefect = Prefect.from_settings(settings)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stop_requested = False

    def call(self, path: str, body: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        r = self.api.post(path, json=body or {}, timeout=timeout or self.api.timeout)
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:300]
            raise RuntimeError(message)
        return r.json() if r.content else None

    def mark(self, state: str, message: str, name: str | None = None) -> None:
        with contextlib.suppress(Exception):
            self.prefect.set_state(self.flow_run_id, state, message, name=name)

    def prepare(self, ctx: dict[str, Any]) -> Path:
        from selfserve.data.objectstore import from_settings
        from selfserve.pipelines import code

        workdir = self.settings.home / "pipelines" / "runs" / self.flow_run_id
        shutil.rmtree(workdir, ignore_errors=True)
        code.materialize(from_settings(self.settings), str(ctx["project"]), str(ctx["code_sha"]), workdir)
        (workdir / "tmp").mkdir(exist_ok=True)
        return workdir

    def run(self) -> int:
        try:
            ctx = self.call("start", timeout=START_TIMEOUT)
        except Exception as e:
            self.mark("CRASHED", f"the platform could not start the run: {e}")
            return 1
        rc, note, cpu, peak = 1, None, 0.0, 0
        try:
            workdir = self.prepare(ctx)
            rc, note, cpu, peak = self.supervise(ctx, workdir)
        except Exception as e:
            note = f"the run could not be started: {type(e).__name__}: {e}"
            self.mark("CRASHED", note)
        finally:
            with contextlib.suppress(Exception):
                self.call("finish", {"cpu_seconds": cpu, "max_rss_bytes": peak, "exit_code": rc, "note": note})
            if rc == 0 or note is None:
                shutil.rmtree(self.settings.home / "pipelines" / "runs" / self.flow_run_id, ignore_errors=True)
        return rc

    def supervise(self, ctx: dict[str, Any], workdir: Path) -> tuple[int, str | None, float, int]:
        if self.stop_requested:  # cancelled before the run's process started
            return 1, None, 0.0, 0
        python = ctx.get("python") or sys.executable
        cpus = int(ctx["cpus"])
        allowed = sorted(os.sched_getaffinity(0))[:cpus]

        def in_child() -> None:
            die_with_parent()
            os.sched_setaffinity(0, allowed)

        self.proc = subprocess.Popen(
            # -I: the run's code directory (the working directory) cannot shadow the platform's modules.
            [python, "-I", "-B", "-u", "-m", "selfserve.pipelines._engine"],
            cwd=workdir,
            env=child_env(ctx, self.flow_run_id, workdir),
            start_new_session=True,
            preexec_fn=in_child,  # noqa: PLW1509 - fork-safe: two syscalls
        )
        pgid = self.proc.pid
        memory = ctx.get("memory_bytes")
        deadline = time.monotonic() + float(ctx["timeout_seconds"])
        beat_every = float(ctx["heartbeat_seconds"])
        next_beat = time.monotonic() + beat_every
        note: str | None = None
        peak, cpu = 0, 0.0
        while self.proc.poll() is None:
            if self.stop_requested:
                self.kill(signal.SIGKILL)
            rss, cpu_now = group_usage(pgid)
            peak, cpu = max(peak, rss), max(cpu, cpu_now)
            if memory and rss > memory:
                note = f"stopped: the run used {human_bytes(rss)}, over its memory limit of {human_bytes(memory)}"
                self.kill(signal.SIGKILL)
                break
            if time.monotonic() > deadline:
                note = f"stopped: the run took longer than its timeout of {float(ctx['timeout_seconds']):g} s"
                self.kill(signal.SIGKILL)
                break
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat_every
                with contextlib.suppress(Exception):
                    self.call("heartbeat", {"cpu_seconds": cpu, "rss_bytes": peak})
            time.sleep(POLL_SECONDS)
        rc = self.proc.wait()
        usage = _children_cpu()
        cpu = max(cpu, usage)
        if note is not None:
            if "memory" in note:
                self.mark("CRASHED", note)
            else:
                self.mark("FAILED", note, name="TimedOut")
        return (rc if rc >= 0 else 128 - rc), note, cpu, peak

    def kill(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def on_signal(self, signum: int, _frame: Any) -> None:
        """Cancellation (the worker's SIGTERM): the run's process group is killed at once, so the engine
        cannot report the run as crashed; the worker then marks it cancelled."""
        self.stop_requested = True
        self.kill(signal.SIGKILL)


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return float(r.ru_utime + r.ru_stime)


def main() -> int:
    die_with_parent()
    flow_run_id = inherited_environ().get("PREFECT__FLOW_RUN_ID", "")
    if not flow_run_id:
        print("selfserve launcher: PREFECT__FLOW_RUN_ID is not set", file=sys.stderr)
        return 2
    launcher = Launcher(get_settings(), flow_run_id)
    signal.signal(signal.SIGTERM, launcher.on_signal)
    signal.signal(signal.SIGINT, launcher.on_signal)
    return launcher.run()


if __name__ == "__main__":
    raise SystemExit(main())
