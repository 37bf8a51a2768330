"""``selfserve experiment``: a project's MLflow experiments and their runs (``run compare`` compares runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, print_json

if TYPE_CHECKING:
    from selfserve.schemas.models import DatasetRef, ExperimentRun, ModelVersionRef

app = typer.Typer(
    help="Experiments (MLflow): list them, list an experiment's runs sorted by a metric. "
    "`run compare` puts runs side by side.",
    no_args_is_help=True,
)
COLUMNS = ["name", "runs", "last_run_at", "created_at", "id"]
ProjectArg = typer.Argument(..., help="The project.")
# Metrics shown as columns of `experiment runs` beyond the sort key; --json has them all.
MAX_METRIC_COLUMNS = 6


def number(value: float | None) -> str | None:
    """A metric for people: 4 significant digits, as MLflow's UI shows them."""
    return None if value is None else f"{value:.4g}"


def datasets_text(refs: list[DatasetRef]) -> str:
    return ", ".join(f"{d.name}@{d.version}" if d.version else d.name for d in refs)


def versions_text(refs: list[ModelVersionRef]) -> str:
    return ", ".join(f"{v.model} v{v.version}" for v in refs)


def run_row(r: ExperimentRun, metrics: list[str]) -> dict[str, Any]:
    from selfserve.cli.run import duration

    return {
        "id": r.id,
        "name": r.name,
        "status": r.status,
        "start": r.start_time,
        "duration": duration(r.duration_seconds),
        **{m: number(r.metrics.get(m)) for m in metrics},
        "params": ", ".join(f"{k}={v}" for k, v in sorted(r.params.items())),
        "datasets": datasets_text(r.datasets),
        "registered": versions_text(r.model_versions),
    }


def _check_sort(value: str | None) -> str | None:
    if value is not None and not value.removeprefix("-"):
        raise typer.BadParameter(f"{value!r} is not a metric name")
    return value


@app.command("list")
@handle_errors
def list_(project: str = ProjectArg, as_json: bool = JsonOpt) -> None:
    """The project's experiments, with their number of runs and when the newest started."""
    from selfserve.cli._common import output

    output(client().experiments.list(project), as_json, COLUMNS)


@app.command("runs")
@handle_errors
def runs(
    project: str = ProjectArg,
    experiment: str = typer.Argument(..., help="The experiment's name or id, from `experiment list`."),
    sort: str | None = typer.Option(
        None,
        "--sort",
        "-s",
        metavar="METRIC",
        callback=_check_sort,
        help="Order by this metric, lowest first; '-f1' (or --desc) for highest first.",
    ),
    desc: bool = typer.Option(False, "--desc", help="With --sort: highest first."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=1000, help="At most this many runs."),
    as_json: bool = JsonOpt,
) -> None:
    """An experiment's runs: parameters, metrics, dataset versions and registered versions.

    Newest first, or by a metric with --sort.
    """
    from selfserve.cli.dataset import print_rows

    if desc and sort is None:
        raise typer.BadParameter("--desc needs --sort METRIC", param_hint="--desc")
    found = client().experiments.runs(project, experiment, sort=sort, desc=desc, limit=limit)
    if as_json:
        print_json(found)
        return
    key = sort.removeprefix("-") if sort else None
    names = sorted({m for r in found for m in r.metrics} - {key})
    metrics = ([key] if key else []) + names[: MAX_METRIC_COLUMNS - (1 if key else 0)]
    columns = ["id", "name", "status", "start", "duration", *metrics, "params", "datasets", "registered"]
    print_rows([run_row(r, metrics) for r in found], columns, keep=("id",))
