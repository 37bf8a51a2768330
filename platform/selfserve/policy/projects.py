"""Projects, members and quotas: the self-service tenancy operations.

Each function takes a session and the caller, decides through :func:`authorize`, records the
change in the audit trail in the same transaction, and returns public schema models.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from selfserve import schemas
from selfserve.errors import Conflict, InvalidInput, NotFound, PermissionDenied, ServiceUnavailable
from selfserve.policy import audit, identity, quotas, roles
from selfserve.policy.authz import Caller, authorize, project_not_found, require_admin
from selfserve.policy.provisioning import Provisioner, retry
from selfserve.store.tables import (
    Membership,
    Principal,
    Project,
    ProvisionStep,
    QuotaRequest,
    utcnow,
)

SERVICE_ROLE = "service"


def service_account_name(project: str) -> str:
    # A '.' cannot appear in a user name, so this never collides with a person.
    return f"svc.{project}"


# -- projects --------------------------------------------------------------------------


def _public(session: Session, proj: Project, role: str | None) -> schemas.ProjectPublic:
    steps = session.scalars(select(ProvisionStep).where(ProvisionStep.project_id == proj.id).order_by(ProvisionStep.id))
    return schemas.ProjectPublic(
        name=proj.name,
        description=proj.description,
        status=proj.status,
        created_by=proj.created_by,
        created_at=proj.created_at,
        role=role,
        provisioning=[schemas.ProvisionStepPublic.model_validate(s) for s in steps],
    )


def create(
    session: Session, caller: Caller, body: schemas.ProjectCreate, provisioners: Sequence[Provisioner]
) -> schemas.ProjectPublic:
    if caller.scoped:
        raise PermissionDenied("project:create is not allowed with a project-scoped token")
    if caller.kind != "user":
        raise PermissionDenied("service accounts cannot create projects")
    if session.scalar(select(Project.id).where(Project.name == body.name)) is not None:
        raise Conflict(f"project name {body.name!r} is taken; choose another")
    if not caller.is_admin:
        from selfserve.settings import get_settings

        owned = session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(Membership.principal_id == caller.id, Membership.role == roles.OWNER)
        )
        cap = get_settings().platform.max_projects_per_user
        if (owned or 0) >= cap:
            raise Conflict(f"you own {owned} projects, the most one user may own ({cap}); delete one first")
    proj = Project(name=body.name, description=body.description, created_by=caller.name, status="provisioning")
    session.add(proj)
    session.flush()
    session.add(Membership(project_id=proj.id, principal_id=caller.id, role=roles.OWNER))
    svc, _ = identity.create_user(session, service_account_name(proj.name), kind="service")
    svc.project_id = proj.id
    session.add(Membership(project_id=proj.id, principal_id=svc.id, role=SERVICE_ROLE))
    quotas.init_project(session, proj)
    for p in provisioners:
        session.add(ProvisionStep(project_id=proj.id, provisioner=p.name, status="pending"))
    audit.record(session, caller.name, "project:create", project=proj.name, target=proj.name)
    session.commit()
    run_provisioners(session, proj, provisioners)
    return _public(session, proj, roles.OWNER)


def run_provisioners(
    session: Session, proj: Project, provisioners: Sequence[Provisioner], *, principal: str = "system"
) -> None:
    """Run every provisioner not yet ready, recording each step's state; idempotent.

    ``principal`` is who the audit trail names: the platform's own follow-up of a create, or
    the user who asked for a retry.
    """
    steps = {
        s.provisioner: s for s in session.scalars(select(ProvisionStep).where(ProvisionStep.project_id == proj.id))
    }
    failed = False
    for p in provisioners:
        step = steps.get(p.name) or ProvisionStep(project_id=proj.id, provisioner=p.name)
        session.add(step)
        if step.status == "ready":
            continue
        try:
            used = retry(lambda p=p: p.provision(proj.name))  # type: ignore[misc]
            step.attempts = (step.attempts or 0) + used
            step.status, step.error = "ready", None
        except Exception as e:
            step.attempts = (step.attempts or 0) + 3
            step.status, step.error = "failed", f"{type(e).__name__}: {e}"[:2000]
            failed = True
        session.commit()
    proj.status = "failed" if failed else "ready"
    audit.record(
        session,
        principal,
        "project:provision",
        project=proj.name,
        target=proj.name,
        outcome="failed" if failed else "ok",
    )
    session.commit()


def provision(
    session: Session, caller: Caller, name: str, provisioners: Sequence[Provisioner]
) -> schemas.ProjectPublic:
    proj, role = authorize(session, caller, "project:update", name)
    run_provisioners(session, proj, provisioners, principal=caller.name)
    return _public(session, proj, role)


def list_visible(session: Session, caller: Caller) -> list[schemas.ProjectPublic]:
    """The caller's projects; every project for an admin. A scoped token sees only its project."""
    # Columns, not entities: this is the most frequent call, and rows need no identity map.
    stmt = select(
        Project.name, Project.description, Project.status, Project.created_by, Project.created_at, Membership.role
    ).outerjoin(Membership, (Membership.project_id == Project.id) & (Membership.principal_id == caller.id))
    if not caller.is_admin:
        stmt = stmt.where(Membership.id.is_not(None))
    if caller.scoped:
        stmt = stmt.where(Project.id == caller.token_project_id)
    return [
        schemas.ProjectPublic(
            name=name,
            description=description,
            status=status,
            created_by=created_by,
            created_at=created_at,
            role=role,
        )
        for name, description, status, created_by, created_at, role in session.execute(stmt.order_by(Project.name))
    ]


