from __future__ import annotations

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, output, print_json

app = typer.Typer(help="Project members and their roles: add, list, set-role, remove.", no_args_is_help=True)
COLUMNS = ["user", "kind", "role", "created_at"]


@app.command("add")
@handle_errors
def add(
    project: str,
    user: str,
    role: str = typer.Option(..., "--role", "-r", help="owner, engineer, scientist, viewer, or a configured role."),
    as_json: bool = JsonOpt,
) -> None:
    """Add a user to a project with a role (owners only)."""
    m = client().members.add(project, user, role)
    if as_json:
        print_json(m)
        return
    typer.echo(f"added {m.user} to {project} as {m.role}")


@app.command("list")
@handle_errors
def list_(project: str, as_json: bool = JsonOpt) -> None:
    """A project's members and their roles."""
    output(client().members.list(project), as_json, COLUMNS)


@app.command("set-role")
@handle_errors
def set_role(project: str, user: str, role: str, as_json: bool = JsonOpt) -> None:
    """Change a member's role (owners only)."""
    m = client().members.set_role(project, user, role)
    if as_json:
        print_json(m)
        return
    typer.echo(f"{m.user} is now {m.role} in {project}")


@app.command("remove")
@handle_errors
def remove(project: str, user: str) -> None:
    """Remove a member from a project (owners only)."""
    client().members.remove(project, user)
    typer.echo(f"removed {user} from {project}")
