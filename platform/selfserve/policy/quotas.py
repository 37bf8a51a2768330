"""Per-project quotas and usage accounting.

Pooled resources (storage, runs, deployments) are checked as ``usage + amount <= limit``;
per-run limits (cpu, memory) as ``amount <= limit``; ``rpm`` is enforced by the gateway's
rate limiter against the same limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from selfserve.errors import InvalidInput, QuotaExceeded
from selfserve.settings import get_settings, parse_size
from selfserve.store.tables import Project, Quota, Usage, utcnow


@dataclass(frozen=True)
class Resource:
    name: str
    unit: Literal["bytes", "count", "cores", "per-minute"]
    kind: Literal["pool", "per-run", "rate"]
    description: str


RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in (
        Resource("storage", "bytes", "pool", "bytes held by datasets, models and logs"),
        Resource("runs", "count", "pool", "runs at the same time"),
        Resource("cpu", "cores", "per-run", "CPU cores per run"),
        Resource("memory", "bytes", "per-run", "memory per run"),
        Resource("deployments", "count", "pool", "model deployments at the same time"),
        Resource("rpm", "per-minute", "rate", "gateway requests per minute"),
    )
}
# Accounted but not limited.
COUNTERS = {"cpu_seconds": "CPU-seconds used by runs", "predictions": "predictions served"}


def resource(name: str) -> Resource:
    try:
        return RESOURCES[name]
    except KeyError:
        raise InvalidInput(f"unknown quota {name!r}; quotas are: {', '.join(RESOURCES)}") from None


def parse_value(name: str, value: str | int | float) -> float:
    """A limit from user text: sizes for bytes, numbers otherwise. Raises InvalidInput."""
    res = resource(name)
    try:
        v = float(parse_size(value)) if res.unit == "bytes" else float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a number too big for a float
        want = "a size like 20GB" if res.unit == "bytes" else "a number"
        raise InvalidInput(f"invalid value for quota {name!r}: {value!r} is not {want}") from None
    if not (v >= 0) or v == float("inf"):
        raise InvalidInput(f"invalid value for quota {name!r}: must be a finite number >= 0")
    if res.unit in ("count", "per-minute") and v != int(v):
        raise InvalidInput(f"invalid value for quota {name!r}: must be a whole number")
    return v


def parse_limits(limits: dict[str, str | int | float]) -> dict[str, float]:
    if not limits:
        raise InvalidInput("no quota given; use e.g. storage=20GB runs=4")
    return {k: parse_value(k, v) for k, v in limits.items()}


def defaults() -> dict[str, float]:
    configured = get_settings().quotas
    missing = set(RESOURCES) - set(configured)
    if missing:
        raise RuntimeError(f"config [quotas] lacks defaults for: {', '.join(sorted(missing))}")
    return {k: parse_value(k, configured[k]) for k in RESOURCES}


def human(value: float, unit: str, *, scale: float | None = None) -> str:
    """``value`` for people. Bytes take the unit that suits ``scale`` (default: the value itself),
    so that the numbers one message compares share a unit: ``10.2 GB used + 0.5 GB requested``."""
    if unit == "bytes":
        ref = value if scale is None else scale
        for suffix, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
            if ref >= size:
                shown = f"{value / size:.1f}".removesuffix(".0")
                if shown == "0" and value > 0:  # too small for the shared unit: its own
                    return human(value, unit)
                return f"{shown} {suffix}"
        return f"{value:.0f} B"
    if unit == "per-minute":
        return f"{value:g}/min"
    if unit == "cores":
        return f"{value:g} core" + ("" if value == 1 else "s")
    return f"{value:g}"


def init_project(session: Session, project: Project) -> None:
    for name, limit in defaults().items():
        session.add(Quota(project_id=project.id, resource=name, limit=limit))


def limits(session: Session, project: Project) -> dict[str, float]:
    rows = session.scalars(select(Quota).where(Quota.project_id == project.id))
    found = {q.resource: q.limit for q in rows}
    return {**defaults(), **found}


def set_limits(session: Session, project: Project, new: dict[str, float]) -> dict[str, float]:
    """Set limits; returns the previous values of those changed."""
    before: dict[str, float] = {}
    rows = {q.resource: q for q in session.scalars(select(Quota).where(Quota.project_id == project.id))}
    for name, value in new.items():
        resource(name)
        if name in rows:
            before[name] = rows[name].limit
            rows[name].limit = value
        else:
            session.add(Quota(project_id=project.id, resource=name, limit=value))
    return before


def usage(session: Session, project: Project) -> dict[str, float]:
    return {u.resource: u.amount for u in session.scalars(select(Usage).where(Usage.project_id == project.id))}


def _usage_row(session: Session, project: Project, name: str) -> Usage:
    """The project's usage row for ``name``, created if missing and held until the transaction ends.

    Creating it is an insert that does nothing when the row exists, so two first uses cannot
    collide; being a write, it also takes SQLite's database lock, as ``FOR UPDATE`` takes the
    row's lock on PostgreSQL. Either way a read-check-update of usage never interleaves with another.
    """
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        session.execute(
            insert(Usage)
            .values(project_id=project.id, resource=name, amount=0.0, updated_at=utcnow())
            .on_conflict_do_nothing(index_elements=["project_id", "resource"])
        )
    stmt = select(Usage).where(Usage.project_id == project.id, Usage.resource == name)
    row = session.scalar(stmt.with_for_update().execution_options(populate_existing=True))
    if row is None:
        row = Usage(project_id=project.id, resource=name, amount=0.0)
        session.add(row)
        session.flush()
    return row


def check(session: Session, project: Project, name: str, amount: float) -> None:
    """Refuse work that would take ``project`` over its ``name`` quota.

    Raises:
        QuotaExceeded: with the limit, the usage and the amount asked for.
    """
    res = resource(name)
    limit = limits(session, project)[name]
    if res.kind == "pool":
        used = usage(session, project).get(name, 0.0)
        if used + amount > limit:
            scale = max(used, amount, limit)
            raise QuotaExceeded(
                f"{name} quota exceeded for project {project.name}: {human(used, res.unit, scale=scale)} used + "
                f"{human(amount, res.unit, scale=scale)} requested > {human(limit, res.unit, scale=scale)}",
                detail={"resource": name, "used": used, "requested": amount, "limit": limit},
            )
    elif amount > limit:
        scale = max(amount, limit)
        raise QuotaExceeded(
            f"{name} quota exceeded for project {project.name}: {human(amount, res.unit, scale=scale)} requested "
            f"> {human(limit, res.unit, scale=scale)}",
            detail={"resource": name, "requested": amount, "limit": limit},
        )


def reserve(session: Session, project: Project, name: str, amount: float) -> None:
    """Check a pooled quota and take ``amount`` of it in the caller's transaction."""
    row = _usage_row(session, project, name)  # held until the caller's transaction ends
    check(session, project, name, amount)
    row.amount += amount
    row.updated_at = utcnow()


def add_usage(session: Session, project: Project, name: str, delta: float) -> None:
    """Account usage (positive or negative); pooled usage never goes below 0."""
    row = _usage_row(session, project, name)
    row.amount = max(row.amount + delta, 0.0)
    row.updated_at = utcnow()


def set_usage(session: Session, project: Project, name: str, amount: float) -> None:
    row = _usage_row(session, project, name)
    row.amount = max(amount, 0.0)
    row.updated_at = utcnow()
