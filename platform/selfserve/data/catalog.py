"""Data products: datasets published to every user's catalog (metadata only), read by other
projects once the owner grants a request."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from selfserve.data import datasets
from selfserve.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from selfserve.policy import audit
from selfserve.policy.authz import Caller, authorize
from selfserve.schemas.data import AccessPublic, AccessRequestCreate, ProductPublic, ProductPublish
from selfserve.settings import parse_duration
from selfserve.store.tables import Dataset, Membership, Product, ProductAccess, Project, utcnow


def freshness(product: Product, now: datetime | None = None) -> Literal["fresh", "stale", "no-sla"]:
    if product.sla_freshness_seconds is None:
        return "no-sla"
    age = ((now or utcnow()) - product.dataset.updated_at).total_seconds()
    return "fresh" if age <= product.sla_freshness_seconds else "stale"


def public(product: Product, access: str | None = None) -> ProductPublic:
    ds = product.dataset
    return ProductPublic(
        project=ds.project.name,
        dataset=ds.name,
        description=product.description,
        tags=product.tags,
        owner=product.owner,
        sla_freshness_seconds=product.sla_freshness_seconds,
        last_updated=ds.updated_at,
        freshness=freshness(product),
        published_at=product.published_at,
        access=access,
    )


def _access_public(a: ProductAccess) -> AccessPublic:
    ds = a.product.dataset
    return AccessPublic(
        id=a.id,
        product=f"{ds.project.name}/{ds.name}",
        consumer=a.consumer.name,
        status=a.status,
        requested_by=a.requested_by,
        reason=a.reason,
        decided_by=a.decided_by,
        decided_at=a.decided_at,
        created_at=a.created_at,
    )


def publish(session: Session, caller: Caller, project: str, dataset: str, body: ProductPublish) -> ProductPublic:
    proj, _ = authorize(session, caller, "product:publish", project)
    ds = datasets.get(session, proj, dataset)
    tags = sorted({t.strip().lower() for t in body.tags if t.strip()})
    if any(len(t) > 40 for t in tags):
        raise InvalidInput("tags are at most 40 characters")
    sla = None
    if body.sla_freshness:
        try:
            sla = parse_duration(body.sla_freshness)
        except ValueError as e:
            raise InvalidInput(str(e)) from None
    product = session.scalar(select(Product).where(Product.dataset_id == ds.id))
    if product is None:
        product = Product(dataset_id=ds.id, owner=caller.name, tags=tags)
        session.add(product)
    product.description = body.description or ds.description
    product.tags = tags
    product.sla_freshness_seconds = sla
    audit.record(
        session,
        caller.name,
        "product:publish",
        project=project,
        target=f"dataset/{dataset}",
        detail={"tags": tags, "sla_seconds": sla},
    )
    session.commit()
    session.refresh(product)
    return public(product)


def unpublish(session: Session, caller: Caller, project: str, dataset: str) -> None:
    proj, _ = authorize(session, caller, "product:publish", project)
    ds = datasets.get(session, proj, dataset)
    product = session.scalar(select(Product).where(Product.dataset_id == ds.id))
    if product is None:
        raise NotFound(f"dataset {dataset!r} is not published")
    session.delete(product)
    audit.record(session, caller.name, "product:unpublish", project=project, target=f"dataset/{dataset}")
    session.commit()


def search(session: Session, caller: Caller, text: str = "", tag: str | None = None) -> list[ProductPublic]:
    """Every published product matching ``text`` (name, project, description, tags): metadata only."""
    stmt = (
        select(Product).join(Dataset, Product.dataset_id == Dataset.id).join(Project, Dataset.project_id == Project.id)
    )
    if text:
        like = f"%{text.lower()}%"
        stmt = stmt.where(
            or_(Dataset.name.ilike(like), Project.name.ilike(like), Product.description.ilike(like))
            | Product.id.in_([p.id for p in session.scalars(select(Product)) if any(text.lower() in t for t in p.tags)])
        )
    wanted = tag.strip().lower() if tag else None  # tags are stored lowercased
    products = [p for p in session.scalars(stmt.order_by(Project.name, Dataset.name)) if not wanted or wanted in p.tags]
    access = _access_of(session, caller)
    return [public(p, access.get(p.id)) for p in products]


def _access_of(session: Session, caller: Caller) -> dict[int, str]:
    """Per product, the best access any of the caller's projects has (granted, else requested)."""
    projects = select(Membership.project_id).where(Membership.principal_id == caller.id)
    if caller.scoped:
        projects = projects.where(Membership.project_id == caller.token_project_id)
    rows = session.execute(
        select(ProductAccess.product_id, ProductAccess.status).where(
            ProductAccess.consumer_project_id.in_(projects), ProductAccess.status.in_(("granted", "requested"))
        )
    )
    found: dict[int, str] = {}
    for product_id, status in rows:
        if found.get(product_id) != "granted":
            found[product_id] = status
    return found


