from __future__ import annotations

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, output

# A plain command (``selfserve audit --project churn``) rather than a noun with verbs: the Typer
# group runs its callback when no sub-command is given.
app = typer.Typer(invoke_without_command=True, subcommand_metavar="")
COLUMNS = ["id", "at", "principal", "action", "project", "target", "outcome"]


@app.callback()
@handle_errors
def audit(
    project: str | None = typer.Option(None, "--project", "-p", help="Only this project's trail (else all: admins)."),
    user: str | None = typer.Option(None, "--user", "-u", help="Only what this user or service account did."),
    since: str | None = typer.Option(None, "--since", help="A duration back from now (1h, 7d) or an ISO time."),
    limit: int = typer.Option(200, "--limit", "-n", min=1, max=5000, help="At most this many events."),
    as_json: bool = JsonOpt,
) -> None:
    """The audit trail, newest first: who did what, when, in which project, and the outcome."""
    events = client().audit.list(project, user=user, since=since, limit=limit)
    output(events, as_json, COLUMNS)
