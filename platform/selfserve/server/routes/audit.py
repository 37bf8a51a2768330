from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from selfserve import schemas
from selfserve.errors import InvalidInput
from selfserve.policy import audit
from selfserve.policy.authz import authorize, require_admin
from selfserve.server.deps import CallerDep, ProjectName, SessionDep, action
from selfserve.settings import parse_duration
from selfserve.store.tables import utcnow

router = APIRouter(tags=["audit"])
SinceQuery = Query(None, max_length=40, description="A duration back from now (1h, 7d) or an ISO time.")
UserQuery = Annotated[schemas.Text | None, Query(max_length=64, description="Only this principal's events.")]


def parse_since(since: str | None) -> datetime | None:
    if not since:
        return None
    try:
        return utcnow() - timedelta(seconds=parse_duration(since))
    except ValueError:
        pass
    except OverflowError:
        raise InvalidInput(f"invalid since {since!r}: that reaches back past the year 1") from None
    try:
        t = datetime.fromisoformat(since)
        # In UTC here, so that a time that exists only in another zone is refused now, not in the query.
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(f"invalid since {since!r}: use a duration like 1h or 7d, or an ISO time") from None


@router.get(
    "/projects/{project}/audit", response_model=list[schemas.AuditEventPublic], openapi_extra=action("audit:read")
)
def project_audit(
    project: ProjectName,
    caller: CallerDep,
    session: SessionDep,
    user: UserQuery = None,
    since: str | None = SinceQuery,
    limit: int = Query(200, ge=1, le=5000),
) -> list[schemas.AuditEventPublic]:
    """The project's audit trail, newest first."""
    authorize(session, caller, "audit:read", project)
    rows = audit.query(session, projects=[project], principal=user, since=parse_since(since), limit=limit)
    return [schemas.AuditEventPublic.model_validate(r) for r in rows]


@router.get("/audit", response_model=list[schemas.AuditEventPublic], openapi_extra=action("audit:read-all", "platform"))
def platform_audit(
    caller: CallerDep,
    session: SessionDep,
    user: UserQuery = None,
    since: str | None = SinceQuery,
    limit: int = Query(200, ge=1, le=5000),
) -> list[schemas.AuditEventPublic]:
    """The whole platform's audit trail, newest first (admins only)."""
    require_admin(caller, "audit:read-all")
    rows = audit.query(session, principal=user, since=parse_since(since), limit=limit)
    return [schemas.AuditEventPublic.model_validate(r) for r in rows]
