"""``selfserve mlflow``: your own MLflow account for a project, for the ``mlflow`` client and UI."""

from __future__ import annotations

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, print_json

app = typer.Typer(
    help="Your own MLflow account for a project: env prints what the mlflow client needs.", no_args_is_help=True
)


@app.command("env")
@handle_errors
def env(project: str = typer.Argument(..., help="The project."), as_json: bool = JsonOpt) -> None:
    """Print `export MLFLOW_...` lines for the project as you (made on first use): eval "$(selfserve mlflow env P)".

    Experiments are named <project>/<name> and registered models <project>.<name>.
    """
    import shlex

    found = client().mlflow.env(project)
    if as_json:
        print_json(found)
        return
    for key, value in found.environment().items():
        typer.echo(f"export {key}={shlex.quote(value)}")
