from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from selfserve import __version__, schemas
from selfserve.errors import ServiceUnavailable
from selfserve.policy import roles
from selfserve.server.deps import CallerDep, SessionDep, action

router = APIRouter(tags=["meta"])


@router.get("/health", response_model=schemas.Health, openapi_extra=action("health", "public"))
def health(session: SessionDep) -> schemas.Health:
    """Liveness and the metadata DB's reachability."""
    try:
        session.execute(text("SELECT 1"))
    except Exception as e:
        raise ServiceUnavailable(f"metadata database unreachable: {type(e).__name__}") from None
    return schemas.Health(status="ok", version=__version__, database="ok")


@router.get("/roles", response_model=list[schemas.RolePublic], openapi_extra=action("role:read", "self"))
def list_roles(caller: CallerDep) -> list[schemas.RolePublic]:
    """The project roles and the actions each allows."""
    return [
        schemas.RolePublic(name=name, description=spec.description, actions=sorted(spec.actions))
        for name, spec in roles.all_roles().items()
    ]
