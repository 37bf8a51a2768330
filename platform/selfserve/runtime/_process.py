"""Process plumbing for the supervisor: ports, detached starts, liveness, memory, health, stopping."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import httpx
import psutil

from selfserve.errors import Conflict
from selfserve.runtime._services import ServiceSpec
from selfserve.runtime._state import ServiceRecord

MIB = 2**20


# -- ports --------------------------------------------------------------------------------


def port_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port``, or None when it could.

    Binds with ``SO_REUSEADDR`` like uvicorn and Streamlit (tornado) do, so that connections
    still in TIME_WAIT after a ``down`` do not count as a busy port, but a listener does.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot resolve host {host!r}: {e.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return "already in use"
            return e.strerror or str(e)
    return None


def check_ports(specs: Sequence[ServiceSpec]) -> None:
    """Make sure every service can listen where it is configured to, before any of them starts.

    Raises:
        Conflict: a port is taken, shared by two services, or not usable; the message names each
            port, the service that needs it and how to choose another.
    """
    problems: list[str] = []
    seen: dict[int, str] = {}
    for spec in specs:
        if spec.port == 0:
            problems.append(f"{spec.name} has no fixed port (0); choose one with {spec.port_hint}")
            continue
        if spec.port in seen:
            problems.append(
                f"{spec.name} and {seen[spec.port]} are both set to port {spec.port}; "
                f"choose another with {spec.port_hint}"
            )
            continue
        seen[spec.port] = spec.name
        problem = port_problem(spec.host, spec.port)
        if problem:
            problems.append(
                f"port {spec.port} on {spec.host} for {spec.name} is {problem}; "
                f"stop what uses it or choose another with {spec.port_hint}"
            )
    if problems:
        raise Conflict("cannot start: " + "; ".join(problems), detail={"problems": problems})


# -- starting -----------------------------------------------------------------------------


def spawn(argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached: its own session and process group, output to ``log``.

    The previous log, if any, is kept as ``<log>.1``.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists():
        os.replace(log, log.with_name(log.name + ".1"))
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip("\n")
    except OSError as e:
        return f"(cannot read {path}: {e.strerror})"


def probe(http: httpx.Client, url: str) -> tuple[bool, str]:
    """GET a health URL: (healthy, what was seen)."""
    try:
        resp = http.get(url)
    except httpx.HTTPError as e:
        return False, type(e).__name__
    if resp.status_code == 200:
        return True, "ok"
    return False, f"HTTP {resp.status_code}"


def health_client(timeout: float = 2.0) -> httpx.Client:
    # Health checks go to this machine: a proxy from the environment must not intercept them.
    return httpx.Client(timeout=timeout, trust_env=False)


# -- liveness and memory ------------------------------------------------------------------


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def find(pid: int, create_time: float) -> psutil.Process | None:
    """The live process ``pid`` if it is still the one started at ``create_time``; else None."""
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - create_time) > 1.0:
            return None
    except psutil.Error:
        return None
    return p if _alive(p) else None


def create_time(pid: int) -> float:
    return psutil.Process(pid).create_time()


def tree_rss(p: psutil.Process) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    total = 0
    with contextlib.suppress(psutil.Error):
        total += p.memory_info().rss
        for child in p.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
    return total


def group_members(pgid: int) -> list[psutil.Process]:
    """Live processes whose process group is ``pgid``."""
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and _alive(p):
                members.append(p)
        except (OSError, psutil.Error):
            continue
    return members


# -- stopping -----------------------------------------------------------------------------


def _targets(rec: ServiceRecord) -> tuple[bool, dict[int, psutil.Process]]:
    """What stopping ``rec`` must end: (whether its process group is ours, processes by pid).

    The group is ours when its leader is the recorded process, or when the leader is gone (the
    kernel does not hand out a pid still used as a group id, so the members are its orphans).
    A leader pid now held by another process means a stale record: nothing is touched.
    """
    leader = find(rec.pid, rec.create_time)
    if leader is None:
        try:
            if _alive(psutil.Process(rec.pid)):
                return False, {}
        except psutil.Error:
            pass
    procs: dict[int, psutil.Process] = {}
    if leader is not None:
        procs[leader.pid] = leader
        # Descendants that left the group (setsid) are still ours to stop.
        with contextlib.suppress(psutil.Error):
            procs.update((c.pid, c) for c in leader.children(recursive=True))
    procs.update((p.pid, p) for p in group_members(rec.pgid))
    return True, procs


def _signal(groups: Iterable[int], procs: Iterable[psutil.Process], sig: signal.Signals) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)


def _wait_gone(procs: Iterable[psutil.Process], deadline: float) -> list[psutil.Process]:
    pending = list(procs)
    while pending:
        pending = [p for p in pending if _alive(p)]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return pending


def stop(records: Sequence[ServiceRecord], timeout: float = 15.0) -> list[int]:
    """Stop the recorded services and everything they started.

    SIGTERM to every process group (and to descendants that left their group), up to ``timeout``
    seconds for them to exit, then SIGKILL. Returns the pids that still run afterwards (none
    unless the OS refused); zombies count as gone.
    """
    groups: list[int] = []
    procs: dict[int, psutil.Process] = {}
    for rec in records:
        ours, found = _targets(rec)
        if ours:
            groups.append(rec.pgid)
            procs.update(found)
    _signal(groups, procs.values(), signal.SIGTERM)
    survivors = _wait_gone(procs.values(), time.monotonic() + timeout)
    # Members that joined a group while it was stopping are caught here too.
    survivors += [p for pgid in groups for p in group_members(pgid) if p.pid not in {s.pid for s in survivors}]
    if survivors:
        _signal(groups, survivors, signal.SIGKILL)
        survivors = _wait_gone(survivors, time.monotonic() + 5.0)
    remaining = {p.pid for p in survivors} | {p.pid for pgid in groups for p in group_members(pgid)}
    return sorted(remaining)
