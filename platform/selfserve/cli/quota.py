from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, output, parse_pairs, print_json, print_table

if TYPE_CHECKING:
    from selfserve.schemas import QuotaPublic, QuotaRequestPublic

app = typer.Typer(
    help="Project quotas: show them, set them (admins), request more (owners), approve or deny requests (admins).",
    no_args_is_help=True,
)
REQUEST_COLUMNS = ["id", "project", "status", "changes", "requested_by", "reason", "decided_by", "note", "created_at"]


class Status(StrEnum):
    pending = "pending"
    approved = "approved"
    denied = "denied"


def _limits(items: list[str]) -> dict[str, str]:
    return parse_pairs(items, "RESOURCE")


def _check_limits(items: list[str]) -> list[str]:
    # Checked while the command line is parsed, so that a malformed pair is a usage error (exit 2).
    _limits(items)
    return items


StatusOpt = typer.Option(None, "--status", "-s", help="Only requests in this state.")
IdArg = typer.Argument(..., metavar="ID", help="The request's id, from `quota requests`.")
NoteOpt = typer.Option("", "--note", help="A note for the requester.")
LimitsArg = typer.Argument(
    ...,
    metavar="RESOURCE=VALUE...",
    callback=_check_limits,
    help="New limits, e.g. storage=20GB runs=4 cpu=2 memory=4GB.",
)


def _percent(usage: float | None, limit: float) -> str:
    if usage is None:  # a per-run or rate limit: nothing is pooled
        return "-"
    if limit <= 0:
        return "-" if usage == 0 else "over"
    return f"{100 * usage / limit:.0f}%"


def _print_quotas(q: QuotaPublic) -> None:
    rows = [
        {
            "resource": i.resource,
            "usage / limit": i.shown,
            "used": _percent(i.usage, i.limit),
            "description": i.description,
        }
        for i in q.items
    ]
    print_table(rows, ["resource", "usage / limit", "used", "description"], title=f"quotas of {q.project}")


def _changes(changes: dict[str, float]) -> str:
    return ", ".join(f"{k}={int(v) if v == int(v) else v}" for k, v in changes.items())


def _request_row(r: QuotaRequestPublic) -> dict[str, object]:
    return {**r.model_dump(), "changes": _changes(r.changes)}


@app.command("show")
@handle_errors
def show(project: str, as_json: bool = JsonOpt) -> None:
    """Each of a project's limits with its current use."""
    q = client().quotas.get(project)
    if as_json:
        print_json(q)
        return
    _print_quotas(q)


@app.command("set")
@handle_errors
def set_(project: str, limits: list[str] = LimitsArg, as_json: bool = JsonOpt) -> None:
    """Set a project's limits (admins only)."""
    q = client().quotas.set(project, _limits(limits))
    if as_json:
        print_json(q)
        return
    _print_quotas(q)


@app.command("request")
@handle_errors
def request(
    project: str,
    limits: list[str] = LimitsArg,
    reason: str = typer.Option("", "--reason", "-r", help="Why the project needs more."),
    as_json: bool = JsonOpt,
) -> None:
    """Ask the admins for higher limits for a project."""
    r = client().quotas.request(project, _limits(limits), reason=reason)
    if as_json:
        print_json(r)
        return
    typer.echo(f"quota request {r.id} for {r.project} ({_changes(r.changes)}) is {r.status}; an admin decides it")


@app.command("requests")
@handle_errors
def requests(
    project: str | None = typer.Option(
        None, "--project", "-p", help="Only this project's requests (else all: admins)."
    ),
    status: Status | None = StatusOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Quota requests, newest first."""
    rows = client().quotas.requests(project, status=status.value if status else None)
    if as_json:
        print_json(rows)
        return
    output([_request_row(r) for r in rows], False, REQUEST_COLUMNS)


def _decide(request_id: int, approve: bool, note: str, as_json: bool) -> None:
    c = client()
    r = c.quotas.approve(request_id, note=note) if approve else c.quotas.deny(request_id, note=note)
    if as_json:
        print_json(r)
        return
    typer.echo(f"{r.status} quota request {r.id} for {r.project} ({_changes(r.changes)})")


@app.command("approve")
@handle_errors
def approve(request_id: int = IdArg, note: str = NoteOpt, as_json: bool = JsonOpt) -> None:
    """Approve a pending quota request and apply its limits (admins only)."""
    _decide(request_id, True, note, as_json)


@app.command("deny")
@handle_errors
def deny(request_id: int = IdArg, note: str = NoteOpt, as_json: bool = JsonOpt) -> None:
    """Deny a pending quota request (admins only)."""
    _decide(request_id, False, note, as_json)
