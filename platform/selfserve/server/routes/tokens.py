from __future__ import annotations

from fastapi import APIRouter

from selfserve import schemas
from selfserve.policy import audit, tokens
from selfserve.policy.authz import authorize, require_unscoped
from selfserve.server.deps import CallerDep, RowId, SessionDep, action
from selfserve.server.routes.auth import _token_public

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.get("", response_model=list[schemas.TokenPublic], openapi_extra=action("token:read", "self"))
def list_tokens(caller: CallerDep, session: SessionDep) -> list[schemas.TokenPublic]:
    """The caller's tokens (never the tokens themselves: only a prefix)."""
    return [_token_public(t) for t in tokens.list_for(session, caller.id)]


@router.post("", response_model=schemas.TokenCreated, status_code=201, openapi_extra=action("token:create", "self"))
def create_token(body: schemas.TokenCreate, caller: CallerDep, session: SessionDep) -> schemas.TokenCreated:
    """Create an API token for the caller, optionally limited to one project. Shown once."""
    require_unscoped(caller, "token:create")
    project = None
    if body.project:
        project, _ = authorize(session, caller, "project:read", body.project)
    row, plaintext = tokens.issue(session, caller.id, name=body.name, expires=body.expires, project=project)
    audit.record(session, caller.name, "token:create", project=body.project, target=f"token/{row.id}")
    session.commit()
    return schemas.TokenCreated(**_token_public(row).model_dump(), token=plaintext)


@router.delete("/{token_id}", status_code=204, openapi_extra=action("token:revoke", "self"))
def revoke_token(token_id: RowId, caller: CallerDep, session: SessionDep) -> None:
    """Revoke one of the caller's tokens."""
    tokens.revoke(session, caller.id, token_id)
    audit.record(session, caller.name, "token:revoke", target=f"token/{token_id}")
    session.commit()
