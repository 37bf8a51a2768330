"""The embedded supervisor behind ``selfserve up``, ``status`` and ``down``.

``up`` checks that nothing runs and every port is free, prepares the metadata DB, starts each
service of :func:`selfserve.runtime.services` detached (own process group, output to
``<log_dir>/<name>.log``), records them in ``<run_dir>/state.json`` and waits for their health
URLs. ``down`` stops the recorded process groups; ``status`` reads the record and asks each
service for its health.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx

from selfserve.errors import Conflict, SelfServeError
from selfserve.runtime import _process, _state
from selfserve.runtime._services import ServiceSpec, services
from selfserve.runtime._state import ServiceRecord, State
from selfserve.settings import Settings, get_settings, inherited_environ

Progress = Callable[[str], None]
LOG_TAIL_LINES = 20


class StartFailed(SelfServeError):
    """A service did not come up; everything ``up`` had started was stopped again."""


@dataclass
class UpResult:
    """What ``up`` started, and the first admin's credentials when they were created now."""

    services: list[ServiceRecord]
    admin: tuple[str, str] | None
    credentials_file: Path
    seconds: float


@dataclass
class ServiceStatus:
    name: str
    state: Literal["running", "unhealthy", "stopped"]
    pid: int
    url: str
    health: str
    rss_bytes: int
    uptime_seconds: float | None
    log: str

    @property
    def rss_mib(self) -> float:
        return self.rss_bytes / _process.MIB


@dataclass
class StatusReport:
    services: list[ServiceStatus] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return bool(self.services) and all(s.state == "running" for s in self.services)

    @property
    def total_rss_bytes(self) -> int:
        return sum(s.rss_bytes for s in self.services)

    def to_dict(self) -> dict[str, object]:
        return {
            "running": bool(self.services),
            "healthy": self.healthy,
            "total_rss_mib": round(self.total_rss_bytes / _process.MIB, 1),
            "services": [
                {
                    "name": s.name,
                    "state": s.state,
                    "pid": s.pid,
                    "url": s.url,
                    "health": s.health,
                    "rss_mib": round(s.rss_mib, 1),
                    "uptime_seconds": None if s.uptime_seconds is None else round(s.uptime_seconds, 1),
                    "log": s.log,
                }
                for s in self.services
            ],
        }


def configure(
    settings: Settings | None = None, *, api_port: int | None = None, console_port: int | None = None
) -> Settings:
    """The settings with the ports ``selfserve up`` was given on its command line."""
    settings = settings or get_settings()
    server = {k: v for k, v in {"api_port": api_port, "console_port": console_port}.items() if v is not None}
    if not server:
        return settings
    return settings.model_copy(update={"server": settings.server.model_copy(update=server)})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _quiet(_: str) -> None:
    pass


def _live(state: State) -> list[ServiceRecord]:
    return [r for r in state.services if _process.find(r.pid, r.create_time) is not None]


def _clear_stale(path: Path, state: State) -> None:
    # The recorded leaders are gone; end any orphan left in their groups, then forget them.
    _process.stop(state.services, timeout=5.0)
    _state.remove(path)


def up(settings: Settings | None = None, *, timeout: float = 60.0, progress: Progress = _quiet) -> UpResult:
    """Start every embedded service and wait until all are healthy.

    Args:
        settings: The platform's settings (default :func:`get_settings`).
        timeout: Seconds all services together may take to become healthy.
        progress: Called with one line of text per step.

    Returns:
        The started services and, at first start, the first admin's name and password.

    Raises:
        Conflict: the platform already runs, another ``up``/``down`` is in progress, or a port is
            not free (nothing was started).
        StartFailed: a service exited or stayed unhealthy; what had started was stopped again.
    """
    from selfserve.server import ADMIN_CREDENTIALS_FILE, bootstrap
    from selfserve.store import Store

    settings = settings or get_settings()
    begun = time.monotonic()
    specs = services(settings)
    path = _state.state_path(settings.run_dir)
    credentials = settings.home / ADMIN_CREDENTIALS_FILE
    with _state.locked(settings.run_dir):
        previous = _state.load(path)
        if previous is not None:
            live = _live(previous)
            if live:
                first = next((r for r in live if r.name == "api"), live[0])
                raise Conflict(
                    f"selfserve is already running ({first.name} pid {first.pid} at {first.url}); "
                    "run `selfserve down` first"
                )
            progress("clearing the record of a previous run that is no longer running")
            _clear_stale(path, previous)
        _process.check_ports(specs)

        progress(f"preparing the metadata database ({settings.home})")
        store = Store(settings.database_url, echo=settings.database.echo)
        try:
            admin = bootstrap(settings, store)
        finally:
            store.dispose()

        state = State(started_at=_now())
        children: dict[str, subprocess.Popen[bytes]] = {}
        deadline = time.monotonic() + timeout
        try:
            for spec in specs:
                children[spec.name] = _start(spec, settings, state, path, progress)
            _wait_healthy(specs, children, state, path, deadline, timeout, progress)
        except StartFailed as e:
            _abort(state, path, children)
            if admin is not None:
                # The admin exists now: the next `up` will not show its password again.
                e.message += f"\n(the first admin {admin[0]!r} was created; its password is in {credentials})"
            raise
        except BaseException:
            _abort(state, path, children)
            raise
    return UpResult(
        services=state.services,
        admin=admin,
        credentials_file=credentials,
        seconds=time.monotonic() - begun,
    )


