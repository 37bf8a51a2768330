"""The serving runtime (``python -m selfserve.serving.runtime``): one process runs every deployment's BentoML server.

The API writes the wish, a ``serving_deployments`` row (state ``pending``, the model file's object-store
key and its input columns), and deletes the row to stop serving. This process makes it so and writes
back what is: ``state``, ``port``, ``pid``, ``restarts``, ``last_error`` and ``ready_at``.

- Every ``serving.poll_seconds`` (or at once when the API nudges it) it compares the rows with the
  servers it runs. For a new row it copies the model file from the object store to
  ``<home>/serving/models/<id>-<version>/model.skops``, picks a free port and starts
  ``bentoml serve selfserve.serving.bento_service:Deployment`` there (its own session, output to
  ``<log_dir>/serving/<id>.log``, an environment without the platform's secrets): ``starting``.
- It polls the server's ``/readyz`` until it answers 200 (``ready``, ``ready_at``), then checks it every
  ``serving.health_seconds``. A server that exits, fails ``HEALTH_FAILURES`` checks in a row, or is not
  ready within ``serving.ready_timeout`` (or whose service fails to load the model: BentoML then starts
  its worker again and again and stays up) is killed and started again after 1, 2, 4 ... seconds (at most
  ``serving.restart_backoff_max``): ``restarting``, ``restarts`` + 1, ``last_error`` its log's last lines.
  After ``MAX_FAILED_STARTS`` attempts in a row that never became ready, the deployment is ``failed``
  and left alone; setting its state back to ``pending`` asks for another try.
- A deleted row has its server stopped: SIGTERM, then SIGKILL after ``STOP_GRACE_SECONDS``.
- BentoML's workers leave the server's process group (they call setsid) and keep serving the port
  when the server is killed, so each start carries a token in its environment by which every process
  of that start is found and stopped. At start the runtime stops the servers a previous runtime left
  (their pids are in the rows; their workers are found by the same environment), then starts them again.
- On SIGTERM it stops every server and marks their rows ``pending``.

On ``serving.runtime_host:serving.runtime_port`` it answers ``GET /health`` (200 once it has read the
deployments), and, with the runner key as a Bearer token, ``POST /nudge`` and
``GET /deployments/<id>/logs?tail=N`` (``{"lines": [...]}``, the last N lines of the deployment's log).

Each database write is one short transaction, so the metadata DB may be SQLite (WAL) or PostgreSQL.
A ready deployment is reached at ``http://<serving.deployment_url_host or deployment_host>:<port>/predict``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from selfserve.control_http import serve_json
from selfserve.serving import INPUTS_ENV, MODEL_FILE_ENV
from selfserve.settings import Settings, get_settings, inherited_environ

log = logging.getLogger("selfserve.serving.runtime")

BENTO_SERVICE = "selfserve.serving.bento_service:Deployment"
# Set on every process of one start of a deployment (BentoML passes its environment to its workers).
RUN_ENV = "SELFSERVE_SERVING_RUN"
MODEL_FILE = "model.skops"
HEALTH_PATH = "/readyz"
# What BentoML logs when the service's __init__ raises (a model it cannot load): it then starts the worker
# again and again while the server itself stays up, so the log is the only sign.
STARTUP_FAILED = b"Application startup failed"
HEALTH_FAILURES = 3
MAX_FAILED_STARTS = 5
STOP_GRACE_SECONDS = 10.0
PROBE_TIMEOUT = 2.0
ERROR_LINES = 15
ERROR_CHARS = 2000
LOG_TAIL_DEFAULT = 100
LOG_TAIL_MAX = 10_000
LOG_ROTATE_BYTES = 10 * 2**20
# Variables a deployment never inherits: the platform's settings (the DB URL, storage keys, the secret
# key) and anything named like a credential. BentoML gets only what it needs to run the model.
_DROPPED_PREFIXES = ("SELFSERVE_", "AWS_", "MLFLOW_", "PREFECT_", "PG", "BENTOML_")
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|AUTH|PRIVATE|(^|_)KEY(_|S?$)", re.IGNORECASE)
_KEPT = {"SELFSERVE_CONFIG_FILE"}
_LOGS_PATH = re.compile(r"^/deployments/(\d{1,18})/logs$")


def backoff(attempt: int, cap: float) -> float:
    """Seconds before another try after ``attempt`` failures in a row: 1, 2, 4 ... at most ``cap``."""
    return float(min(cap, 2.0 ** max(0, attempt - 1)))


def child_environ(settings: Settings, model_file: Path, inputs: list[dict[str, Any]], run: str) -> dict[str, str]:
    """The environment of a deployment's BentoML server: the inherited one without platform settings or
    credentials, plus what the service reads."""
    env = {
        k: v
        for k, v in inherited_environ().items()
        if k in _KEPT or not (k.startswith(_DROPPED_PREFIXES) or _SECRET_NAME.search(k))
    }
    env.update(
        {
            "BENTOML_HOME": str(settings.home / "serving" / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "PYTHONUNBUFFERED": "1",
            "SELFSERVE_HOME": str(settings.home),
            "SELFSERVE_SERVING__WORKERS": str(settings.serving.workers),
            "SELFSERVE_SERVING__PREDICT_TIMEOUT": str(settings.serving.predict_timeout),
            MODEL_FILE_ENV: str(model_file),
            INPUTS_ENV: json.dumps([{"name": c["name"], "type": c.get("type", "")} for c in inputs]),
            RUN_ENV: run,
        }
    )
    return env


def tail_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of a file (read from its end), without their line ends.

    Raises:
        FileNotFoundError: no such file.
    """
    if n <= 0:
        return []
    block = 64 * 1024
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= n:
            start = max(0, end - block)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-n:]


