"""``selfserve deployment``: model versions served by BentoML, each behind the routes that send it traffic."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import typer

from selfserve.cli._common import EXIT_ERROR, JsonOpt, client, handle_errors, print_json, print_record

if TYPE_CHECKING:
    from selfserve.client import Client
    from selfserve.schemas.serving import DeploymentPublic

app = typer.Typer(
    help="Deployments: a registered model version served by BentoML; routes send it traffic.",
    no_args_is_help=True,
)
COLUMNS = ["name", "model", "version", "model_ref", "state", "restarts", "routes", "created_at", "ready_at"]
SHOW_FIELDS = [
    "name",
    "model",
    "version",
    "model_ref",
    "state",
    "restarts",
    "last_error",
    "inputs",
    "routes",
    "created_by",
    "created_at",
    "ready_at",
]
ProjectArg = typer.Argument(..., help="The project.")
NameArg = typer.Argument(..., help="The deployment, from `deployment list`.")
POLL_SECONDS = 0.5


def _row(d: DeploymentPublic) -> dict[str, Any]:
    row = d.model_dump()
    row["inputs"] = ", ".join(f"{c.name} ({c.type})" for c in d.inputs) or None
    row["routes"] = ", ".join(d.routes) or None
    return row


def _state(d: DeploymentPublic) -> str:
    restarts = f", {d.restarts} restart{'' if d.restarts == 1 else 's'}" if d.restarts else ""
    return f"{d.state}{restarts}"


def _serves(d: DeploymentPublic) -> str:
    return f"model {d.model} version {d.version} ({d.model_ref})"


def _poll(c: Client, project: str, dep: DeploymentPublic, timeout: float, show: Any) -> DeploymentPublic:
    deadline = time.monotonic() + timeout
    while dep.state not in ("ready", "failed"):
        if time.monotonic() > deadline:
            typer.echo(
                f"error: deployment {dep.name} is still {dep.state} after {timeout:g} s; it goes on starting in "
                f"the background: `selfserve deployment show {project} {dep.name}`",
                err=True,
            )
            raise typer.Exit(EXIT_ERROR)
        time.sleep(POLL_SECONDS)
        dep = c.deployments.get(project, dep.name)
        if show is not None:
            show(dep)
    return dep


def _drop(bar: Any) -> None:
    """Leave no spinner behind: the error that follows says what happened."""
    bar.live.transient = True
    bar.live.stop()
    bar.disable = True  # so that leaving the block prints nothing more


def wait_ready(c: Client, project: str, dep: DeploymentPublic, *, timeout: float, progress: bool) -> DeploymentPublic:
    """Poll a deployment until it is ready or failed, with a spinner of its state on stderr."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if not progress:
        return _poll(c, project, dep, timeout, None)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=Console(stderr=True)
    ) as bar:
        task = bar.add_task(f"deployment {dep.name}: {_state(dep)}", total=None)

        def show(d: DeploymentPublic) -> None:
            bar.update(task, description=f"deployment {d.name}: {_state(d)}")

        try:
            done = _poll(c, project, dep, timeout, show)
        except BaseException:
            _drop(bar)
            raise
        if done.state == "ready":
            bar.update(task, total=1, completed=1)
        else:
            _drop(bar)
        return done


@app.command("list")
@handle_errors
def list_(project: str = ProjectArg, as_json: bool = JsonOpt) -> None:
    """The project's deployments: the model version each serves, its state and the routes that use it."""
    from selfserve.cli.dataset import print_rows

    found = client().deployments.list(project)
    if as_json:
        print_json(found)
        return
    print_rows([_row(d) for d in found], COLUMNS, keep=("name",))


@app.command("show")
@handle_errors
def show(project: str = ProjectArg, name: str = NameArg, as_json: bool = JsonOpt) -> None:
    """A deployment: the model version it serves, its inputs, its state and its last error."""
    d = client().deployments.get(project, name)
    if as_json:
        print_json(d)
        return
    print_record(_row(d), SHOW_FIELDS)


@app.command("create")
@handle_errors
def create(
    project: str = ProjectArg,
    name: str = typer.Argument(..., help="The new deployment's name, e.g. clf-v7."),
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        metavar="MODEL@ALIAS|MODEL@VERSION",
        help="The registered model and its alias or version, e.g. clf@champion or clf@7.",
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until it is ready (default), or return at once."),
    timeout: float = typer.Option(180.0, "--timeout", min=1, help="Seconds to wait for it to be ready."),
    as_json: bool = JsonOpt,
) -> None:
    """Serve a registered model version; by default, wait until it answers.

    The version an alias points to is resolved now: the deployment keeps serving it when the alias
    moves. Exits non-zero when the deployment fails to start or is not ready within --timeout.
    """
    c = client()
    d = c.deployments.create(project, name, model)
    if not wait:
        if as_json:
            print_json(d)
            return
        typer.echo(
            f"created deployment {d.name} of {_serves(d)}: {d.state}; "
            f"follow it with `selfserve deployment show {project} {d.name}`"
        )
        return
    d = wait_ready(c, project, d, timeout=timeout, progress=not as_json)
    if as_json:
        print_json(d)
    elif d.state == "ready":
        typer.echo(f"deployment {d.name} of {_serves(d)}: ready")
    if d.state == "failed":
        typer.echo(
            f"error: deployment {d.name} failed: {d.last_error or 'no error was recorded'}; "
            f"its logs: `selfserve deployment logs {project} {d.name}`",
            err=True,
        )
        raise typer.Exit(EXIT_ERROR)


@app.command("logs")
@handle_errors
def logs(
    project: str = ProjectArg,
    name: str = NameArg,
    tail: int = typer.Option(200, "--tail", "-n", min=1, max=5000, help="How many of the last lines."),
    as_json: bool = JsonOpt,
) -> None:
    """The last lines the deployment's BentoML server wrote: start-up, errors, restarts."""
    found = client().deployments.logs(project, name, tail=tail)
    if as_json:
        print_json(found)
        return
    if not found.lines:
        typer.echo("(no log lines)")
        return
    for line in found.lines:
        typer.echo(line)


@app.command("delete")
@handle_errors
def delete(project: str = ProjectArg, name: str = NameArg) -> None:
    """Stop serving a deployment. Refused while a route sends it traffic: switch or delete the route first."""
    client().deployments.delete(project, name)
    typer.echo(f"deleted deployment {name}")
