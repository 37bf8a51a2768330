from __future__ import annotations

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, output, print_json

app = typer.Typer(help="API tokens for scripts and services: create, list, revoke.", no_args_is_help=True)
COLUMNS = ["id", "name", "kind", "prefix", "project", "created_at", "expires_at", "revoked_at", "last_used_at"]


@app.command("create")
@handle_errors
def create(
    name: str = typer.Option("api", "--name", "-n", help="A name to recognise the token by."),
    expires: str | None = typer.Option(
        None, "--expires", help="Lifetime like 30d or 12h. Default: the platform's longest."
    ),
    project: str | None = typer.Option(None, "--project", "-p", help="Limit the token to this project."),
    as_json: bool = JsonOpt,
) -> None:
    """Create an API token; it is printed once and cannot be shown again."""
    t = client().tokens.create(name, expires=expires, project=project)
    if as_json:
        print_json(t)
        return
    scope = f"project {t.project}" if t.project else "all your projects"
    expiry = f"expires {t.expires_at:%Y-%m-%d %H:%M:%S} UTC" if t.expires_at else "never expires"
    typer.echo(f"created token {t.id} ({t.name}) for {scope}; it {expiry}")
    typer.echo(t.token)
    typer.echo("warning: copy the token now; it will not be shown again", err=True)


@app.command("list")
@handle_errors
def list_(as_json: bool = JsonOpt) -> None:
    """Your tokens: only a prefix of each, never the token itself."""
    output(client().tokens.list(), as_json, COLUMNS)


@app.command("revoke")
@handle_errors
def revoke(token_id: int = typer.Argument(..., metavar="ID", help="The token's id, from `token list`.")) -> None:
    """Revoke one of your tokens; it stops working at once."""
    client().tokens.revoke(token_id)
    typer.echo(f"revoked token {token_id}")
