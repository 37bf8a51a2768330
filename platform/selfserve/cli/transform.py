"""``selfserve transform``: DuckDB SQL or a Polars function over a project's datasets, into a new version,
now or on a schedule."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, parse_pairs
from selfserve.cli.dataset import EvolveOpt, Mode, NoWaitOpt, OverwriteOpt, TimeoutOpt, report_job
from selfserve.cli.flow import (
    ScheduleIntervalOpt,
    ScheduleOpt,
    check_schedule_options,
    deploy_scheduled,
    schedule_name_option,
)


def _read(option: str, path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    file = Path(path)
    if not file.is_file():
        raise typer.BadParameter(f"{path!r} is not a file", param_hint=option)
    return file.read_text()


def _check_inputs(items: list[str]) -> list[str]:
    parse_pairs(items, "ARG")
    return items


InputsOpt = typer.Option(
    [],
    "--input",
    metavar="ARG=DATASET[@VERSION]",
    callback=_check_inputs,
    help="Polars: the dataset (version) for an argument (repeatable; default: the dataset named like it).",
)

ScheduleNameOpt = schedule_name_option("transform")


@handle_errors
def transform(
    project: str = typer.Argument(..., help="The project."),
    sql: str | None = typer.Option(
        None,
        "--sql",
        metavar="FILE.sql",
        help="DuckDB SQL naming the project's datasets as tables ('-' in names as '_'); '-' reads stdin.",
    ),
    polars: str | None = typer.Option(
        None,
        "--polars",
        metavar="FILE.py",
        help="Python defining a function of LazyFrames (one per input) that returns one; '-' reads stdin.",
    ),
    function: str = typer.Option("transform", "--function", help="Polars: the function to call."),
    inputs: list[str] = InputsOpt,
    to: str = typer.Option(..., "--to", help="The dataset to write (created if new)."),
    mode: Mode = OverwriteOpt,
    evolve: bool = EvolveOpt,
    no_wait: bool = NoWaitOpt,
    timeout: float = TimeoutOpt,
    schedule: str | None = ScheduleOpt,
    interval: str | None = ScheduleIntervalOpt,
    name: str | None = ScheduleNameOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Compute a new version of a dataset from others; its lineage records the input versions.

    With --schedule or --interval, deploy the same transform (the code as it is now) as a built-in
    flow that runs on that schedule instead of running it now.
    """
    if (sql is None) == (polars is None):
        raise typer.BadParameter("give exactly one of --sql or --polars")
    if inputs and sql is not None:
        raise typer.BadParameter("--input is for --polars; SQL names its datasets itself")
    check_schedule_options(schedule, interval, name)
    # The request body, as the API takes it: sent now, or kept by a scheduled deployment.
    request: dict[str, Any] = {
        "to": to,
        "sql": _read("--sql", sql) if sql is not None else None,
        "polars": _read("--polars", polars) if polars is not None else None,
        "function": function if polars is not None else None,
        "inputs": parse_pairs(inputs, "ARG") or None,
        "mode": mode.value,
        "evolve": evolve,
    }
    request = {k: v for k, v in request.items() if v is not None}
    c = client()
    if schedule is not None or interval is not None:
        deploy_scheduled(c, project, "transform", name or f"transform-{to}", request, schedule, interval, as_json)
        return
    job = c.datasets.transform(project, wait=False, **request)
    report_job(c, project, job, wait=not no_wait, as_json=as_json, timeout=timeout)


def register(app: typer.Typer) -> None:
    app.command("transform")(transform)
