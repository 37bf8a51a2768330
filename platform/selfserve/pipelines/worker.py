"""The platform's worker: one process serving every project's work pool (``python -m selfserve.pipelines.worker``).

A Prefect process worker serves one pool; one OS process per project would cost ~150 MiB each.
This process runs a :class:`prefect.workers.process.ProcessWorker` per ``ss-<project>`` pool in one
event loop, starting one when a pool appears and stopping it when the pool goes. Each flow run
starts as the launcher (the pools' job template fixes the command), which applies the run's limits.

Polling does not grow with the number of projects: instead of every pool's worker asking Prefect
for its scheduled runs every ``worker_query_seconds``, this process asks once for the pools that
have a run due, and only those pools' workers fetch and submit their runs, at once.

It answers ``GET /health`` on ``pipelines.worker_port`` for the supervisor. Prefect's settings
(API URL, auth string, polling) come from the environment the supervisor gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from selfserve.pipelines.prefect import Prefect
from selfserve.settings import Settings, get_settings

log = logging.getLogger("selfserve.worker")
SYNC_SECONDS = 2.0
PREFETCH_SECONDS = 5.0


def _pool_worker_class() -> type[Any]:
    from prefect.workers.process import ProcessWorker

    class PoolWorker(ProcessWorker):  # type: ignore[misc]
        """A process worker whose own polling loop stays quiet: the host submits its due runs."""

        async def get_and_submit_flow_runs(self) -> list[Any]:
            return []

        async def submit_due(self) -> list[Any]:
            return await ProcessWorker.get_and_submit_flow_runs(self)  # type: ignore[no-any-return]

    return PoolWorker


class WorkerHost:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefect = Prefect.from_settings(settings)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.workers: dict[str, Any] = {}
        self.submitting: dict[str, asyncio.Task[Any]] = {}
        self.stopping = asyncio.Event()
        self.synced = False

    async def serve_pool(self, pool: str) -> None:
        worker_class = _pool_worker_class()
        while not self.stopping.is_set():
            try:
                async with worker_class(
                    work_pool_name=pool,
                    name=f"selfserve-{pool}",
                    create_pool_if_not_found=False,
                    prefetch_seconds=PREFETCH_SECONDS,
                ) as worker:
                    self.workers[pool] = worker
                    try:
                        await worker.start(printer=lambda *a, **k: log.debug(" ".join(map(str, a))))
                    finally:
                        self.workers.pop(pool, None)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the pool or the engine is away; the sync loop decides
                log.warning("worker for %s stopped: %s; restarting", pool, e)
                await asyncio.sleep(2)

    async def submit_due(self) -> None:
        """Ask Prefect once which pools have a run due, and have each of those pools' workers submit."""
        try:
            due = await asyncio.to_thread(self.prefect.due_pools, PREFETCH_SECONDS)
        except Exception as e:
            log.info("cannot read due runs: %s", e)
            return
        for pool in sorted(due):
            worker = self.workers.get(pool)
            busy = self.submitting.get(pool)
            if worker is None or (busy is not None and not busy.done()):
                continue
            self.submitting[pool] = asyncio.create_task(self._submit(pool, worker), name=f"submit-{pool}")

    @staticmethod
    async def _submit(pool: str, worker: Any) -> None:
        try:
            await worker.submit_due()
        except Exception as e:  # the next round asks again
            log.warning("submitting runs of %s failed: %s", pool, e)

    async def poll(self) -> None:
        interval = self.settings.pipelines.worker_query_seconds
        while not self.stopping.is_set():
            await self.submit_due()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), interval)

    async def sync(self) -> None:
        try:
            # A pool nothing is deployed to has nothing to run: it gets no worker (each costs the
            # engine a few long-lived connections).
            pools = {p["name"] for p in await asyncio.to_thread(self.prefect.pools)}
            pools &= await asyncio.to_thread(self.prefect.pools_with_deployments)
        except Exception as e:
            log.info("cannot list work pools yet: %s", e)
            return
        self.synced = True
        for pool in sorted(pools - set(self.tasks)):
            log.info("serving work pool %s", pool)
            self.tasks[pool] = asyncio.create_task(self.serve_pool(pool), name=pool)
        for pool in sorted(set(self.tasks) - pools):
            log.info("work pool %s is gone", pool)
            self.tasks.pop(pool).cancel()
            self.submitting.pop(pool, None)

    async def health(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readline(), 5)
            status = "200 OK" if self.synced else "503 Service Unavailable"
            body = f'{{"pools": {len(self.tasks)}}}'
            head = f"HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            writer.write((head + body).encode())
            await writer.drain()
        writer.close()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        server = await asyncio.start_server(self.health, "127.0.0.1", self.settings.pipelines.worker_port)
        poller = asyncio.create_task(self.poll(), name="poll")
        try:
            while not self.stopping.is_set():
                await self.sync()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), SYNC_SECONDS)
        finally:
            server.close()
            poller.cancel()
            for task in [*self.tasks.values(), *self.submitting.values()]:
                task.cancel()
            await asyncio.gather(poller, *self.tasks.values(), *self.submitting.values(), return_exceptions=True)


def main(argv: Any = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(WorkerHost(get_settings()).run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
