from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from selfserve import schemas
from selfserve.errors import InvalidInput
from selfserve.policy import audit, identity, tokens
from selfserve.policy.authz import require_admin
from selfserve.server.deps import CallerDep, ProvisionersDep, SessionDep, UserName, action
from selfserve.store.tables import Principal

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", response_model=list[schemas.UserPublic], openapi_extra=action("user:read", "platform"))
def list_users(caller: CallerDep, session: SessionDep) -> list[schemas.UserPublic]:
    """Every user (admins only)."""
    require_admin(caller, "user:read")
    rows = session.scalars(select(Principal).where(Principal.kind == "user").order_by(Principal.name))
    return [schemas.UserPublic.model_validate(u) for u in rows]


@router.post("", response_model=schemas.UserCreated, status_code=201, openapi_extra=action("user:create", "platform"))
def create_user(body: schemas.UserCreate, caller: CallerDep, session: SessionDep) -> schemas.UserCreated:
    """Create a user; without a password one is generated and returned once."""
    require_admin(caller, "user:create")
    user, generated = identity.create_user(session, body.name, body.password, is_admin=body.is_admin)
    audit.record(session, caller.name, "user:create", target=body.name, detail={"admin": body.is_admin})
    session.commit()
    return schemas.UserCreated(**schemas.UserPublic.model_validate(user).model_dump(), password=generated)


def _set_disabled(
    session: SessionDep, caller: CallerDep, name: str, disabled: bool, provisioners: ProvisionersDep
) -> schemas.UserPublic:
    act = "user:disable" if disabled else "user:enable"
    require_admin(caller, act)
    user = identity.get_user(session, name)
    if user.kind != "user":
        raise InvalidInput(f"{name!r} is a service account; delete its project instead")
    if disabled and user.id == caller.id:
        raise InvalidInput("you cannot disable your own account")
    user.disabled = disabled
    if disabled:
        tokens.revoke_all(session, user.id)
    audit.record(session, caller.name, act, target=name)
    session.commit()
    from selfserve.ml.access import follow_disabled

    follow_disabled(session, user, provisioners, disabled=disabled)
    return schemas.UserPublic.model_validate(user)


@router.post("/{name}/disable", response_model=schemas.UserPublic, openapi_extra=action("user:disable", "platform"))
def disable_user(
    name: UserName, caller: CallerDep, session: SessionDep, provisioners: ProvisionersDep
) -> schemas.UserPublic:
    """Disable a user, revoke every token they hold and shut them out of MLflow."""
    return _set_disabled(session, caller, name, True, provisioners)


@router.post("/{name}/enable", response_model=schemas.UserPublic, openapi_extra=action("user:enable", "platform"))
def enable_user(
    name: UserName, caller: CallerDep, session: SessionDep, provisioners: ProvisionersDep
) -> schemas.UserPublic:
    """Enable a disabled user."""
    return _set_disabled(session, caller, name, False, provisioners)


@router.post(
    "/{name}/reset-password",
    response_model=schemas.UserCreated,
    openapi_extra=action("user:reset-password", "platform"),
)
def reset_password(
    name: UserName, body: schemas.PasswordReset, caller: CallerDep, session: SessionDep
) -> schemas.UserCreated:
    """Set a new password (generated and returned once when omitted), unlock, and revoke all tokens."""
    require_admin(caller, "user:reset-password")
    user = identity.get_user(session, name)
    if user.kind != "user":
        raise InvalidInput(f"{name!r} is a service account and has no password")
    generated = identity.set_password(user, body.password)
    tokens.revoke_all(session, user.id)
    audit.record(session, caller.name, "user:reset-password", target=name)
    session.commit()
    return schemas.UserCreated(**schemas.UserPublic.model_validate(user).model_dump(), password=generated)
