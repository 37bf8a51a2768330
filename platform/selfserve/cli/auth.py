"""Top-level session commands: ``login``, ``logout``, ``whoami``, ``password``."""

from __future__ import annotations

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, print_json, print_record, print_table, read_secret


@handle_errors
def login(
    username: str | None = typer.Option(None, "--username", "-u", help="Your user name; asked for when omitted."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
    url: str | None = typer.Option(
        None, "--url", help="The API URL. Default: SELFSERVE_URL, the saved login's, or local."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Log in with your user name and password and save the login for later commands."""
    from selfserve.client import Client
    from selfserve.client._credentials import FILE
    from selfserve.settings import get_client_settings

    if not username:
        username = typer.prompt("User name")
    password = read_secret("Password", password_stdin)
    with Client(url=url) as c:
        resp = c.login(username, password, save=True)
    saved = get_client_settings().config_dir / FILE
    if as_json:
        print_json(
            {
                "user": resp.user.model_dump(mode="json"),
                "url": c.url,
                "expires_at": resp.expires_at.isoformat() if resp.expires_at else None,
                "credentials": str(saved),
            }
        )
        return
    admin = " (platform admin)" if resp.user.is_admin else ""
    typer.echo(f"logged in as {resp.user.name}{admin} at {c.url}")
    expires = f"; the session expires {resp.expires_at:%Y-%m-%d %H:%M:%S} UTC" if resp.expires_at else ""
    typer.echo(f"login saved to {saved}{expires}")


@handle_errors
def logout() -> None:
    """Revoke the saved session token and forget the saved login."""
    from selfserve.errors import Unauthenticated

    c = client()
    if not c.token:
        c.logout()
        typer.echo("not logged in")
        return
    try:
        c.logout()
    except Unauthenticated:
        # The token had already expired or been revoked: the saved login is gone all the same.
        typer.echo("the saved session had already ended; saved login removed")
        return
    typer.echo(f"logged out of {c.url}")


@handle_errors
def whoami(as_json: bool = JsonOpt) -> None:
    """Who you are logged in as: user, admin flag, token expiry, and your projects with roles."""
    c = client()
    me = c.whoami()
    if as_json:
        print_json({"url": c.url, **me.model_dump(mode="json")})
        return
    print_record(
        {
            "user": me.user.name,
            "admin": "yes" if me.user.is_admin else "no",
            "url": c.url,
            "token": f"{me.token.name} ({me.token.kind}, {me.token.prefix}...)",
            "expires": me.token.expires_at,
            "scoped to": me.token.project or "all your projects",
        }
    )
    typer.echo("projects:")
    print_table(me.projects, ["project", "role"])


@handle_errors
def password(
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the current and the new password from stdin, one a line."
    ),
) -> None:
    """Change your own password. Every other session and token of yours is revoked."""
    current = read_secret("Current password", password_stdin)
    if password_stdin:
        new = read_secret("New password", True)
    else:
        new = typer.prompt("New password (12 characters at least)", hide_input=True, confirmation_prompt=True)
    client().change_password(current, new)
    typer.echo("password changed; your other sessions and tokens were revoked")


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)
    app.command("password")(password)