def show(session: Session, caller: Caller, name: str) -> schemas.ProjectPublic:
    proj, role = authorize(session, caller, "project:read", name)
    return _public(session, proj, role)


def update(session: Session, caller: Caller, name: str, body: schemas.ProjectUpdate) -> schemas.ProjectPublic:
    proj, role = authorize(session, caller, "project:update", name)
    proj.description = body.description
    audit.record(session, caller.name, "project:update", project=name, target=name)
    session.commit()
    return _public(session, proj, role)


def delete(session: Session, caller: Caller, name: str, provisioners: Sequence[Provisioner]) -> None:
    proj, _ = authorize(session, caller, "project:delete", name)
    proj.status = "deleting"
    session.commit()
    for p in reversed(provisioners):
        try:
            retry(lambda p=p: p.deprovision(name))  # type: ignore[misc]
        except Exception as e:
            proj.status = "failed"
            audit.record(
                session,
                caller.name,
                "project:delete",
                project=name,
                target=name,
                outcome="failed",
                detail={"provisioner": p.name, "error": str(e)[:500]},
            )
            session.commit()
            raise ServiceUnavailable(
                f"could not remove project {name!r} from {p.name}: {e}; the project is kept, retry the delete"
            ) from None
    session.delete(proj)
    audit.record(session, caller.name, "project:delete", project=name, target=name)
    session.commit()


# -- members ---------------------------------------------------------------------------


def _members(session: Session, proj: Project) -> list[Membership]:
    stmt = select(Membership).where(Membership.project_id == proj.id).order_by(Membership.id)
    return list(session.scalars(stmt))


def _member_public(m: Membership) -> schemas.MemberPublic:
    return schemas.MemberPublic(user=m.principal.name, kind=m.principal.kind, role=m.role, created_at=m.created_at)


def _notify_members(session: Session, proj: Project, provisioners: Sequence[Provisioner]) -> None:
    members = {m.principal.name: m.role for m in _members(session, proj)}
    for p in provisioners:
        p.on_members_changed(proj.name, members)


def list_members(session: Session, caller: Caller, name: str) -> list[schemas.MemberPublic]:
    proj, _ = authorize(session, caller, "member:read", name)
    return [_member_public(m) for m in _members(session, proj)]


def _find_membership(session: Session, proj: Project, user: str) -> Membership:
    m = session.scalar(
        select(Membership).join(Principal).where(Membership.project_id == proj.id, Principal.name == user)
    )
    if m is None:
        raise NotFound(f"{user!r} is not a member of project {proj.name!r}")
    return m


