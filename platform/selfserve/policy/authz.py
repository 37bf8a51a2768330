"""``authorize()``: the one decision every request passes through."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from selfserve.errors import NotFound, PermissionDenied
from selfserve.policy import roles
from selfserve.policy.audit import AuditRecord
from selfserve.store.tables import Membership, Project


@dataclass(frozen=True)
class Caller:
    """An authenticated principal, as one request sees it."""

    id: int
    name: str
    kind: str
    is_admin: bool
    token_id: int
    token_project_id: int | None = None

    @property
    def scoped(self) -> bool:
        return self.token_project_id is not None


def _denied(exc: NotFound | PermissionDenied, caller: Caller, action: str, project: str | None) -> Exception:
    # The handler writes this record in its own transaction, so a denial is kept even though
    # the request's transaction rolls back.
    exc.audit = AuditRecord(  # type: ignore[attr-defined]
        principal=caller.name, action=action, project=project, outcome=f"denied:{exc.code}"
    )
    return exc


def project_not_found(name: str) -> NotFound:
    return NotFound(f"project {name!r} not found")


def authorize(session: Session, caller: Caller, action: str, project: str) -> tuple[Project, str | None]:
    """Decide whether ``caller`` may take ``action`` in ``project``.

    Returns:
        The project row and the caller's role in it (None for an admin who is not a member).

    Raises:
        NotFound: the project does not exist, or the caller is not a member (its existence is
            not revealed), or the caller's token is limited to another project.
        PermissionDenied: the caller is a member whose role does not include ``action``.
    """
    proj = session.scalar(select(Project).where(Project.name == project))
    if proj is None or (caller.scoped and proj.id != caller.token_project_id):
        raise _denied(project_not_found(project), caller, action, project)
    role = session.scalar(
        select(Membership.role).where(Membership.project_id == proj.id, Membership.principal_id == caller.id)
    )
    if caller.is_admin:
        return proj, role
    if role is None:
        raise _denied(project_not_found(project), caller, action, project)
    if action not in roles.actions_of(role):
        raise _denied(
            PermissionDenied(f"role {role!r} may not {action} in project {project!r}"), caller, action, project
        )
    return proj, role


def require_admin(caller: Caller, action: str) -> None:
    """Platform-level actions (users, quota grants) are for admins with an unscoped token.

    Raises:
        PermissionDenied: the caller is not an admin, or uses a project-scoped token.
    """
    if not caller.is_admin or caller.scoped:
        raise _denied(PermissionDenied(f"{action} needs a platform admin"), caller, action, None)


def require_unscoped(caller: Caller, action: str) -> None:
    """Actions on the caller's own account are refused to project-scoped tokens."""
    if caller.scoped:
        raise _denied(PermissionDenied(f"{action} is not allowed with a project-scoped token"), caller, action, None)
