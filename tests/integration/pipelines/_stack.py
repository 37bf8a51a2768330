"""Helpers of the pipeline suites that start, break and mend a real platform.

:func:`own_stack` starts a separate ``selfserve up`` for a module whose tests break it (kill the
worker, restart Prefect), so the session's stack is never disturbed. :class:`OwnStack` kills and
restarts its services the way the supervisor starts them (same argv and environment) and keeps
``state.json`` current, so that ``selfserve down`` still stops everything.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from unittest import mock

import psutil

from selfserve import Client
from selfserve.runtime import _process, _state
from selfserve.runtime._services import ServiceSpec, services
from selfserve.schemas.pipelines import RunPublic
from selfserve.settings import get_settings
from tests.pipeline_stack import Stack
from tests.support import free_port

T = TypeVar("T")


def stack_env(home: Path, **overrides: str) -> dict[str, str]:
    """The settings of a stack in ``home`` on free ports (the same keys as the session's stack)."""
    return {
        "SELFSERVE_HOME": str(home),
        "SELFSERVE_SERVER__API_PORT": str(free_port()),
        "SELFSERVE_SERVER__CONSOLE_PORT": str(free_port()),
        "SELFSERVE_PIPELINES__ENABLED": "true",
        "SELFSERVE_PIPELINES__PREFECT_PORT": str(free_port()),
        "SELFSERVE_PIPELINES__WORKER_PORT": str(free_port()),
        "SELFSERVE_PIPELINES__LOST_AFTER": "6",
        "SELFSERVE_PIPELINES__HEARTBEAT_SECONDS": "1",
        # These stacks break Prefect and the worker: no MLflow (600 MiB, 15 s to start) needed.
        "SELFSERVE_MODELS__ENABLED": "false",
        **overrides,
    }


def admin_client(stack: Stack, *, timeout: float = 300) -> Client:
    """An admin client the caller closes (not one of ``stack.clients``, which each test closes).

    The long timeout is for deploys: the API imports the flow in a child, slow on a busy machine.
    """
    c = Client(url=stack.url, token="", timeout=timeout)
    c.login("admin", stack.admin_password, save=False)
    return c


def eventually(check: Callable[[], T | None], *, timeout: float, what: str, poll: float = 0.3) -> T:
    """Poll ``check`` until it returns something other than None/False; fail with ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got is not None and got is not False:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def run_pids(flow_run_id: str) -> list[int]:
    """Live processes started for a flow run: its launcher and everything under it (by their environment)."""
    needle = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    found = []
    for p in psutil.process_iter():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            with open(f"/proc/{p.pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(p.pid)
        except (OSError, psutil.Error):
            continue
    return found


def log_text(client: Client, project: str, run_id: str) -> str:
    return "\n".join(line.message for line in client.runs.logs(project, run_id, limit=200).lines)


@dataclass
class OwnStack(Stack):
    """A stack this module started; it may kill and restart its services."""

    cli_env: dict[str, str] = field(default_factory=dict)
    spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def state_file(self) -> Path:
        return _state.state_path(self.settings.run_dir)

    def spec(self, name: str) -> ServiceSpec:
        return next(s for s in services(self.settings) if s.name == name)

    def record(self, name: str) -> _state.ServiceRecord:
        state = _state.load(self.state_file)
        assert state is not None, f"{self.state_file} is missing"
        rec = state.get(name)
        assert rec is not None, f"no {name} in {self.state_file}"
        return rec

    def alive(self, name: str) -> bool:
        rec = self.record(name)
        return _process.find(rec.pid, rec.create_time) is not None

    def kill(self, name: str, *, group: bool = False) -> int:
        """SIGKILL the service's process (or its whole process group); returns the pid killed."""
        rec = self.record(name)
        proc = _process.find(rec.pid, rec.create_time)
        assert proc is not None, f"{name} (pid {rec.pid}) is not running"
        if group:
            os.killpg(rec.pgid, signal.SIGKILL)
        else:
            os.kill(rec.pid, signal.SIGKILL)
        eventually(lambda: _process.find(rec.pid, rec.create_time) is None, timeout=10, what=f"{name} to die")
        if group:
            eventually(lambda: not _process.group_members(rec.pgid), timeout=10, what=f"{name}'s group to die")
        return rec.pid

    def restart(self, name: str, *, timeout: float = 90) -> _state.ServiceRecord:
        """Start the service again as the supervisor does, record it in state.json and wait for its health."""
        spec = self.spec(name)
        log = self.settings.log_dir / f"{name}.restarted.log"
        proc = _process.spawn(spec.argv, {**self.cli_env, **spec.env}, log, cwd=self.home)
        self.spawned.append(proc)
        state = _state.load(self.state_file)
        assert state is not None
        old = state.get(name)
        assert old is not None
        new = _state.ServiceRecord(
            name=name,
            pid=proc.pid,
            pgid=os.getpgid(proc.pid),
            port=spec.port,
            url=spec.url,
            health_url=spec.health_url,
            log=str(log),
            started_at=old.started_at,
            create_time=_process.create_time(proc.pid),
        )
        state.services = [new if s.name == name else s for s in state.services]
        _state.save(self.state_file, state)
        with _process.health_client() as http:

            def healthy() -> bool:
                assert proc.poll() is None, f"restarted {name} exited:\n{_process.tail(log)}"
                return _process.probe(http, spec.health_url)[0]

            eventually(healthy, timeout=timeout, what=f"restarted {name} to be healthy ({log})")
        return new

    def mend(self) -> None:
        """Restart every service whose process is gone (a test that broke the stack and then failed)."""
        for spec in services(self.settings):
            if not self.alive(spec.name):
                self.restart(spec.name)

    def reap(self) -> None:
        """Kill and wait for what this stack restarted by hand (``selfserve down`` has stopped it already)."""
        while self.spawned:
            proc = self.spawned.pop()
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def own_stack(home: Path, **overrides: str) -> Iterator[OwnStack]:
    """A platform of its own in ``home`` (``selfserve up`` on free ports), stopped afterwards."""
    env = stack_env(home, **overrides)
    with mock.patch.dict(os.environ, env):
        get_settings.cache_clear()
        settings = get_settings()
    get_settings.cache_clear()
    cli_env = {**os.environ, **env, "SELFSERVE_CONFIG_DIR": str(home / "cli")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "selfserve.cli", *args], env=cli_env, capture_output=True, text=True, timeout=180
        )

    stack: OwnStack | None = None
    try:
        started = cli("up", "--no-demo", "--timeout", "120")
        assert started.returncode == 0, f"selfserve up failed:\n{started.stdout}\n{started.stderr}"
        password = (home / "admin-credentials.txt").read_text().split("password:")[1].split()[0]
        stack = OwnStack(settings=settings, env=env, admin_password=password, cli_env=cli_env)
        yield stack
    finally:
        if stack is not None:
            stack.close_clients()
        cli("down")
        if stack is not None:
            stack.reap()


def wait_state(client: Client, project: str, run_id: str, states: set[str], timeout: float) -> RunPublic:
    """The run once it is in one of ``states``."""
    return eventually(
        lambda: r if (r := client.runs.get(project, run_id)).state in states else None,
        timeout=timeout,
        what=f"run {run_id} to be {'/'.join(sorted(states))}",
    )
