from __future__ import annotations

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, output, print_json, print_record

app = typer.Typer(help="Projects: create your own workspace, list, show and delete them.", no_args_is_help=True)
COLUMNS = ["name", "role", "status", "created_by", "created_at", "description"]


@app.command("create")
@handle_errors
def create(
    name: str = typer.Argument(..., help="Project name: a-z, 0-9 and '-'."),
    description: str = typer.Option("", "--description", "-d", help="What the project is for."),
    as_json: bool = JsonOpt,
) -> None:
    """Create a project; you become its owner."""
    p = client().projects.create(name, description=description)
    if as_json:
        print_json(p)
        return
    typer.echo(f"created project {p.name} (status: {p.status}); you are its owner")
    for step in p.provisioning:
        typer.echo(f"  {step.provisioner}: {step.status}" + (f" ({step.error})" if step.error else ""))


@app.command("list")
@handle_errors
def list_(as_json: bool = JsonOpt) -> None:
    """Your projects (admins: every project)."""
    output(client().projects.list(), as_json, COLUMNS)


@app.command("show")
@handle_errors
def show(name: str, as_json: bool = JsonOpt) -> None:
    """A project and its provisioning state."""
    p = client().projects.get(name)
    if as_json:
        print_json(p)
        return
    print_record(p, COLUMNS)
    typer.echo("provisioning:")
    for step in p.provisioning:
        err = f"  {step.error}" if step.error else ""
        typer.echo(f"  {step.provisioner:<12} {step.status:<8} attempts={step.attempts}{err}")


@app.command("provision")
@handle_errors
def provision(name: str, as_json: bool = JsonOpt) -> None:
    """Retry the provisioning steps that are not ready."""
    p = client().projects.provision(name)
    output(p, as_json, COLUMNS)


@app.command("delete")
@handle_errors
def delete(
    name: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm: the project's data is deleted too."),
) -> None:
    """Delete a project and everything in it (owners only)."""
    if not yes:
        typer.echo(f"error: deleting {name} removes all its data; pass --yes to confirm", err=True)
        raise typer.Exit(1)
    client().projects.delete(name)
    typer.echo(f"deleted project {name}")
