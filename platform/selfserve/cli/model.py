"""``selfserve model``: registered models (MLflow): versions, champion and challenger, promotion, lineage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, print_json, print_record

if TYPE_CHECKING:
    from selfserve.schemas.models import ModelLineage, ModelVersionPublic, PromotionPublic

app = typer.Typer(
    help="Registered models (MLflow): list, show, versions; promote a version to champion, roll back; lineage.",
    no_args_is_help=True,
)
COLUMNS = ["name", "champion", "challenger", "latest_version", "updated_at", "description"]
SHOW_FIELDS = [
    "name",
    "mlflow_name",
    "description",
    "champion",
    "challenger",
    "aliases",
    "latest_version",
    "created_at",
    "updated_at",
]
VERSION_COLUMNS = ["version", "status", "aliases", "metric", "run_id", "experiment", "metrics", "created_at"]
PROMOTION_COLUMNS = ["at", "action", "version", "previous_version", "actor", "reason"]
ProjectArg = typer.Argument(..., help="The project.")
NameArg = typer.Argument(..., help="The model's name in the project, from `model list`.")
VersionArg = typer.Argument(..., min=1, help="The model version, from `model versions`.")
ReasonOpt = typer.Option("", "--reason", "-r", help="Why: kept in the promotion history and the audit trail.")


def _metrics(values: dict[str, float]) -> str:
    from selfserve.cli.experiment import number

    return ", ".join(f"{k}={number(v)}" for k, v in sorted(values.items()))


def _version_row(v: ModelVersionPublic) -> dict[str, Any]:
    from selfserve.cli.experiment import number

    metric = v.metric if v.metric_value is None else f"{v.metric}={number(v.metric_value)}"
    return {**v.model_dump(), "metric": metric, "metrics": _metrics(v.metrics), "aliases": ", ".join(v.aliases)}


def _print_versions(versions: list[ModelVersionPublic]) -> None:
    from selfserve.cli.dataset import print_rows

    print_rows([_version_row(v) for v in versions], VERSION_COLUMNS, keep=("run_id",))


def _print_promotions(promotions: list[PromotionPublic]) -> None:
    from selfserve.cli._common import print_table

    print_table(promotions, PROMOTION_COLUMNS)


@app.command("list")
@handle_errors
def list_(project: str = ProjectArg, as_json: bool = JsonOpt) -> None:
    """The project's registered models, with their champion and challenger versions."""
    from selfserve.cli._common import output

    output(client().models.list(project), as_json, COLUMNS)


@app.command("show")
@handle_errors
def show(
    project: str = ProjectArg,
    name: str = NameArg,
    versions: int = typer.Option(10, "--versions", min=0, max=1000, help="How many of the newest versions to show."),
    as_json: bool = JsonOpt,
) -> None:
    """A model: its aliases, its newest versions and its promotion history."""
    m = client().models.get(project, name, versions=versions)
    if as_json:
        print_json(m)
        return
    print_record(m, SHOW_FIELDS)
    if versions:
        typer.echo("\nversions:")
        _print_versions(m.versions)
    typer.echo("\npromotions:")
    _print_promotions(m.promotions)


@app.command("versions")
@handle_errors
def versions_(
    project: str = ProjectArg,
    name: str = NameArg,
    limit: int = typer.Option(100, "--limit", "-n", min=1, max=1000, help="At most this many, newest first."),
    as_json: bool = JsonOpt,
) -> None:
    """A model's versions, newest first: status, aliases, the run each came from and its metrics."""
    found = client().models.versions(project, name, limit=limit)
    if as_json:
        print_json(found)
        return
    _print_versions(found)


@app.command("promote")
@handle_errors
def promote(
    project: str = ProjectArg,
    name: str = NameArg,
    version: int = VersionArg,
    reason: str = ReasonOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Make a version the champion; the champion it replaces is kept for `model rollback`."""
    p = client().models.promote(project, name, version, reason=reason)
    if as_json:
        print_json(p)
        return
    was = f" (was version {p.previous_version})" if p.previous_version is not None else " (there was none)"
    typer.echo(f"version {p.version} of model {p.model} is the champion{was}")


@app.command("rollback")
@handle_errors
def rollback(project: str = ProjectArg, name: str = NameArg, reason: str = ReasonOpt, as_json: bool = JsonOpt) -> None:
    """Make the champion before the current one champion again."""
    p = client().models.rollback(project, name, reason=reason)
    if as_json:
        print_json(p)
        return
    typer.echo(
        f"rolled back model {p.model}: version {p.version} is the champion again (was version {p.previous_version})"
    )


def _lineage_record(lin: ModelLineage) -> dict[str, Any]:
    from selfserve.cli.experiment import datasets_text

    aliases = f"; {', '.join(lin.aliases)}" if lin.aliases else ""
    rec: dict[str, Any] = {"model": f"{lin.model} version {lin.version} ({lin.status}{aliases})"}
    rec["created_at"] = lin.created_at
    rec["datasets"] = datasets_text(lin.datasets) or None
    if lin.run is not None:
        r = lin.run
        rec["run"] = f"{r.id} {r.name} in experiment {r.experiment} ({r.status})"
        rec["run_started"] = r.start_time
        rec["params"] = ", ".join(f"{k}={v}" for k, v in sorted(r.params.items())) or None
        rec["metrics"] = _metrics(r.metrics) or None
    else:
        rec["run"] = None
    code = lin.code
    if code is not None:
        rec["flow_run"] = code.flow_run_id
        if code.deployment:
            rec["deployment"] = f"{code.deployment} ({code.entrypoint})"
        rec["code"] = code.code_sha[:12] if code.code_sha else (code.git_commit or code.source_name)
    rec["deployments"] = ", ".join(d.name for d in lin.deployments) or None
    return rec


@app.command("lineage")
@handle_errors
def lineage(project: str = ProjectArg, name: str = NameArg, version: int = VersionArg, as_json: bool = JsonOpt) -> None:
    """Where a version came from and went: dataset versions -> run -> code -> deployments."""
    lin = client().models.lineage(project, name, version)
    if as_json:
        print_json(lin)
        return
    print_record(_lineage_record(lin))
    if lin.promotions:
        typer.echo("\npromotions:")
        _print_promotions(lin.promotions)
