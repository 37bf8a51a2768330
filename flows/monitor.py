"""Built-in flow: one run of a route's monitor.

It reads, through the platform and with the run's project token, the reference dataset version and
the route's prediction log over the monitor's window (live rows only, the newest
``monitoring.max_rows``) with the labels sent for them, computes drift and quality with Evidently
(:mod:`selfserve.monitoring.drift`) and sends the summary and the HTML report back to the platform,
which keeps them and raises an alert when the drift reaches the monitor's threshold. A window with
no traffic is reported as ``no_data``: neither an error nor "no drift".
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from selfserve import Client, InvalidInput, NotFound

MAX_ROWS = 100_000


def _frame(table: Any) -> Any:
    import pandas as pd

    return pd.DataFrame(table.rows, columns=[c.name for c in table.columns])


def _window(client: Client, project: str, route: str, start: datetime, end: datetime) -> tuple[Any, Any]:
    """The live rows of the route's log in [start, end) and the labels sent for their requests."""
    predictions, feedback = f"predictions_{route.replace('-', '_')}", f"feedback_{route.replace('-', '_')}"
    since, until = start.isoformat(), end.isoformat()
    where = f"ts >= TIMESTAMPTZ '{since}' AND ts < TIMESTAMPTZ '{until}' AND NOT shadow AND ok"
    try:
        rows = client.datasets.query(
            project,
            f"SELECT request_id, row, ts, shadow, ok, inputs, prediction FROM {predictions} WHERE {where} "
            f"ORDER BY ts DESC LIMIT {MAX_ROWS}",
            limit=MAX_ROWS,
        )
    except (NotFound, InvalidInput):  # no prediction was ever logged: the dataset does not exist yet
        return _frame_empty(), None
    try:
        labels = client.datasets.query(
            project,
            f"SELECT request_id, label FROM {feedback} WHERE request_id IN "
            f"(SELECT request_id FROM {predictions} WHERE {where})",
            limit=MAX_ROWS,
        )
    except (NotFound, InvalidInput):
        labels = None
    return _frame(rows), None if labels is None else _frame(labels)


def _frame_empty() -> Any:
    import pandas as pd

    columns = ("request_id", "row", "ts", "shadow", "ok", "inputs", "prediction")
    return pd.DataFrame({c: [] for c in columns})


def _monitor(project: str, request: dict[str, Any], log: Any) -> dict[str, Any]:
    import pandas as pd

    from selfserve.monitoring import drift

    route = request["route"]
    with Client() as client:
        mon = client.monitors.get(project, route)
        end = datetime.now(UTC)
        start = end - timedelta(seconds=mon.window_seconds)
        with tempfile.TemporaryDirectory(prefix="selfserve-monitor-") as tmp:
            path = client.datasets.export(
                project, mon.reference_dataset, Path(tmp) / "reference.parquet", version=mon.reference_version
            )
            reference = pd.read_parquet(path)
        predictions, labels = _window(client, project, route, start, end)
        log.info(
            "route %s: %d logged rows in the last %d s; reference %s@%d: %d rows",
            route,
            len(predictions),
            mon.window_seconds,
            mon.reference_dataset,
            mon.reference_version,
            len(reference),
        )
        current = drift.current_frame(predictions, labels)
        result = drift.compute(reference, current, drift_share=mon.drift_share, label=mon.label, task=mon.task)
        summary = {
            "status": result.status,
            "drift_share": result.drift_share,
            "columns": result.columns,
            "quality": result.quality,
            "rows_reference": result.rows_reference,
            "rows_current": result.rows_current,
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "flow_run_id": str(flow_run.get_id() or "") or None,
        }
        recorded = client.monitors.record(project, route, summary, result.html or None)
    drifted = sorted(c for c, v in result.columns.items() if v.get("drifted"))
    log.info("monitor run %d: %s; drift share %s; drifted: %s", recorded.id, result.status, result.drift_share, drifted)
    return {"run": recorded.id, "status": result.status, "drift_share": result.drift_share, "drifted": drifted}


@flow(name="selfserve-monitor", description="Drift and quality of a route's predictions against its reference.")
async def monitor(project: str, request: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(_monitor, project, request, get_run_logger())
