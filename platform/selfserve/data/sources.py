"""Sources: connections to external systems, owned by a project. Secrets are encrypted at rest and
never returned; every message that could carry one is masked."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from selfserve.errors import Conflict, InvalidInput, NotFound, SelfServeError
from selfserve.policy import audit, secrets
from selfserve.policy.authz import Caller, authorize
from selfserve.schemas.data import SourceCreate, SourcePublic, SourceTest
from selfserve.settings import get_settings
from selfserve.store.tables import Project, Source


def public(src: Source) -> SourcePublic:
    return SourcePublic(
        name=src.name,
        kind=src.kind,
        config=src.config,
        secrets=sorted(secrets.decrypt(src.secret)) if src.secret else [],
        created_by=src.created_by,
        created_at=src.created_at,
        updated_at=src.updated_at,
    )


def get(session: Session, project: Project, name: str) -> Source:
    src = session.scalar(select(Source).where(Source.project_id == project.id, Source.name == name))
    if src is None:
        raise NotFound(f"source {name!r} not found in project {project.name!r}")
    return src


def _split(kind: str, config: dict[str, Any], given: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate the settings for their kind; a secret sent in config (or inside a URL) moves to secrets."""
    from selfserve.data import connectors

    secret_fields = connectors.SECRET_FIELDS.get(kind, set())
    unknown = set(given) - set(secret_fields)
    if unknown:
        raise InvalidInput(
            f"unknown secret(s) for a {kind} source: {', '.join(sorted(unknown))}; "
            f"secrets are: {', '.join(sorted(secret_fields)) or 'none'}"
        )
    return connectors.split_secrets(kind, {**config, **given})


def connector_for(src: Source) -> Any:
    from selfserve.data import connectors

    return connectors.build(src.kind, src.config, secrets.decrypt(src.secret), get_settings())


def create(session: Session, caller: Caller, project: str, body: SourceCreate) -> SourcePublic:
    from selfserve.data import connectors

    proj, _ = authorize(session, caller, "source:write", project)
    if body.kind not in connectors.KINDS:
        raise InvalidInput(f"unknown source kind {body.kind!r}; kinds are: {', '.join(sorted(connectors.KINDS))}")
    if session.scalar(select(Source.id).where(Source.project_id == proj.id, Source.name == body.name)):
        raise Conflict(f"source {body.name!r} already exists in project {project!r}")
    config, secret_values = _split(body.kind, body.config, body.secrets)
    src = Source(
        project_id=proj.id,
        name=body.name,
        kind=body.kind,
        config=config,
        secret=secrets.encrypt(secret_values) if secret_values else None,
        created_by=caller.name,
    )
    session.add(src)
    audit.record(
        session, caller.name, "source:create", project=project, target=f"source/{body.name}", detail={"kind": body.kind}
    )
    session.commit()
    return public(src)


def list_(session: Session, caller: Caller, project: str) -> list[SourcePublic]:
    proj, _ = authorize(session, caller, "source:read", project)
    rows = session.scalars(select(Source).where(Source.project_id == proj.id).order_by(Source.name))
    return [public(s) for s in rows]


def show(session: Session, caller: Caller, project: str, name: str) -> SourcePublic:
    proj, _ = authorize(session, caller, "source:read", project)
    return public(get(session, proj, name))


def test(session: Session, caller: Caller, project: str, name: str) -> SourceTest:
    proj, _ = authorize(session, caller, "source:read", project)
    src = get(session, proj, name)
    try:
        connector_for(src).test()
    except SelfServeError as e:
        return SourceTest(ok=False, message=secrets.mask(e.message, secrets.decrypt(src.secret)))
    return SourceTest(ok=True, message=f"{src.kind} source {name!r} is reachable")


def remove(session: Session, caller: Caller, project: str, name: str) -> None:
    proj, _ = authorize(session, caller, "source:write", project)
    src = get(session, proj, name)
    session.delete(src)
    audit.record(session, caller.name, "source:remove", project=project, target=f"source/{name}")
    session.commit()