# -- processes ------------------------------------------------------------------------------------


def _read_proc(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _cmdline(pid: int) -> str:
    return _read_proc(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace")


def _environ(pid: int) -> dict[str, str]:
    env = {}
    for item in _read_proc(pid, "environ").split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            env[key] = value
    return env


def _pids() -> list[int]:
    try:
        return [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, waiting for its parent to reap it, does not)."""
    stat = _read_proc(pid, "stat")
    if not stat:
        return False
    state = stat.rsplit(b")", 1)[-1].split()[:1]
    return state not in ([b"Z"], [b"X"], [])


def run_processes(run: str) -> list[int]:
    """The live processes of one start of a deployment (the server and its workers)."""
    me = os.getpid()
    return sorted(
        pid for pid in _pids() if pid != me and _environ(pid).get(RUN_ENV) == run and "bentoml" in _cmdline(pid)
    )


def leftovers(models_root: Path, recorded: Iterable[int] = ()) -> list[int]:
    """BentoML processes serving this platform's deployments that no runtime holds any more.

    A process is one of them when its command line names bentoml and either it is a pid recorded in a
    row and runs this platform's service, or its environment names a model file under ``models_root``
    (which also finds the workers of a server that was killed, and those of servers whose rows are gone).
    """
    root = str(models_root) + os.sep
    me = os.getpid()
    found = set()
    recorded = set(recorded)
    for pid in _pids():
        if pid == me:
            continue
        cmdline = _cmdline(pid)
        if "bentoml" not in cmdline:
            continue
        if (pid in recorded and BENTO_SERVICE in cmdline) or _environ(pid).get(MODEL_FILE_ENV, "").startswith(root):
            found.add(pid)
    return sorted(found)


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def end_processes(pids: Iterable[int], grace: float, find: Any = None) -> list[int]:
    """SIGTERM ``pids`` (and what ``find()`` names then), SIGKILL those alive after ``grace`` seconds.

    Returns:
        The pids still alive at the end (none unless the OS refused).
    """
    targets = set(pids) | set(find() if find else ())
    if grace > 0:
        _signal(targets, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(_alive(p) for p in targets) and time.monotonic() < deadline:
            time.sleep(0.1)
    targets |= set(find() if find else ())
    _signal([p for p in targets if _alive(p)], signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while any(_alive(p) for p in targets) and time.monotonic() < deadline:
        time.sleep(0.05)
    return sorted(p for p in targets if _alive(p))


def free_port(host: str, preferred: int | None = None) -> int:
    """``preferred`` when nothing listens on it, else a port the OS picks."""
    if preferred:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# -- deployments ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    """A deployment row, as the runtime reads it."""

    id: int
    version: int
    artifact: str
    signature: list[dict[str, Any]]
    state: str
    pid: int | None
    port: int | None
    restarts: int
    created_at: datetime | None

    @property
    def identity(self) -> tuple[Any, ...]:
        """What makes the row the same deployment (an id may be used again after a delete)."""
        return (self.version, self.artifact, self.created_at)


@dataclass
class Child:
    """One deployment's server, as the runtime drives it."""

    wanted: Wanted
    model_file: Path
    log_path: Path
    state: str = "pending"
    process: subprocess.Popen[bytes] | None = None
    run: str = ""
    port: int | None = None
    restarts: int = 0
    failures: int = 0  # tries in a row that did not become ready (or crashed since)
    started: float = 0.0
    next_start: float = 0.0
    next_check: float = 0.0
    bad_checks: int = 0
    log_offset: int = 0  # where this start's output begins in the log
    fetched: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def id(self) -> int:
        return self.wanted.id


class ServingRuntime:
    """The runtime's state and loop; :meth:`run` until SIGTERM."""

    def __init__(self, settings: Settings, store: Any = None, object_store: Any = None) -> None:
        self.settings = settings
        self._store = store
        self._object_store = object_store
        self.children: dict[int, Child] = {}
        self.failed: set[int] = set()
        self.stoppers: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.nudged = asyncio.Event()
        self.synced = False
        self.runner_key = settings.runner_key()
        self.models_root = settings.home / "serving" / "models"
        self.logs_root = settings.log_dir / "serving"
        self._http: Any = None

    # -- collaborators (made on first use: the HTTP side needs neither) ---------------------------

    @property
    def store(self) -> Any:
        if self._store is None:
            from selfserve.store import Store

            self._store = Store(self.settings.database_url)
        return self._store

    @property
    def object_store(self) -> Any:
        if self._object_store is None:
            from selfserve.data.objectstore import from_settings

            self._object_store = from_settings(self.settings)
        return self._object_store

    @property
    def probe_host(self) -> str:
        from selfserve.runtime._services import local_address

        return local_address(self.settings.serving.deployment_host)

    def log_path(self, deployment_id: int) -> Path:
        return self.logs_root / f"{deployment_id}.log"

    # -- the metadata DB (synchronous; called in threads) ------------------------------------------

    def read_rows(self) -> list[Wanted]:
        from sqlalchemy import select

        from selfserve.store.tables import ServingDeployment as D

        stmt = select(D.id, D.version, D.artifact, D.signature, D.state, D.pid, D.port, D.restarts, D.created_at)
        with self.store.session() as session:
            return [
                Wanted(
                    id=int(r.id),
                    version=int(r.version),
                    artifact=str(r.artifact),
                    signature=list(r.signature or []),
                    state=str(r.state),
                    pid=r.pid,
                    port=r.port,
                    restarts=int(r.restarts or 0),
                    created_at=r.created_at,
                )
                for r in session.execute(stmt.order_by(D.id))
            ]

    def write_row(self, deployment_id: int, **values: Any) -> None:
        """Update one row in its own short transaction (a row deleted meanwhile is left deleted)."""
        from sqlalchemy import update

        from selfserve.store.tables import ServingDeployment as D

        with self.store.begin() as session:
            session.execute(update(D).where(D.id == deployment_id).values(**values))

    async def write(self, child: Child, **values: Any) -> None:
        try:
            await asyncio.to_thread(self.write_row, child.id, **values)
        except Exception as e:  # reconcile() writes the state again when it finds the row behind
            log.warning("cannot record deployment %s as %s: %s", child.id, values.get("state"), e)

    # -- one deployment ---------------------------------------------------------------------------

    def fetch_model(self, child: Child) -> None:
        """Copy the model file from the object store; a restart uses the copy made for the first start."""
        if child.fetched and child.model_file.is_file():
            return
        data = self.object_store.get_bytes(child.wanted.artifact)
        child.model_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = child.model_file.with_name(f".{child.model_file.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(child.model_file)
        child.fetched = True

    def command(self, port: int) -> list[str]:
        """The command line of a deployment's server on ``port``."""
        host = self.settings.serving.deployment_host
        return [sys.executable, "-m", "bentoml", "serve", BENTO_SERVICE, "--host", host, "--port", str(port)]

    def spawn(self, child: Child) -> None:
        """Start the child's BentoML server on a free port; output appended to its log."""
        child.port = free_port(self.settings.serving.deployment_host, child.port)
        child.run = f"{child.id}-{secrets.token_hex(8)}"
        argv = self.command(child.port)
        env = child_environ(self.settings, child.model_file, child.wanted.signature, child.run)
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        if child.log_path.exists() and child.log_path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(child.log_path, child.log_path.with_name(child.log_path.name + ".1"))
        (self.settings.home / "serving" / "bentoml").mkdir(parents=True, exist_ok=True)
        with open(child.log_path, "ab") as out:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            out.write(f"--- {stamp} selfserve: starting version {child.wanted.version} on port {child.port}\n".encode())
            out.flush()
            child.log_offset = out.tell()
            child.process = subprocess.Popen(
                argv,
                env=env,
                cwd=child.model_file.parent,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child.started = time.monotonic()

    def error_text(self, child: Child, reason: str) -> str:
        """``reason`` and the last lines of the deployment's log, short enough for a row and a message."""
        reason = reason[: ERROR_CHARS // 2]
        try:
            lines = [ln for ln in tail_lines(child.log_path, ERROR_LINES) if not ln.startswith("--- ")]
        except OSError:
            lines = []
        tail = "\n".join(lines)
        room = ERROR_CHARS - len(reason) - 2
        if len(tail) > room:
            tail = "..." + tail[-(room - 3) :]
        return reason + (":\n" + tail if tail else "")

    def startup_failed(self, child: Child) -> bool:
        """Whether the service failed to start since the log was last read (BentoML stays up regardless)."""
        try:
            with open(child.log_path, "rb") as f:
                f.seek(max(0, child.log_offset - len(STARTUP_FAILED)))
                new = f.read()
        except OSError:
            return False
        child.log_offset += max(0, len(new) - len(STARTUP_FAILED))
        return STARTUP_FAILED in new

    async def launch(self, child: Child) -> None:
        try:
            await asyncio.to_thread(self.fetch_model, child)
        except FileNotFoundError:
            reason = f"the model file {child.wanted.artifact!r} is not in the platform's storage"
            await self.give_up(child, reason, with_log=False)
            return
        except Exception as e:
            await self.setback(child, f"cannot copy the model file from storage: {type(e).__name__}: {e}")
            return
        try:
            # In the loop, not a thread: a cancelled task must never leave a server started behind it.
            self.spawn(child)
        except Exception as e:
            await self.setback(child, f"cannot start BentoML: {type(e).__name__}: {e}")
            return
        assert child.process is not None
        child.state = "starting"
        log.info("deployment %s: starting on port %s (pid %s)", child.id, child.port, child.process.pid)
        await self.write(child, state="starting", port=child.port, pid=child.process.pid)

    async def probe(self, child: Child) -> bool:
        import httpx

        try:
            r = await self._http.get(f"http://{self.probe_host}:{child.port}{HEALTH_PATH}")
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def kill(self, child: Child, grace: float = 0.0) -> None:
        """End every process of the child's current start, and reap the server."""
        process, run = child.process, child.run
        child.process = None
        if process is None:
            return
        pids = [process.pid] if process.poll() is None else []
        await asyncio.to_thread(end_processes, pids, grace, lambda: run_processes(run))
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(process.wait, 5)

    async def setback(self, child: Child, reason: str) -> None:
        """The try failed: kill what is left, then try again later, or give up after too many tries."""
        await self.kill(child)
        child.failures += 1
        child.restarts += 1
        if child.failures >= MAX_FAILED_STARTS:
            await self.give_up(child, f"{reason}; {child.failures} starts in a row failed: given up")
            return
        error = self.error_text(child, reason)
        wait = backoff(child.failures, self.settings.serving.restart_backoff_max)
        child.state = "restarting"
        child.next_start = time.monotonic() + wait
        log.warning("deployment %s: %s; restarting in %g s", child.id, reason, wait)
        await self.write(child, state="restarting", pid=None, restarts=child.restarts, last_error=error)

    async def give_up(self, child: Child, reason: str, *, with_log: bool = True) -> None:
        """Mark the deployment failed and leave it alone (until its row asks for another try)."""
        await self.kill(child)
        child.state = "failed"
        error = self.error_text(child, reason) if with_log else reason[:ERROR_CHARS]
        log.error("deployment %s failed: %s", child.id, reason)
        await self.write(child, state="failed", pid=None, restarts=child.restarts, last_error=error)
        self.failed.add(child.id)
        if self.children.get(child.id) is child:
            del self.children[child.id]

    async def supervise(self, child: Child) -> None:
        """Drive one deployment until it is stopped (the task is cancelled) or fails for good."""
        serving = self.settings.serving
        while child.state != "failed":
            if child.process is None:
                await asyncio.sleep(max(0.0, child.next_start - time.monotonic()))
                await self.launch(child)
                continue
            code = child.process.poll()
            if code is not None:
                await self.setback(child, f"the server exited with code {code}")
            elif child.state == "starting":
                if await self.probe(child):
                    child.state, child.failures, child.bad_checks = "ready", 0, 0
                    child.next_check = time.monotonic() + serving.health_seconds
                    log.info("deployment %s: ready on port %s", child.id, child.port)
                    await self.write(child, state="ready", ready_at=datetime.now(UTC))
                elif self.startup_failed(child):
                    await self.setback(child, "the service failed to start (its model could not be loaded)")
                elif time.monotonic() - child.started > serving.ready_timeout:
                    await self.setback(child, f"the server was not ready within {serving.ready_timeout:g} s")
                else:
                    await asyncio.sleep(serving.poll_seconds)
            else:
                if time.monotonic() >= child.next_check:
                    child.next_check = time.monotonic() + serving.health_seconds
                    if await self.probe(child):
                        child.bad_checks = 0
                    else:
                        child.bad_checks += 1
                        if child.bad_checks >= HEALTH_FAILURES:
                            await self.setback(child, f"the server failed {child.bad_checks} health checks in a row")
                            continue
                await asyncio.sleep(serving.poll_seconds)

    # -- all deployments --------------------------------------------------------------------------

    def adopt(self, row: Wanted) -> None:
        child = Child(
            wanted=row,
            model_file=self.models_root / f"{row.id}-{row.version}" / MODEL_FILE,
            log_path=self.log_path(row.id),
            port=row.port,
            restarts=row.restarts,
        )
        self.children[row.id] = child
        self.failed.discard(row.id)
        child.task = asyncio.create_task(self.supervise(child), name=f"deployment-{row.id}")

    def retire(self, child: Child, *, gone: bool) -> None:
        """Stop a child's server in the background; ``gone``: its row was deleted (its files go too)."""
        if self.children.get(child.id) is child:
            del self.children[child.id]
        task = asyncio.create_task(self._retire(child, gone), name=f"stop-{child.id}")
        self.stoppers.add(task)
        task.add_done_callback(self.stoppers.discard)

    async def _retire(self, child: Child, gone: bool) -> None:
        if child.task is not None:
            child.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await child.task
        await self.kill(child, STOP_GRACE_SECONDS)
        log.info("deployment %s: stopped", child.id)
        if gone and child.id not in self.children:
            shutil.rmtree(child.model_file.parent, ignore_errors=True)
            for path in (child.log_path, child.log_path.with_name(child.log_path.name + ".1")):
                path.unlink(missing_ok=True)

    async def reconcile(self) -> None:
        """Compare the rows with the children: start the new, stop the deleted (or replaced)."""
        try:
            rows = await asyncio.to_thread(self.read_rows)
        except Exception as e:
            log.warning("cannot read the deployments: %s", e)
            return
        self.synced = True
        wanted = {r.id: r for r in rows}
        self.failed &= set(wanted)
        for child in list(self.children.values()):
            row = wanted.get(child.id)
            if row is None or row.identity != child.wanted.identity:
                self.retire(child, gone=row is None)
            elif child.state in ("starting", "ready", "restarting") and row.state != child.state:
                # A write that failed (the DB was away): the row says what the runtime no longer does.
                pid = child.process.pid if child.process is not None else None
                await self.write(child, state=child.state, port=child.port, pid=pid, restarts=child.restarts)
        for row in rows:
            if row.id in self.children:
                continue
            if row.state == "failed" or (row.id in self.failed and row.state != "pending"):
                continue
            self.adopt(row)

    async def clear_leftovers(self) -> None:
        """Stop the servers a previous runtime left running; their rows are started again."""
        try:
            recorded = [r.pid for r in await asyncio.to_thread(self.read_rows) if r.pid]
        except Exception:
            recorded = []
        pids = await asyncio.to_thread(leftovers, self.models_root, recorded)
        if pids:
            log.info("stopping %d BentoML process(es) left by a previous runtime: %s", len(pids), pids)
            await asyncio.to_thread(end_processes, pids, STOP_GRACE_SECONDS)

    async def poll(self) -> None:
        while not self.stopping.is_set():
            self.nudged.clear()
            await self.reconcile()
            wake = [asyncio.ensure_future(self.stopping.wait()), asyncio.ensure_future(self.nudged.wait())]
            await asyncio.wait(wake, timeout=self.settings.serving.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiter in wake:
                waiter.cancel()

    async def shutdown(self) -> None:
        """Stop every server (together, within one grace period) and mark their rows pending."""
        children = list(self.children.values())
        self.children.clear()
        for child in children:
            if child.task is not None:
                child.task.cancel()
        for child in children:
            if child.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await child.task
        await asyncio.gather(*(self.kill(child, STOP_GRACE_SECONDS) for child in children))
        if self.stoppers:
            await asyncio.wait(list(self.stoppers), timeout=STOP_GRACE_SECONDS + 6)
        for child in children:
            await self.write(child, state="pending", pid=None)

    # -- HTTP -------------------------------------------------------------------------------------

    def authorized(self, headers: dict[str, str]) -> bool:
        return hmac.compare_digest(headers.get("authorization", ""), f"Bearer {self.runner_key}")

    async def answer(self, method: str, target: str, headers: dict[str, str]) -> tuple[str, Any]:
        """(status line, JSON body) for one request."""
        url = urlsplit(target)
        logs = _LOGS_PATH.match(url.path)
        if url.path == "/health":
            if method != "GET":
                return "405 Method Not Allowed", {"error": "use GET"}
            ready = sum(1 for c in self.children.values() if c.state == "ready")
            body = {"deployments": len(self.children), "ready": ready}
            return ("200 OK" if self.synced else "503 Service Unavailable"), body
        if (url.path == "/nudge" or logs) and not self.authorized(headers):
            return "401 Unauthorized", {"error": "this endpoint needs the runner key"}
        if url.path == "/nudge":
            if method != "POST":
                return "405 Method Not Allowed", {"error": "use POST"}
            self.nudged.set()
            return "202 Accepted", {}
        if logs:
            if method != "GET":
                return "405 Method Not Allowed", {"error": "use GET"}
            raw = (parse_qs(url.query).get("tail") or [str(LOG_TAIL_DEFAULT)])[0]
            if not raw.isdigit() or not 0 < int(raw) <= LOG_TAIL_MAX:
                return "422 Unprocessable Entity", {"error": f"tail must be a number from 1 to {LOG_TAIL_MAX}"}
            try:
                lines = await asyncio.to_thread(tail_lines, self.log_path(int(logs[1])), int(raw))
            except FileNotFoundError:
                return "404 Not Found", {"error": f"no log for deployment {logs[1]}"}
            return "200 OK", {"lines": lines}
        return "404 Not Found", {"error": "not found"}

    async def serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_json(reader, writer, self.answer)

    # -- the process ------------------------------------------------------------------------------

    async def run(self) -> None:
        import httpx

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        serving = self.settings.serving
        server = await asyncio.start_server(self.serve_http, serving.runtime_host, serving.runtime_port)
        # Health checks go to this machine's deployments: a proxy from the environment must not take them.
        self._http = httpx.AsyncClient(timeout=PROBE_TIMEOUT, trust_env=False)
        try:
            await self.clear_leftovers()
            await self.poll()
        finally:
            server.close()
            await self.shutdown()
            await self._http.aclose()
            if self._store is not None:
                self._store.dispose()


def main(argv: Any = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per health check says nothing
    asyncio.run(ServingRuntime(get_settings()).run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
