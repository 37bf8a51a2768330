"""``selfserve alert``: what monitors raised (drift over their threshold), and acknowledging it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, print_json

if TYPE_CHECKING:
    from selfserve.schemas.monitoring import AlertPublic

app = typer.Typer(
    help="Alerts: what monitors raised when drift reached their threshold; acknowledge them once handled.",
    no_args_is_help=True,
)
COLUMNS = ["id", "route", "kind", "message", "created_at", "webhook", "acknowledged"]
ProjectArg = typer.Argument(..., help="The project.")


def acknowledged_text(a: AlertPublic) -> str | None:
    if a.acknowledged_at is None:
        return None
    return f"{a.acknowledged_by or '?'} at {a.acknowledged_at:%Y-%m-%d %H:%M:%S}"


def _row(a: AlertPublic) -> dict[str, Any]:
    return {**a.model_dump(), "acknowledged": acknowledged_text(a)}


@app.command("list")
@handle_errors
def list_(
    project: str = ProjectArg,
    route: str | None = typer.Option(None, "--route", "-r", help="Only the alerts of this route."),
    open_only: bool = typer.Option(False, "--open", help="Only the alerts nobody has acknowledged."),
    limit: int = typer.Option(100, "--limit", "-n", min=1, max=1000, help="At most this many, newest first."),
    as_json: bool = JsonOpt,
) -> None:
    """The project's alerts, newest first, with how sending each to its webhook went."""
    from selfserve.cli.dataset import print_rows

    found = client().alerts.list(project, route=route, open_only=open_only, limit=limit)
    if as_json:
        print_json(found)
        return
    print_rows([_row(a) for a in found], COLUMNS, keep=("id", "route", "created_at"))


@app.command("ack")
@handle_errors
def ack(
    project: str = ProjectArg,
    alert_id: int = typer.Argument(..., min=1, metavar="ID", help="The alert, from `alert list`."),
    as_json: bool = JsonOpt,
) -> None:
    """Acknowledge an alert: it is handled, and `alert list --open` leaves it out."""
    a = client().alerts.ack(project, alert_id)
    if as_json:
        print_json(a)
        return
    typer.echo(f"acknowledged alert {a.id} on route {a.route} ({acknowledged_text(a)})")
