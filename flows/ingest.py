"""Built-in flow: ingest a source into a dataset version, through the platform API.

The run holds only its project's token: the read and the commit happen in the platform, which
checks the storage quota, the contract and the schema; the flow waits and logs progress.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger

from selfserve import Client


def _ingest(project: str, request: dict[str, Any], log: Any) -> dict[str, Any]:
    options = dict(request)
    source, to = options.pop("source"), options.pop("to")
    with Client() as client:
        job = client.datasets.ingest(project, source, to, wait=False, **options)
        log.info("ingest job %s: %s -> %s", job.id, source, to)
        seen: list[int] = [-1]

        def progress(j: Any) -> None:
            rows = int(j.progress.get("rows_read", 0) or 0)
            if rows != seen[0]:
                seen[0] = rows
                log.info("rows read: %s", f"{rows:,}")

        done = client.jobs.wait(project, job.id, on_progress=progress, poll=0.5)
    result = done.result or {}
    log.info("dataset %s version %s: %s rows", to, result.get("version"), result.get("rows"))
    return result


@flow(name="selfserve-ingest", description="Ingest a source into a dataset version.")
async def ingest(project: str, request: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(_ingest, project, request, get_run_logger())
