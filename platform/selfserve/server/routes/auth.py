from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from selfserve import schemas
from selfserve.policy import audit, identity, tokens
from selfserve.policy.authz import require_unscoped
from selfserve.server.deps import CallerDep, SessionDep, action
from selfserve.store.tables import Membership, Principal, Project, Token

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", response_model=schemas.LoginResponse, openapi_extra=action("auth:login", "public"))
def login(body: schemas.LoginRequest, session: SessionDep) -> schemas.LoginResponse:
    """Exchange a user name and password for a session token."""
    from selfserve.errors import SelfServeError

    try:
        user = identity.login(session, body.username, body.password)
    except SelfServeError as e:
        # A name that is no user's may be a password typed into the wrong field: it is not kept.
        known = session.scalar(select(Principal.id).where(Principal.name == body.username)) is not None
        audit.record(session, body.username if known else "(unknown user)", "auth:login", outcome=f"denied:{e.code}")
        session.commit()
        raise
    row, plaintext = tokens.issue(session, user.id, name=body.token_name[:64] or "session", kind="session")
    audit.record(session, user.name, "auth:login", target=f"token/{row.id}")
    session.commit()
    return schemas.LoginResponse(
        token=plaintext, expires_at=row.expires_at, user=schemas.UserPublic.model_validate(user)
    )


@router.post("/logout", status_code=204, openapi_extra=action("auth:logout", "self"))
def logout(caller: CallerDep, session: SessionDep) -> None:
    """Revoke the token this request was made with."""
    tokens.revoke(session, caller.id, caller.token_id)
    audit.record(session, caller.name, "auth:logout", target=f"token/{caller.token_id}")
    session.commit()


@router.get("/whoami", response_model=schemas.WhoAmI, openapi_extra=action("auth:whoami", "self"))
def whoami(caller: CallerDep, session: SessionDep) -> schemas.WhoAmI:
    """The caller, the token in use and the caller's projects with roles."""
    user = session.get(Principal, caller.id)
    tok = session.get(Token, caller.token_id)
    rows = session.execute(
        select(Project.name, Membership.role)
        .join(Membership, Membership.project_id == Project.id)
        .where(Membership.principal_id == caller.id)
        .order_by(Project.name)
    ).all()
    if caller.scoped:
        scoped_name = session.get(Project, caller.token_project_id)
        rows = [r for r in rows if scoped_name is not None and r[0] == scoped_name.name]
    return schemas.WhoAmI(
        user=schemas.UserPublic.model_validate(user),
        token=_token_public(tok),
        projects=[schemas.Membership(project=n, role=r) for n, r in rows],
    )


@router.post("/password", status_code=204, openapi_extra=action("auth:password", "self"))
def change_password(body: schemas.PasswordChange, caller: CallerDep, session: SessionDep) -> None:
    """Change the caller's own password; every other token of the caller is revoked."""
    from selfserve.errors import Unauthenticated

    require_unscoped(caller, "auth:password")
    user = session.get(Principal, caller.id)
    if user is None or not identity.verify_password(user.password_hash, body.current_password):
        raise Unauthenticated("current password is wrong")
    identity.set_password(user, body.new_password)
    tokens.revoke_all(session, caller.id)
    session.get(Token, caller.token_id).revoked_at = None  # type: ignore[union-attr]
    audit.record(session, caller.name, "auth:password", target=caller.name)
    session.commit()


def _token_public(t: Token | None) -> schemas.TokenPublic:
    assert t is not None
    return schemas.TokenPublic(
        id=t.id,
        name=t.name,
        kind=t.kind,
        prefix=t.prefix,
        project=t.project.name if t.project else None,
        created_at=t.created_at,
        expires_at=t.expires_at,
        revoked_at=t.revoked_at,
        last_used_at=t.last_used_at,
    )
