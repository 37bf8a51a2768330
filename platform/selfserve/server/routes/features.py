"""Feature views: create, list, show, materialize, delete, and read one row by key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from selfserve.errors import ServiceUnavailable
from selfserve.schemas.serving import FeatureRow, FeatureViewCreate, FeatureViewPublic
from selfserve.server.deps import CallerDep, ObjectStoreDep, ProjectName, SessionDep, action, read_db
from selfserve.serving import features as service
from selfserve.serving.features import OnlineFeatures

router = APIRouter(prefix="/projects/{project}", tags=["features"])

FeatureName = Annotated[str, Path(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9-]{0,62}$")]
FeatureKey = Annotated[
    str,
    Path(
        min_length=1, max_length=255, description="The entity key as text: 42 finds the integer 42 in an integer key."
    ),
]


def get_features(request: Request) -> OnlineFeatures:
    features: OnlineFeatures | None = getattr(request.app.state, "features", None)
    if features is None:
        raise ServiceUnavailable("feature views are not available on this platform")
    return features


FeaturesDep = Annotated[OnlineFeatures, Depends(get_features)]


@router.get("/features", response_model=list[FeatureViewPublic], openapi_extra=action("feature:read"))
async def list_features(
    request: Request, project: ProjectName, caller: CallerDep, session: SessionDep, features: FeaturesDep
) -> list[FeatureViewPublic]:
    """The project's feature views, with the dataset version each serves."""
    return await read_db(request, service.list_views, session, features, caller, project)


@router.post("/features", response_model=FeatureViewPublic, status_code=201, openapi_extra=action("feature:write"))
def create_feature(
    project: ProjectName,
    body: FeatureViewCreate,
    caller: CallerDep,
    session: SessionDep,
    store: ObjectStoreDep,
    features: FeaturesDep,
) -> FeatureViewPublic:
    """Create a view of a dataset keyed by a column, and materialize its newest version into the online store.

    The view follows its dataset: each new version is materialized within seconds. A view whose data
    cannot be served (duplicate or null keys) is created in state ``failed``, with the reason.
    """
    return service.create(session, store, features, caller, project, body)


@router.get("/features/{name}", response_model=FeatureViewPublic, openapi_extra=action("feature:read"))
async def show_feature(
    request: Request,
    project: ProjectName,
    name: FeatureName,
    caller: CallerDep,
    session: SessionDep,
    features: FeaturesDep,
) -> FeatureViewPublic:
    return await read_db(request, service.show, session, features, caller, project, name)


@router.post("/features/{name}/materialize", response_model=FeatureViewPublic, openapi_extra=action("feature:write"))
def materialize_feature(
    project: ProjectName,
    name: FeatureName,
    caller: CallerDep,
    session: SessionDep,
    store: ObjectStoreDep,
    features: FeaturesDep,
) -> FeatureViewPublic:
    """Materialize the dataset's newest version now, even if the view holds it already."""
    return service.materialize_now(session, store, features, caller, project, name)


@router.delete("/features/{name}", status_code=204, openapi_extra=action("feature:write"))
def delete_feature(
    project: ProjectName, name: FeatureName, caller: CallerDep, session: SessionDep, features: FeaturesDep
) -> None:
    """Delete a view and its rows in the online store; the dataset stays."""
    service.delete(session, features, caller, project, name)


@router.get("/features/{name}/{key}", response_model=FeatureRow, openapi_extra=action("feature:read"))
async def lookup_feature(
    request: Request,
    project: ProjectName,
    name: FeatureName,
    key: FeatureKey,
    caller: CallerDep,
    session: SessionDep,
    features: FeaturesDep,
) -> Response:
    """The values of one key, and the dataset version they come from."""
    # With the metadata DB and the online store both local SQLite files, the whole lookup is a few
    # local reads, cheaper on the event loop than the hop to a worker thread; over a network it is not.
    if features.is_local and request.app.state.store.is_local:
        row = service.lookup(session, features, caller, project, name, key)
    else:
        row = await run_in_threadpool(service.lookup, session, features, caller, project, name, key)
    # The row is a validated FeatureRow already: written by pydantic at once, not validated and encoded again.
    return Response(row.model_dump_json(), media_type="application/json")
