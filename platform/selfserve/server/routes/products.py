from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from selfserve.data import catalog
from selfserve.schemas import Text
from selfserve.schemas.data import AccessPublic, AccessRequestCreate, ProductPublic, ProductPublish
from selfserve.server.deps import CallerDep, DatasetName, ProjectName, RowId, SessionDep, action

router = APIRouter(tags=["products"])
SearchText = Annotated[Text, Query(max_length=200)]
SearchTag = Annotated[Text | None, Query(max_length=40)]


@router.post(
    "/projects/{project}/datasets/{name}/publish",
    response_model=ProductPublic,
    openapi_extra=action("product:publish"),
)
def publish(
    project: ProjectName, name: DatasetName, body: ProductPublish, caller: CallerDep, session: SessionDep
) -> ProductPublic:
    """Publish a dataset as a data product: its metadata becomes visible in every user's catalog."""
    return catalog.publish(session, caller, project, name, body)


@router.delete("/projects/{project}/datasets/{name}/publish", status_code=204, openapi_extra=action("product:publish"))
def unpublish(project: ProjectName, name: DatasetName, caller: CallerDep, session: SessionDep) -> None:
    catalog.unpublish(session, caller, project, name)


@router.get("/products", response_model=list[ProductPublic], openapi_extra=action("product:search", "self"))
def search_products(
    caller: CallerDep, session: SessionDep, q: SearchText = "", tag: SearchTag = None
) -> list[ProductPublic]:
    """Search every project's published products (metadata only, no data)."""
    return catalog.search(session, caller, q, tag)


@router.post(
    "/products/{project}/{name}/requests",
    response_model=AccessPublic,
    status_code=201,
    openapi_extra=action("product:request", "self"),
)
def request_access(
    project: ProjectName, name: DatasetName, body: AccessRequestCreate, caller: CallerDep, session: SessionDep
) -> AccessPublic:
    """Ask for read access to a product for one of your projects (needs product:request there)."""
    return catalog.request_access(session, caller, project, name, body)


@router.get(
    "/projects/{project}/product-requests", response_model=list[AccessPublic], openapi_extra=action("product:grant")
)
def list_access_requests(
    project: ProjectName,
    caller: CallerDep,
    session: SessionDep,
    status: str | None = Query(None, pattern="^(requested|granted|denied|revoked)$"),
) -> list[AccessPublic]:
    """Requests for this project's products."""
    return catalog.list_requests(session, caller, project, status)


@router.post(
    "/projects/{project}/product-requests/{request_id}/{decision}",
    response_model=AccessPublic,
    openapi_extra=action("product:grant"),
)
def decide_access(
    project: ProjectName, request_id: RowId, decision: str, caller: CallerDep, session: SessionDep
) -> AccessPublic:
    """grant, deny or revoke a request."""
    return catalog.decide(session, caller, project, request_id, decision)
