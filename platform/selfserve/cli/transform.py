"""``selfserve transform``: DuckDB SQL or a Polars function over a project's datasets, into a new version."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, parse_pairs
from selfserve.cli.dataset import EvolveOpt, Mode, NoWaitOpt, OverwriteOpt, TimeoutOpt, report_job


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
    as_json: bool = JsonOpt,
) -> None:
    """Compute a new version of a dataset from others; its lineage records the input versions."""
    if (sql is None) == (polars is None):
        raise typer.BadParameter("give exactly one of --sql or --polars")
    if inputs and sql is not None:
        raise typer.BadParameter("--input is for --polars; SQL names its datasets itself")
    c = client()
    job = c.datasets.transform(
        project,
        to,
        sql=_read("--sql", sql) if sql is not None else None,
        polars=_read("--polars", polars) if polars is not None else None,
        wait=False,
        function=function if polars is not None else None,
        inputs=parse_pairs(inputs, "ARG") or None,
        mode=mode.value,
        evolve=evolve,
    )
    report_job(c, project, job, wait=not no_wait, as_json=as_json, timeout=timeout)


def register(app: typer.Typer) -> None:
    app.command("transform")(transform)
