"""Built-in flow: run a SQL or Polars transform into a dataset version, through the platform API."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger

from selfserve import Client


def _transform(project: str, request: dict[str, Any], log: Any) -> dict[str, Any]:
    options = dict(request)
    to = options.pop("to")
    with Client() as client:
        job = client.datasets.transform(project, to, wait=False, **options)
        log.info("transform job %s -> %s", job.id, to)
        done = client.jobs.wait(project, job.id, poll=0.5)
    result = done.result or {}
    log.info("dataset %s version %s: %s rows", to, result.get("version"), result.get("rows"))
    return result


@flow(name="selfserve-transform", description="Run a SQL or Polars transform into a dataset version.")
async def transform(project: str, request: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(_transform, project, request, get_run_logger())
