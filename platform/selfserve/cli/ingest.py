"""``selfserve ingest``: read a source into a new dataset version, with a progress bar of rows read, or
schedule it as a built-in flow."""

from __future__ import annotations

from typing import Any

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors
from selfserve.cli.dataset import AppendOpt, EvolveOpt, Mode, NoWaitOpt, TimeoutOpt, report_job
from selfserve.cli.flow import (
    ScheduleIntervalOpt,
    ScheduleOpt,
    check_schedule_options,
    deploy_scheduled,
    schedule_name_option,
)
from selfserve.cli.source import parse_settings


def _check_options(items: list[str]) -> list[str]:
    parse_settings(items)
    return items


OptionsOpt = typer.Option(
    [], "--option", metavar="KEY=VALUE", callback=_check_options, help="A read option of the source's kind."
)

ScheduleNameOpt = schedule_name_option("ingest")


@handle_errors
def ingest(
    project: str = typer.Argument(..., help="The project."),
    source: str = typer.Argument(..., help="The source to read, from `source list`."),
    table: str | None = typer.Option(
        None, "--table", "-t", help="The table to read (for file and S3 sources: the file, under the source's path)."
    ),
    query: str | None = typer.Option(None, "--query", "-q", help="A SELECT to run on a database source instead."),
    to: str = typer.Option(..., "--to", help="The dataset to write (created if new)."),
    incremental: str | None = typer.Option(
        None, "--incremental", metavar="COLUMN", help="Read only rows whose COLUMN is above the last load's maximum."
    ),
    batch_rows: int | None = typer.Option(None, "--batch-rows", min=1, help="Rows read per chunk."),
    max_rows_per_second: float | None = typer.Option(
        None, "--max-rows-per-second", min=0.001, help="Read no faster than this, to spare the source."
    ),
    mode: Mode = AppendOpt,
    evolve: bool = EvolveOpt,
    options: list[str] = OptionsOpt,
    no_wait: bool = NoWaitOpt,
    timeout: float = TimeoutOpt,
    schedule: str | None = ScheduleOpt,
    interval: str | None = ScheduleIntervalOpt,
    name: str | None = ScheduleNameOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Read a table or a query of a source into a new version of a dataset (one atomic commit).

    With --schedule or --interval, deploy the same ingest as a built-in flow that runs on that
    schedule instead of running it now.
    """
    if (table is None) == (query is None):
        raise typer.BadParameter("give exactly one of --table or --query")
    check_schedule_options(schedule, interval, name)
    # The request body, as the API takes it: sent now, or kept by a scheduled deployment.
    request: dict[str, Any] = {
        "source": source,
        "to": to,
        "table": table,
        "query": query,
        "incremental": incremental,
        "batch_rows": batch_rows,
        "max_rows_per_second": max_rows_per_second,
        "mode": mode.value,
        "evolve": evolve,
        "options": parse_settings(options) or None,
    }
    request = {k: v for k, v in request.items() if v is not None}
    c = client()
    if schedule is not None or interval is not None:
        deploy_scheduled(c, project, "ingest", name or f"ingest-{to}", request, schedule, interval, as_json)
        return
    job = c.datasets.ingest(project, wait=False, **request)
    report_job(c, project, job, wait=not no_wait, as_json=as_json, timeout=timeout)


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