def _product(session: Session, producer: str, dataset: str) -> Product:
    product = session.scalar(
        select(Product)
        .join(Dataset, Product.dataset_id == Dataset.id)
        .join(Project, Dataset.project_id == Project.id)
        .where(Project.name == producer, Dataset.name == dataset)
    )
    if product is None:
        raise NotFound(f"no published product {producer}/{dataset}")
    return product


def request_access(
    session: Session, caller: Caller, producer: str, dataset: str, body: AccessRequestCreate
) -> AccessPublic:
    consumer, _ = authorize(session, caller, "product:request", body.for_project)
    product = _product(session, producer, dataset)
    if product.dataset.project_id == consumer.id:
        raise InvalidInput(f"{producer}/{dataset} already belongs to project {body.for_project!r}")
    access = session.scalar(
        select(ProductAccess).where(
            ProductAccess.product_id == product.id, ProductAccess.consumer_project_id == consumer.id
        )
    )
    if access is not None and access.status in ("requested", "granted"):
        raise Conflict(f"project {body.for_project!r} has already {access.status} access to {producer}/{dataset}")
    if access is None:
        access = ProductAccess(product_id=product.id, consumer_project_id=consumer.id, requested_by=caller.name)
        session.add(access)
    access.status, access.reason, access.requested_by = "requested", body.reason, caller.name
    access.decided_by = access.decided_at = None
    audit.record(
        session, caller.name, "product:request", project=body.for_project, target=f"product/{producer}/{dataset}"
    )
    audit.record(
        session,
        caller.name,
        "product:request",
        project=producer,
        target=f"dataset/{dataset}",
        detail={"for": body.for_project},
    )
    session.commit()
    session.refresh(access)
    return _access_public(access)


def list_requests(session: Session, caller: Caller, project: str, status: str | None = None) -> list[AccessPublic]:
    """Requests for the project's products (the producer's side)."""
    proj, _ = authorize(session, caller, "product:grant", project)
    stmt = (
        select(ProductAccess)
        .join(Product, ProductAccess.product_id == Product.id)
        .join(Dataset, Product.dataset_id == Dataset.id)
        .where(Dataset.project_id == proj.id)
        .order_by(ProductAccess.id.desc())
    )
    if status:
        stmt = stmt.where(ProductAccess.status == status)
    return [_access_public(a) for a in session.scalars(stmt)]


def decide(session: Session, caller: Caller, project: str, request_id: int, decision: str) -> AccessPublic:
    proj, _ = authorize(session, caller, "product:grant", project)
    access = session.get(ProductAccess, request_id)
    if access is None or access.product.dataset.project_id != proj.id:
        raise NotFound(f"access request {request_id} not found in project {project!r}")
    allowed = {"grant": ("requested", "denied", "revoked"), "deny": ("requested",), "revoke": ("granted",)}
    if decision not in allowed:
        raise InvalidInput(f"unknown decision {decision!r}")
    if access.status not in allowed[decision]:
        raise Conflict(f"access request {request_id} is {access.status}; cannot {decision} it")
    if caller.scoped:
        raise PermissionDenied("granting data access needs an unscoped token")
    access.status = {"grant": "granted", "deny": "denied", "revoke": "revoked"}[decision]
    access.decided_by, access.decided_at = caller.name, utcnow()
    target = f"product/{project}/{access.product.dataset.name}"
    audit.record(
        session,
        caller.name,
        f"product:{decision}",
        project=project,
        target=target,
        detail={"consumer": access.consumer.name},
    )
    audit.record(session, caller.name, f"product:{decision}", project=access.consumer.name, target=target)
    session.commit()
    return _access_public(access)