def _start(
    spec: ServiceSpec, settings: Settings, state: State, path: Path, progress: Progress
) -> subprocess.Popen[bytes]:
    log = settings.log_dir / f"{spec.name}.log"
    progress(f"starting {spec.name} on port {spec.port} (log: {log})")
    # The children inherit this environment (PATH, the virtualenv, every SELFSERVE_* setting) so
    # that they resolve the same settings tree; the spec's env pins the values ``up`` decided.
    env = {**inherited_environ(), **spec.env}
    proc = _process.spawn(spec.argv, env, log, cwd=settings.home)
    state.services.append(
        ServiceRecord(
            name=spec.name,
            pid=proc.pid,
            pgid=os.getpgid(proc.pid),
            port=spec.port,
            url=spec.url,
            health_url=spec.health_url,
            log=str(log),
            started_at=_now(),
            create_time=_process.create_time(proc.pid),
        )
    )
    # Recorded at once: should ``up`` itself die now, ``down`` still finds what it started.
    _state.save(path, state)
    return proc


def _wait_healthy(
    specs: list[ServiceSpec],
    children: dict[str, subprocess.Popen[bytes]],
    state: State,
    path: Path,
    deadline: float,
    timeout: float,
    progress: Progress,
) -> None:
    pending = {spec.name: spec for spec in specs}
    seen: dict[str, str] = {}
    started = time.monotonic()
    with _process.health_client() as http:
        while pending:
            for name, spec in list(pending.items()):
                rec = state.get(name)
                assert rec is not None
                code = children[name].poll()
                if code is not None:
                    raise StartFailed(_failure(rec, f"{name} exited with code {code} while starting"))
                ok, seen[name] = _process.probe(http, spec.health_url)
                if ok:
                    rec.ready_seconds = round(time.monotonic() - started, 2)
                    _state.save(path, state)
                    progress(f"{name} is healthy after {rec.ready_seconds:.1f} s")
                    del pending[name]
            if pending and time.monotonic() >= deadline:
                name = next(iter(pending))
                rec = state.get(name)
                assert rec is not None
                raise StartFailed(
                    _failure(rec, f"{name} was not healthy within {timeout:g} s ({rec.health_url}: {seen[name]})")
                )
            if pending:
                time.sleep(0.2)


def _failure(rec: ServiceRecord, what: str) -> str:
    log = _process.tail(Path(rec.log), LOG_TAIL_LINES) or "(the log is empty)"
    return f"{what}; stopped everything that had started. Last {LOG_TAIL_LINES} lines of {rec.log}:\n{log}"


def _abort(state: State, path: Path, children: dict[str, subprocess.Popen[bytes]]) -> None:
    remaining = _process.stop(state.services)
    for proc in children.values():
        proc.wait()  # reap our own children: no zombie stays behind
    if not remaining:
        _state.remove(path)


def login_admin(settings: Settings, name: str, password: str) -> str:
    """Log the local CLI in as the first admin (saved like ``selfserve login``). Returns the URL."""
    from selfserve.client import Client

    with Client(url=settings.api_url) as c:
        c.login(name, password, save=True)
        return c.url


def status(settings: Settings | None = None) -> StatusReport:
    """Each recorded service's state, health, memory and uptime; empty when nothing was started."""
    settings = settings or get_settings()
    state = _state.load(_state.state_path(settings.run_dir))
    if state is None:
        return StatusReport()
    with _process.health_client() as http, ThreadPoolExecutor(max_workers=max(1, len(state.services))) as pool:
        return StatusReport(list(pool.map(lambda r: _status_of(r, http), state.services)))


def _status_of(rec: ServiceRecord, http: httpx.Client) -> ServiceStatus:
    proc = _process.find(rec.pid, rec.create_time)
    if proc is None:
        return ServiceStatus(rec.name, "stopped", rec.pid, rec.url, "-", 0, None, rec.log)
    ok, seen = _process.probe(http, rec.health_url)
    return ServiceStatus(
        name=rec.name,
        state="running" if ok else "unhealthy",
        pid=rec.pid,
        url=rec.url,
        health=seen,
        rss_bytes=_process.tree_rss(proc),
        uptime_seconds=time.time() - rec.create_time,
        log=rec.log,
    )


@dataclass
class DownResult:
    stopped: list[ServiceRecord]
    running: bool


def down(settings: Settings | None = None, *, timeout: float = 15.0) -> DownResult:
    """Stop every recorded service (SIGTERM, then SIGKILL after ``timeout`` s) and forget them.

    Idempotent: with nothing recorded it returns ``running=False``.

    Raises:
        SelfServeError: a process survived SIGKILL; the record is kept so that ``down`` can retry.
    """
    settings = settings or get_settings()
    path = _state.state_path(settings.run_dir)
    with _state.locked(settings.run_dir):
        state = _state.load(path)
        if state is None:
            return DownResult(stopped=[], running=False)
        live = _live(state)
        remaining = _process.stop(list(reversed(state.services)), timeout=timeout)
        if remaining:
            raise SelfServeError(
                f"processes {', '.join(map(str, remaining))} of selfserve did not stop; "
                f"{path} is kept so that `selfserve down` can try again"
            )
        _state.remove(path)
    return DownResult(stopped=live, running=bool(live))