def _keep_an_owner(session: Session, proj: Project, m: Membership, new_role: str | None) -> None:
    if m.role != roles.OWNER or new_role == roles.OWNER:
        return
    owners = session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.project_id == proj.id, Membership.role == roles.OWNER)
    )
    if (owners or 0) <= 1:
        raise Conflict(f"project {proj.name!r} must keep at least one owner")


def _check_member_role(role: str) -> str:
    roles.check_role(role)
    if role == SERVICE_ROLE:
        raise InvalidInput(f"role {SERVICE_ROLE!r} is reserved for the project's service account")
    return role


def add_member(
    session: Session, caller: Caller, name: str, body: schemas.MemberAdd, provisioners: Sequence[Provisioner]
) -> schemas.MemberPublic:
    proj, _ = authorize(session, caller, "member:write", name)
    _check_member_role(body.role)
    user = session.scalar(select(Principal).where(Principal.name == body.user, Principal.kind == "user"))
    if user is None:
        raise NotFound(f"user {body.user!r} not found")
    if session.scalar(
        select(Membership.id).where(Membership.project_id == proj.id, Membership.principal_id == user.id)
    ):
        raise Conflict(f"{body.user!r} is already a member of project {name!r}; use set-role to change the role")
    m = Membership(project_id=proj.id, principal_id=user.id, role=body.role)
    session.add(m)
    audit.record(session, caller.name, "member:add", project=name, target=body.user, detail={"role": body.role})
    session.commit()
    _notify_members(session, proj, provisioners)
    return _member_public(m)


def set_member_role(
    session: Session,
    caller: Caller,
    name: str,
    user: str,
    body: schemas.MemberUpdate,
    provisioners: Sequence[Provisioner],
) -> schemas.MemberPublic:
    proj, _ = authorize(session, caller, "member:write", name)
    _check_member_role(body.role)
    m = _find_membership(session, proj, user)
    if m.principal.kind != "user":
        raise InvalidInput("the service account's role cannot be changed")
    _keep_an_owner(session, proj, m, body.role)
    before = m.role
    m.role = body.role
    audit.record(
        session, caller.name, "member:set-role", project=name, target=user, detail={"from": before, "to": body.role}
    )
    session.commit()
    _notify_members(session, proj, provisioners)
    return _member_public(m)


def remove_member(session: Session, caller: Caller, name: str, user: str, provisioners: Sequence[Provisioner]) -> None:
    proj, _ = authorize(session, caller, "member:write", name)
    m = _find_membership(session, proj, user)
    if m.principal.kind != "user":
        raise InvalidInput("the service account cannot be removed")
    _keep_an_owner(session, proj, m, None)
    session.delete(m)
    audit.record(session, caller.name, "member:remove", project=name, target=user)
    session.commit()
    _notify_members(session, proj, provisioners)


# -- quotas ----------------------------------------------------------------------------


def quota_view(session: Session, proj: Project) -> schemas.QuotaPublic:
    lim = quotas.limits(session, proj)
    used = quotas.usage(session, proj)
    items = []
    for name, res in quotas.RESOURCES.items():
        u = used.get(name, 0.0) if res.kind == "pool" else None
        shown = quotas.human(lim[name], res.unit)
        if u is not None:
            shown = f"{quotas.human(u, res.unit)} / {shown}"
        items.append(
            schemas.QuotaItem(
                resource=name, description=res.description, unit=res.unit, limit=lim[name], usage=u, shown=shown
            )
        )
    return schemas.QuotaPublic(project=proj.name, items=items)


def show_quotas(session: Session, caller: Caller, name: str) -> schemas.QuotaPublic:
    proj, _ = authorize(session, caller, "quota:read", name)
    return quota_view(session, proj)


