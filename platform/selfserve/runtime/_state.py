"""The supervisor's record of what it started: ``<run_dir>/state.json``, written atomically."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from selfserve.errors import Conflict, SelfServeError

STATE_FILE = "state.json"
LOCK_FILE = "supervisor.lock"
VERSION = 1


@dataclass
class ServiceRecord:
    """One started service process.

    ``create_time`` is the OS's start time of ``pid`` (psutil), so that a pid reused by an
    unrelated process after a crash or reboot is never taken for the service.
    """

    name: str
    pid: int
    pgid: int
    port: int
    url: str
    health_url: str
    log: str
    started_at: str
    create_time: float
    ready_seconds: float | None = None


@dataclass
class State:
    services: list[ServiceRecord] = field(default_factory=list)
    started_at: str = ""
    version: int = VERSION

    def get(self, name: str) -> ServiceRecord | None:
        return next((s for s in self.services if s.name == name), None)


def state_path(run_dir: Path) -> Path:
    return run_dir / STATE_FILE


def load(path: Path) -> State | None:
    """The recorded state, or None when there is none.

    Raises:
        SelfServeError: the file exists but cannot be read as a state.
    """
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise SelfServeError(f"cannot read {path}: {e}; if no selfserve process runs, delete the file") from None
    try:
        services = [ServiceRecord(**s) for s in raw["services"]]
        return State(services=services, started_at=raw.get("started_at", ""), version=raw.get("version", VERSION))
    except (KeyError, TypeError) as e:
        raise SelfServeError(f"{path} is not a selfserve state file ({e}); delete it if nothing runs") from None


def save(path: Path, state: State) -> None:
    """Write the state so that a reader sees the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data: dict[str, Any] = asdict(state)
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the supervisor lock, so that two ``up``/``down`` never interleave.

    Raises:
        Conflict: another ``selfserve up`` or ``down`` holds the lock.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict("another `selfserve up` or `selfserve down` is in progress; wait for it") from None
        yield
    finally:
        os.close(fd)
