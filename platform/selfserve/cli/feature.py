"""``selfserve feature``: feature views, datasets served by key from the online store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from selfserve.cli._common import EXIT_ERROR, JsonOpt, client, handle_errors, print_json, print_record

if TYPE_CHECKING:
    from selfserve.schemas.serving import FeatureViewPublic

app = typer.Typer(
    help="Feature views: a dataset keyed by a column, served by key from the online store (Redis or SQLite).",
    no_args_is_help=True,
)
COLUMNS = ["name", "dataset", "key", "state", "version", "rows", "store", "materialized_at"]
SHOW_FIELDS = [
    "name",
    "dataset",
    "key",
    "state",
    "materialized_version",
    "rows",
    "store",
    "last_error",
    "materialized_at",
    "created_by",
    "created_at",
]
ProjectArg = typer.Argument(..., help="The project.")
NameArg = typer.Argument(..., help="The feature view.")


def _row(v: FeatureViewPublic) -> dict[str, Any]:
    return {**v.model_dump(), "version": v.materialized_version}


def _served(v: FeatureViewPublic) -> str:
    return f"version {v.materialized_version} of {v.dataset}, {v.rows:,} row{'' if v.rows == 1 else 's'} ({v.store})"


def _failed(v: FeatureViewPublic, what: str) -> None:
    typer.echo(f"error: {what}: {v.last_error or v.state}", err=True)
    raise typer.Exit(EXIT_ERROR)


@app.command("list")
@handle_errors
def list_(project: str = ProjectArg, as_json: bool = JsonOpt) -> None:
    """The project's feature views and the dataset version each serves."""
    from selfserve.cli.dataset import print_rows

    views = client().features.list(project)
    if as_json:
        print_json(views)
        return
    print_rows([_row(v) for v in views], COLUMNS, keep=("name", "dataset"))


@app.command("show")
@handle_errors
def show(project: str = ProjectArg, name: str = NameArg, as_json: bool = JsonOpt) -> None:
    """A feature view: its dataset and key, its state, and the version it serves."""
    v = client().features.get(project, name)
    if as_json:
        print_json(v)
        return
    print_record(v, SHOW_FIELDS)


@app.command("create")
@handle_errors
def create(
    project: str = ProjectArg,
    name: str = typer.Argument(..., help="The new feature view's name."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="The dataset to serve; its newest version is loaded."),
    key: str = typer.Option(..., "--key", "-k", help="The entity column rows are looked up by; unique, never null."),
    as_json: bool = JsonOpt,
) -> None:
    """Create a feature view and load the dataset into the online store; new versions follow by themselves."""
    v = client().features.create(project, name, dataset=dataset, key=key)
    if as_json:
        print_json(v)
    elif v.state == "ready":
        typer.echo(f"created feature view {name} keyed by {key}: {_served(v)}")
    elif v.state != "failed":
        typer.echo(f"created feature view {name} keyed by {key}: {v.state}")
    if v.state == "failed":
        _failed(v, f"created feature view {name}, but it serves no data")


@app.command("get")
@handle_errors
def get(
    project: str = ProjectArg,
    name: str = NameArg,
    key: str = typer.Argument(..., help="The key's value, e.g. 42."),
    as_json: bool = JsonOpt,
) -> None:
    """Print the values of one key, as a model reading the view would get them."""
    row = client().features.lookup(project, name, key)
    if as_json:
        print_json(row)
        return
    if not row.values:
        typer.echo("(no columns besides the key)")
        return
    print_record(row.values)


@app.command("materialize")
@handle_errors
def materialize(project: str = ProjectArg, name: str = NameArg, as_json: bool = JsonOpt) -> None:
    """Load the dataset's newest version into the online store now (it also happens by itself)."""
    v = client().features.materialize(project, name)
    if as_json:
        print_json(v)
        return
    typer.echo(f"materialized {name}: {_served(v)}")


@app.command("delete")
@handle_errors
def delete(
    project: str = ProjectArg,
    name: str = NameArg,
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm: lookups and routes that use the view fail."),
) -> None:
    """Delete a feature view and its rows in the online store; the dataset stays."""
    if not yes:
        typer.echo(f"error: deleting {name} stops every lookup of it; pass --yes to confirm", err=True)
        raise typer.Exit(EXIT_ERROR)
    client().features.delete(project, name)
    typer.echo(f"deleted feature view {name}")
