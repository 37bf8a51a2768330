"""The audit trail: who did what, when, to which project and target, and how it ended. Append-only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from selfserve.store.tables import AuditEvent


@dataclass
class AuditRecord:
    principal: str
    action: str
    project: str | None = None
    target: str | None = None
    outcome: str = "ok"
    detail: dict[str, Any] | None = field(default=None)


def record(
    session: Session,
    principal: str,
    action: str,
    *,
    project: str | None = None,
    target: str | None = None,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> None:
    """Add an event to the trail in the caller's transaction, so the change and its record commit together."""
    session.add(
        AuditEvent(principal=principal, action=action, project=project, target=target, outcome=outcome, detail=detail)
    )


def add(session: Session, rec: AuditRecord) -> None:
    record(
        session,
        rec.principal,
        rec.action,
        project=rec.project,
        target=rec.target,
        outcome=rec.outcome,
        detail=rec.detail,
    )


def query(
    session: Session,
    *,
    projects: list[str] | None = None,
    principal: str | None = None,
    since: datetime | None = None,
    action: str | None = None,
    limit: int = 200,
) -> list[AuditEvent]:
    """Newest first. ``projects=None`` means every project (admins); an empty list means none."""
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if projects is not None:
        stmt = stmt.where(AuditEvent.project.in_(projects))
    if principal:
        stmt = stmt.where(AuditEvent.principal == principal)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if action:
        stmt = stmt.where(AuditEvent.action.like(f"{action}%"))
    return list(session.scalars(stmt))
