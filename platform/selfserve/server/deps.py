"""Request dependencies: the DB session, the authenticated caller, and the action each route declares."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from selfserve.errors import Unauthenticated
from selfserve.policy.authz import Caller
from selfserve.policy.provisioning import Provisioner
from selfserve.policy.tokens import authenticate
from selfserve.schemas import NAME_HELP

ACTION_KEY = "x-selfserve-action"
SCOPE_KEY = "x-selfserve-scope"
Scope = Literal["project", "platform", "self", "public"]


def action(name: str, scope: Scope = "project") -> dict[str, Any]:
    """What a route does, for the docs and the authorization matrix test.

    ``project``: ``authorize(caller, name, project)``; ``platform``: admins only; ``self``: any
    authenticated caller, on their own account; ``public``: no authentication.
    """
    return {ACTION_KEY: name, SCOPE_KEY: scope}


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.store.session() as session:
        yield session


_bearer = HTTPBearer(auto_error=False, description="A token from `selfserve login` or `selfserve token create`.")


def get_caller(
    request: Request,
    session: Annotated[Session, Depends(get_session)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if creds is None:
        raise Unauthenticated("missing bearer token; log in with `selfserve login` or pass a token")
    caller = authenticate(session, creds.credentials)
    request.state.caller = caller
    return caller


def get_provisioners(request: Request) -> list[Provisioner]:
    return request.app.state.provisioners  # type: ignore[no-any-return]


SessionDep = Annotated[Session, Depends(get_session)]
CallerDep = Annotated[Caller, Depends(get_caller)]
ProvisionersDep = Annotated[list[Provisioner], Depends(get_provisioners)]
ProjectName = Annotated[
    str, Path(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9-]{0,62}$", description=NAME_HELP)
]
UserName = Annotated[str, Path(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9-]{0,62}$")]