def show_usage(session: Session, caller: Caller, name: str) -> schemas.UsagePublic:
    proj, _ = authorize(session, caller, "quota:read", name)
    from selfserve.store.tables import Usage

    rows = session.scalars(select(Usage).where(Usage.project_id == proj.id).order_by(Usage.resource))
    units = {k: r.unit for k, r in quotas.RESOURCES.items()}
    items = [
        schemas.UsageItem(
            resource=u.resource,
            amount=u.amount,
            shown=quotas.human(u.amount, units.get(u.resource, "count")),
            updated_at=u.updated_at,
        )
        for u in rows
    ]
    return schemas.UsagePublic(project=name, items=items)


def _apply_quotas(
    session: Session, proj: Project, new: dict[str, float], provisioners: Sequence[Provisioner]
) -> dict[str, float]:
    before = quotas.set_limits(session, proj, new)
    session.flush()
    lim = quotas.limits(session, proj)
    for p in provisioners:
        p.on_quotas_changed(proj.name, lim)
    return before


def set_quotas(
    session: Session, caller: Caller, name: str, body: schemas.QuotaSet, provisioners: Sequence[Provisioner]
) -> schemas.QuotaPublic:
    proj, _ = authorize(session, caller, "quota:set", name)
    require_admin(caller, "quota:set")
    new = quotas.parse_limits(body.limits)
    before = _apply_quotas(session, proj, new, provisioners)
    audit.record(session, caller.name, "quota:set", project=name, target=name, detail={"from": before, "to": new})
    session.commit()
    return quota_view(session, proj)


def _request_public(r: QuotaRequest) -> schemas.QuotaRequestPublic:
    return schemas.QuotaRequestPublic(
        id=r.id,
        project=r.project.name,
        requested_by=r.requested_by,
        changes=r.changes,
        reason=r.reason,
        status=r.status,
        decided_by=r.decided_by,
        decided_at=r.decided_at,
        note=r.note,
        created_at=r.created_at,
    )


def request_quota(
    session: Session, caller: Caller, name: str, body: schemas.QuotaRequestCreate
) -> schemas.QuotaRequestPublic:
    proj, _ = authorize(session, caller, "quota:request", name)
    changes = quotas.parse_limits(body.limits)
    r = QuotaRequest(project_id=proj.id, requested_by=caller.name, changes=changes, reason=body.reason)
    session.add(r)
    session.flush()
    audit.record(
        session, caller.name, "quota:request", project=name, target=f"request/{r.id}", detail={"changes": changes}
    )
    session.commit()
    return _request_public(r)


def list_requests(
    session: Session, caller: Caller, project: str | None = None, status: str | None = None
) -> list[schemas.QuotaRequestPublic]:
    stmt = select(QuotaRequest).order_by(QuotaRequest.id.desc())
    if project is not None:
        proj, _ = authorize(session, caller, "quota:read", project)
        stmt = stmt.where(QuotaRequest.project_id == proj.id)
    else:
        require_admin(caller, "quota:approve")
    if status:
        stmt = stmt.where(QuotaRequest.status == status)
    return [_request_public(r) for r in session.scalars(stmt)]


def decide_request(
    session: Session,
    caller: Caller,
    request_id: int,
    approve: bool,
    body: schemas.QuotaDecision,
    provisioners: Sequence[Provisioner],
) -> schemas.QuotaRequestPublic:
    action = "quota:approve" if approve else "quota:deny"
    require_admin(caller, action)
    r = session.get(QuotaRequest, request_id)
    if r is None:
        raise NotFound(f"quota request {request_id} not found")
    if r.status != "pending":
        raise Conflict(f"quota request {request_id} is already {r.status}")
    r.status = "approved" if approve else "denied"
    r.decided_by, r.decided_at, r.note = caller.name, utcnow(), body.note
    if approve:
        _apply_quotas(session, r.project, dict(r.changes), provisioners)
    audit.record(
        session, caller.name, action, project=r.project.name, target=f"request/{r.id}", detail={"changes": r.changes}
    )
    session.commit()
    return _request_public(r)


def require_project(session: Session, name: str) -> Project:
    proj = session.scalar(select(Project).where(Project.name == name))
    if proj is None:
        raise project_not_found(name)
    return proj
