"""Built-in flow: one run of a route's monitor.

It reads, through the platform and with the run's project token, the reference dataset version and
the route's prediction log (its newest version as Parquet, cut to the monitor's window: live rows
only, the newest ``MAX_ROWS``) with the labels sent for them, computes drift and quality with Evidently
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

from selfserve import Client, NotFound

MAX_ROWS = 100_000


def _window(client: Client, project: str, route: str, start: datetime, end: datetime, tmp: Path) -> tuple[Any, Any]:
    """The live rows of the route's log in [start, end) (the newest MAX_ROWS) and the labels sent for
    their requests. The log's newest version is read as Parquet and cut here: the query API returns
    at most a page of rows."""
    import polars as pl

    try:
        path = client.datasets.export(project, f"predictions-{route}", tmp / "predictions.parquet")
    except NotFound:  # nothing was ever logged: the dataset does not exist yet
        return _empty(), None
    live = (
        pl.read_parquet(path)
        .filter((pl.col("ts") >= start) & (pl.col("ts") < end) & ~pl.col("shadow") & pl.col("ok"))
        .sort("ts", descending=True)
        .head(MAX_ROWS)
    )
    try:
        labels_path = client.datasets.export(project, f"feedback-{route}", tmp / "feedback.parquet")
    except NotFound:
        return live.to_pandas(), None
    labels = pl.read_parquet(labels_path).filter(pl.col("request_id").is_in(live["request_id"].unique()))
    return live.to_pandas(), labels.to_pandas()


def _empty() -> Any:
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
            predictions, labels = _window(client, project, route, start, end, Path(tmp))
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
