"""The platform's worker: one process serving every project's work pool (``python -m selfserve.pipelines.worker``).

A Prefect process worker serves one pool and holds several long-lived connections to the engine
(its own client, a runner, event and cancellation subscriptions); with a few dozen projects the
engine stops answering. This process does a process worker's job for all ``ss-<project>`` pools
with a handful of plain API calls instead:

- every ``pipelines.worker_query_seconds`` it asks once which pools have a run due; for each such
  pool it takes the runs Prefect hands out (``get_scheduled_flow_runs``, which honours the pool's
  concurrency limit: the project's ``runs`` quota), moves each to PENDING (Prefect's orchestration
  may refuse, and then the run is not started) and starts the launcher for it;
- the launcher (``selfserve.pipelines.launch``) applies the run's limits and reports its end; when
  a launcher exits with an error and the run is not final, the run is marked crashed;
- a run set to CANCELLING (``run cancel``, or its project being deleted) has its launcher stopped,
  and is then marked cancelled.

On ``pipelines.worker_port`` it answers ``GET /health`` for the supervisor, and ``POST /nudge``
from the API (with the runner key) when a run was just created, so the run starts without waiting
for the next round. The engine's URL and auth string come from the platform's settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from selfserve.control_http import serve_json
from selfserve.pipelines.prefect import FINAL_STATES, Prefect, launcher_argv, parse_time
from selfserve.settings import Settings, get_settings, inherited_environ

log = logging.getLogger("selfserve.worker")
PREFETCH_SECONDS = 5.0
# How many runs of one pool are taken per round (Prefect also caps it at the pool's free slots).
TAKE_PER_ROUND = 10
# A run left CANCELLING with no launcher here (its worker was replaced) is marked cancelled after this.
ORPHAN_CANCEL_SECONDS = 30.0
STOP_GRACE_SECONDS = 15.0


@dataclass
class Launch:
    flow_run_id: str
    pool: str
    process: asyncio.subprocess.Process
    cancelling: bool = False


class WorkerHost:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefect = Prefect.from_settings(settings)
        self.launches: dict[str, Launch] = {}
        self.watchers: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.nudged = asyncio.Event()
        self.synced = False
        self.runner_key = settings.runner_key()

    # -- Prefect calls (the client is synchronous: each call runs in a thread) -------------------

    async def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.prefect.request, method, path, json=body, **kwargs)

    async def scheduled_runs(self, pool: str) -> list[dict[str, Any]]:
        before = datetime.now(UTC) + timedelta(seconds=PREFETCH_SECONDS)
        body = {"scheduled_before": before.isoformat(), "limit": TAKE_PER_ROUND}
        answer = await self.call("POST", f"work_pools/{pool}/get_scheduled_flow_runs", body, ok404=True)
        return [entry["flow_run"] for entry in answer or []]

    async def to_pending(self, flow_run_id: str) -> bool:
        """Ask Prefect to move the run to PENDING; False when it refuses (another worker took it, it was
        cancelled, a concurrency rule holds it back)."""
        body = {"state": {"type": "PENDING", "name": "Pending"}, "force": False}
        answer = await self.call("POST", f"flow_runs/{flow_run_id}/set_state", body, ok404=True)
        return bool(answer) and answer.get("status") == "ACCEPT"

    async def mark(
        self, flow_run_id: str, state_type: str, message: str | None, *, unless: set[str], name: str | None = None
    ) -> None:
        """Set the run's state unless it is already in one of ``unless``; ``message`` None keeps the current
        state's message. Best effort: a run Prefect no longer has, or an engine away, is left as it is."""
        with contextlib.suppress(Exception):
            fr = await self.call("GET", f"flow_runs/{flow_run_id}", ok404=True)
            if fr is None or fr["state"]["type"] in unless:
                return
            text = message or fr["state"].get("message") or "cancelled"
            await asyncio.to_thread(self.prefect.set_state, flow_run_id, state_type, text, name=name)

    async def crashed(self, flow_run_id: str, message: str) -> None:
        await self.mark(flow_run_id, "CRASHED", message, unless=FINAL_STATES)

    async def cancelled(self, flow_run_id: str) -> None:
        await self.mark(flow_run_id, "CANCELLED", None, unless={"CANCELLED"}, name="Cancelled")

    # -- submission ---------------------------------------------------------------------------

    async def submit_due(self) -> None:
        """Ask Prefect once which pools have a run due, then take and start those pools' runs."""
        try:
            due = await asyncio.to_thread(self.prefect.due_pools, PREFETCH_SECONDS)
        except Exception as e:
            log.info("cannot read due runs: %s", e)
            return
        self.synced = True
        for pool in sorted(p for p in due if p.startswith("ss-")):
            try:
                runs = await self.scheduled_runs(pool)
            except Exception as e:  # the next round asks again
                log.warning("cannot take the runs of %s: %s", pool, e)
                continue
            for fr in runs:
                run_id = str(fr["id"])
                if run_id in self.launches:
                    continue
                try:
                    if await self.to_pending(run_id):
                        await self.launch(pool, run_id)
                except Exception as e:
                    log.warning("cannot start run %s of %s: %s", run_id, pool, e)
                    await self.crashed(run_id, f"the worker could not start the run: {e}")

    async def launch(self, pool: str, flow_run_id: str) -> None:
        env = {**inherited_environ(), "PREFECT__FLOW_RUN_ID": flow_run_id}
        process = await asyncio.create_subprocess_exec(*launcher_argv(), env=env, stdin=asyncio.subprocess.DEVNULL)
        launch = Launch(flow_run_id, pool, process)
        self.launches[flow_run_id] = launch
        log.info("started run %s of %s (launcher pid %s)", flow_run_id, pool, process.pid)
        task = asyncio.create_task(self.watch(launch), name=f"run-{flow_run_id}")
        self.watchers.add(task)
        task.add_done_callback(self.watchers.discard)

    async def watch(self, launch: Launch) -> None:
        try:
            rc = await launch.process.wait()
        finally:
            self.launches.pop(launch.flow_run_id, None)
        log.info("run %s ended (launcher exit code %s)", launch.flow_run_id, rc)
        if launch.cancelling:
            await self.cancelled(launch.flow_run_id)
        elif self.stopping.is_set():
            await self.crashed(launch.flow_run_id, "the platform's worker stopped while the run was in flight")
        elif rc != 0:
            await self.crashed(launch.flow_run_id, f"the run's launcher exited with code {rc}")

    # -- cancellation ---------------------------------------------------------------------------

    async def cancel_requested(self) -> None:
        """Stop the launchers of runs set to CANCELLING; mark cancelled the ones no launcher holds."""
        body = {"flow_runs": {"state": {"type": {"any_": ["CANCELLING"]}}}, "limit": 200}
        try:
            runs = await self.call("POST", "flow_runs/filter", body)
        except Exception as e:
            log.info("cannot read cancelling runs: %s", e)
            return
        now = datetime.now(UTC)
        for fr in runs or []:
            run_id = str(fr["id"])
            launch = self.launches.get(run_id)
            if launch is not None:
                if not launch.cancelling:
                    launch.cancelling = True
                    log.info("cancelling run %s", run_id)
                    with contextlib.suppress(ProcessLookupError):
                        launch.process.send_signal(signal.SIGTERM)
                continue
            if not str(fr.get("work_pool_name") or "").startswith("ss-"):
                continue
            since = parse_time(fr["state"].get("timestamp"))
            if since is None or (now - since).total_seconds() > ORPHAN_CANCEL_SECONDS:
                await self.cancelled(run_id)

    # -- loop -----------------------------------------------------------------------------------

    async def poll(self) -> None:
        interval = self.settings.pipelines.worker_query_seconds
        while not self.stopping.is_set():
            self.nudged.clear()
            await self.submit_due()
            await self.cancel_requested()
            wake = [asyncio.ensure_future(self.stopping.wait()), asyncio.ensure_future(self.nudged.wait())]
            await asyncio.wait(wake, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            for waiter in wake:
                waiter.cancel()

    async def answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[str, Any]:
        """``GET /health`` and ``POST /nudge`` (which must carry the runner key); nothing else."""
        if method == "GET" and path == "/health":
            return ("200 OK" if self.synced else "503 Service Unavailable"), {"running": len(self.launches)}
        if method == "POST" and path == "/nudge":
            if hmac.compare_digest(headers.get("authorization", ""), f"Bearer {self.runner_key}"):
                self.nudged.set()
                return "202 Accepted", {}
            return "401 Unauthorized", {"error": "a nudge needs the runner key"}
        return "404 Not Found", {"error": "not found"}

    async def serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_json(reader, writer, self.answer)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        pipes = self.settings.pipelines
        server = await asyncio.start_server(self.serve_http, pipes.worker_host, pipes.worker_port)
        try:
            await self.poll()
        finally:
            server.close()
            # Runs in flight end with the worker (their launchers die with it); the API marks them
            # crashed once their heartbeats stop.
            for launch in list(self.launches.values()):
                with contextlib.suppress(ProcessLookupError):
                    launch.process.send_signal(signal.SIGTERM)
            if self.watchers:
                await asyncio.wait(list(self.watchers), timeout=STOP_GRACE_SECONDS)
            for launch in list(self.launches.values()):
                with contextlib.suppress(ProcessLookupError):
                    launch.process.kill()
            self.prefect.close()


def main(argv: Any = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(WorkerHost(get_settings()).run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
