from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, output, print_json, read_secret

if TYPE_CHECKING:
    from selfserve.schemas import UserCreated

app = typer.Typer(help="Users (admins only): create, list, disable, enable, reset passwords.", no_args_is_help=True)
COLUMNS = ["name", "kind", "is_admin", "disabled", "locked_until", "created_at"]

PasswordStdinOpt = typer.Option(
    False, "--password-stdin", help="Read the password from stdin instead of generating one."
)


def _show_password(user: UserCreated) -> None:
    if user.password:
        typer.echo(f"password: {user.password}")
        typer.echo("warning: this password is shown only once; hand it over safely now", err=True)


@app.command("create")
@handle_errors
def create(
    name: str = typer.Argument(..., help="User name: a-z, 0-9 and '-'."),
    admin: bool = typer.Option(False, "--admin", help="Make the user a platform admin."),
    password_stdin: bool = PasswordStdinOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a user; without --password-stdin a password is generated and printed once."""
    password = read_secret("Password", True) if password_stdin else None
    u = client().users.create(name, password=password, is_admin=admin)
    if as_json:
        print_json(u)
        return
    typer.echo(f"created {'admin' if u.is_admin else 'user'} {u.name}")
    _show_password(u)


@app.command("list")
@handle_errors
def list_(as_json: bool = JsonOpt) -> None:
    """Every user of the platform."""
    output(client().users.list(), as_json, COLUMNS)


@app.command("disable")
@handle_errors
def disable(name: str, as_json: bool = JsonOpt) -> None:
    """Disable a user and revoke every token they hold."""
    u = client().users.disable(name)
    if as_json:
        print_json(u)
        return
    typer.echo(f"disabled user {u.name}; their tokens were revoked")


@app.command("enable")
@handle_errors
def enable(name: str, as_json: bool = JsonOpt) -> None:
    """Enable a disabled user."""
    u = client().users.enable(name)
    if as_json:
        print_json(u)
        return
    typer.echo(f"enabled user {u.name}")


@app.command("reset-password")
@handle_errors
def reset_password(name: str, password_stdin: bool = PasswordStdinOpt, as_json: bool = JsonOpt) -> None:
    """Set a new password (generated and printed once), unlock the user and revoke their tokens."""
    password = read_secret("New password", True) if password_stdin else None
    u = client().users.reset_password(name, password)
    if as_json:
        print_json(u)
        return
    typer.echo(f"reset the password of {u.name}; their tokens were revoked")
    _show_password(u)
