"""Request dependencies: the DB session, the authenticated caller, and the action each route declares."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from selfserve.errors import Unauthenticated
from selfserve.policy.authz import Caller
from selfserve.policy.provisioning import Provisioner
from selfserve.policy.tokens import authenticate, cached_caller
from selfserve.schemas import NAME_HELP

T = TypeVar("T")
ACTION_KEY = "x-selfserve-action"
SCOPE_KEY = "x-selfserve-scope"
Scope = Literal["project", "platform", "self", "public"]


def action(name: str, scope: Scope = "project") -> dict[str, Any]:
    """What a route does, for the docs and the authorization matrix test.

    ``project``: ``authorize(caller, name, project)``; ``platform``: admins only; ``self``: any
    authenticated caller, on their own account; ``public``: no authentication.
    """
    return {ACTION_KEY: name, SCOPE_KEY: scope}


async def get_session(request: Request) -> AsyncIterator[Session]:
    # Creating a Session does no I/O, so it happens on the event loop. Closing it returns a
    # connection to the pool (a rollback): over a network that runs in the threadpool, but
    # SQLite's is a local call of microseconds, cheaper than the hop to a thread.
    store = request.app.state.store
    session = store.session()
    try:
        yield session
    finally:
        if store.is_local:
            session.close()
        else:
            await run_in_threadpool(session.close)


_bearer = HTTPBearer(auto_error=False, description="A token from `selfserve login` or `selfserve token create`.")


async def get_caller(
    request: Request,
    session: Annotated[Session, Depends(get_session)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if creds is None:
        raise Unauthenticated("missing bearer token; log in with `selfserve login` or pass a token")
    caller = cached_caller(creds.credentials) or await run_in_threadpool(authenticate, session, creds.credentials)
    request.state.caller = caller
    return caller


async def read_db(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run a read-only DB call: inline on the embedded SQLite (WAL readers never wait, and a local
    read of a few hundred microseconds is cheaper than the hop to a worker thread), in the
    threadpool on a networked DB."""
    if request.app.state.store.is_local:
        return fn(*args)
    return await run_in_threadpool(fn, *args)


def get_provisioners(request: Request) -> list[Provisioner]:
    return request.app.state.provisioners  # type: ignore[no-any-return]


SessionDep = Annotated[Session, Depends(get_session)]
CallerDep = Annotated[Caller, Depends(get_caller)]
ProvisionersDep = Annotated[list[Provisioner], Depends(get_provisioners)]
ProjectName = Annotated[
    str, Path(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9-]{0,62}$", description=NAME_HELP)
]
UserName = Annotated[str, Path(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9-]{0,62}$")]
# Ids are INTEGER columns: a larger number could only miss, and the DB driver would fail on it.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def get_object_store(request: Request) -> Any:
    return request.app.state.object_store


def get_jobs(request: Request) -> Any:
    return request.app.state.jobs


ObjectStoreDep = Annotated[Any, Depends(get_object_store)]
JobsDep = Annotated[Any, Depends(get_jobs)]
DatasetName = Annotated[str, Path(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9-]{0,62}$")]
