"""Dataset operations as users see them: each decides through ``authorize()``, audits changes and
returns API models. The engine work is in ``datasets`` (Delta) and ``sandbox`` (DuckDB)."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session

from selfserve.data import datasets
from selfserve.data.objectstore import ObjectStore
from selfserve.data.sandbox import TableRef, check_sql, sandbox
from selfserve.errors import InvalidInput, NotFound
from selfserve.policy import audit
from selfserve.policy.authz import Caller, authorize
from selfserve.schemas.data import (
    CheckFailurePublic,
    Column,
    ContractReportPublic,
    DatasetPublic,
    DatasetVersionPublic,
    TableData,
)
from selfserve.settings import get_settings
from selfserve.store.tables import Dataset, DatasetVersion, Product, ProductAccess, Project


def _json_safe(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    return str(v)


def table_data(table: pa.Table, truncated: bool = False) -> TableData:
    columns = [Column(**c) for c in datasets.columns_of(table.schema)] if table.num_columns else []
    names = table.column_names
    rows = [[_json_safe(r[n]) for n in names] for r in table.to_pylist()]
    return TableData(columns=columns, rows=rows, row_count=len(rows), truncated=truncated)


def _version_public(v: DatasetVersion) -> DatasetVersionPublic:
    return DatasetVersionPublic(
        version=v.version,
        operation=v.operation,
        rows=v.rows,
        rows_written=v.rows_written,
        bytes=v.bytes,
        columns=[Column(**c) for c in v.columns],
        producer=v.producer,
        inputs=v.inputs,
        created_by=v.created_by,
        created_at=v.created_at,
    )


def public(session: Session, ds: Dataset) -> DatasetPublic:
    current = None
    if ds.current_version is not None:
        current = session.scalar(
            select(DatasetVersion).where(
                DatasetVersion.dataset_id == ds.id, DatasetVersion.version == ds.current_version
            )
        )
    published = session.scalar(select(Product.id).where(Product.dataset_id == ds.id)) is not None
    return DatasetPublic(
        name=ds.name,
        description=ds.description,
        current_version=ds.current_version,
        rows=current.rows if current else None,
        bytes=current.bytes if current else None,
        storage_bytes=ds.storage_bytes or 0,
        columns=[Column(**c) for c in current.columns] if current else [],
        has_contract=bool(ds.contract),
        published=published,
        created_by=ds.created_by,
        created_at=ds.created_at,
        updated_at=ds.updated_at,
    )


def parse_ref(text: str) -> tuple[str, int | None]:
    """``name`` or ``name@version``."""
    name, sep, ver = text.partition("@")
    if not sep:
        return name, None
    if not ver.isdigit():
        raise InvalidInput(f"invalid dataset reference {text!r}: use name or name@version")
    return name, int(ver)


# -- reading ---------------------------------------------------------------------------


def list_datasets(session: Session, caller: Caller, project: str) -> list[DatasetPublic]:
    proj, _ = authorize(session, caller, "dataset:read", project)
    return [public(session, d) for d in datasets.list_for(session, proj)]


def show(session: Session, caller: Caller, project: str, name: str) -> DatasetPublic:
    proj, _ = authorize(session, caller, "dataset:read", project)
    return public(session, datasets.get(session, proj, name))


def history(session: Session, caller: Caller, project: str, name: str) -> list[DatasetVersionPublic]:
    proj, _ = authorize(session, caller, "dataset:read", project)
    return [_version_public(v) for v in datasets.versions(session, datasets.get(session, proj, name))]


def version(session: Session, caller: Caller, project: str, name: str, ver: int | None) -> DatasetVersionPublic:
    proj, _ = authorize(session, caller, "dataset:read", project)
    return _version_public(datasets.version_row(session, datasets.get(session, proj, name), ver))


def preview(
    session: Session,
    store: ObjectStore,
    caller: Caller,
    project: str,
    name: str,
    *,
    ver: int | None = None,
    as_of: dt.datetime | None = None,
    limit: int = 20,
) -> TableData:
    proj, _ = authorize(session, caller, "dataset:read", project)
    datasets.get(session, proj, name)
    cap = get_settings().data.max_preview_rows
    if limit > cap:
        raise InvalidInput(f"limit {limit} is over the preview maximum of {cap} rows")
    table = datasets.read(store, project, name, version=ver, as_of=as_of, limit=limit + 1)
    return table_data(table.slice(0, limit), truncated=table.num_rows > limit)


def granted_products(session: Session, proj: Project) -> list[tuple[str, Dataset]]:
    """(producer project, dataset) of every product this project has been granted."""
    rows = session.scalars(
        select(ProductAccess).where(ProductAccess.consumer_project_id == proj.id, ProductAccess.status == "granted")
    )
    return [(a.product.dataset.project.name, a.product.dataset) for a in rows]


def _offered(session: Session, proj: Project) -> dict[str, tuple[str, Dataset]]:
    """Per SQL name, the (project, dataset) a query of ``proj`` may read: its own datasets that hold
    data, by name, and the products granted to it, as ``producer.name``."""
    offered = {datasets.sql_name(ds.name): (proj.name, ds) for ds in datasets.list_for(session, proj)}
    for producer, ds in granted_products(session, proj):
        offered[f"{datasets.sql_name(producer)}.{datasets.sql_name(ds.name)}"] = (producer, ds)
    return {name: entry for name, entry in offered.items() if entry[1].current_version is not None}


def check_query(session: Session, proj: Project, sql: str) -> None:
    """Refuse SQL that is not one SELECT over what ``proj`` may read (see :func:`sandbox.check_sql`)."""
    check_sql(sql, set(_offered(session, proj)))


def offered_tables(
    session: Session, store: ObjectStore, proj: Project, sql: str, pins: dict[str, int] | None = None
) -> tuple[list[TableRef], dict[str, dict[str, Any]]]:
    """The tables a query of ``proj`` reads, after checking it: of its datasets (current version, or
    as pinned by dataset name) and the products granted to it (as ``producer.name``), those the query
    names, at the version it will read. Also returns, per SQL name, its lineage entry.

    Only the named tables are opened, so a query's cost does not grow with the project's datasets.

    Raises:
        InvalidInput: the SQL is refused (see :func:`sandbox.check_sql`).
    """
    pins = pins or {}
    offered = _offered(session, proj)
    named = check_sql(sql, set(offered))
    refs: list[TableRef] = []
    lineage: dict[str, dict[str, Any]] = {}
    for name, (project, ds) in offered.items():
        if name.lower() not in named:
            continue
        own = project == proj.name
        v = pins.get(ds.name, ds.current_version) if own else ds.current_version
        snap = datasets.snapshot(store, project, ds, v)
        namespace, _, short = name.rpartition(".")
        refs.append(TableRef(name=short, files=snap.files, schema=snap.schema, namespace=namespace))
        lineage[name] = {"project": project, "dataset": ds.name, "version": v}
    return refs, lineage


def run_query(
    session: Session, store: ObjectStore, proj: Project, sql: str, limit: int | None
) -> tuple[pa.Table, bool]:
    refs, _ = offered_tables(session, store, proj, sql)
    with sandbox(store, refs, timeout=get_settings().data.query_timeout) as box:
        return box.query(sql, limit=limit)


def query(session: Session, store: ObjectStore, caller: Caller, project: str, sql: str, limit: int) -> TableData:
    proj, _ = authorize(session, caller, "dataset:read", project)
    cap = get_settings().data.max_preview_rows
    if limit > cap:
        raise InvalidInput(f"limit {limit} is over the query maximum of {cap} rows")
    table, truncated = run_query(session, store, proj, sql, limit)
    return table_data(table, truncated)


def export(
    session: Session,
    store: ObjectStore,
    caller: Caller,
    project: str,
    name: str,
    *,
    ver: int | None,
    fmt: Literal["csv", "parquet", "json"],
    dest: Path,
) -> Path:
    """Write the dataset version to ``dest`` in ``fmt``; the route streams the file."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    proj, _ = authorize(session, caller, "dataset:read", project)
    datasets.get(session, proj, name)
    table = datasets.read(store, project, name, version=ver)
    if fmt == "csv":
        pacsv.write_csv(table, dest)
    elif fmt == "parquet":
        pq.write_table(table, dest)
    else:
        import polars as pl

        pl.from_arrow(table).write_ndjson(dest)  # type: ignore[union-attr]
    audit.record(
        session,
        caller.name,
        "dataset:export",
        project=project,
        target=f"dataset/{name}",
        detail={"version": ver, "format": fmt},
    )
    session.commit()
    return dest


# -- writing ---------------------------------------------------------------------------


def write(
    session: Session,
    store: ObjectStore,
    caller: Caller,
    project: str,
    name: str,
    data: Any,
    *,
    mode: Literal["append", "overwrite"] = "append",
    evolve: bool = False,
    producer: dict[str, Any],
    inputs: list[datasets.InputRef] | None = None,
    action: str = "dataset:write",
) -> DatasetVersionPublic:
    proj, _ = authorize(session, caller, "dataset:write", project)
    row = datasets.write(
        session,
        store,
        proj,
        name,
        data,
        actor=caller.name,
        mode=mode,
        evolve=evolve,
        producer=producer,
        inputs=inputs or [],
    )
    audit.record(
        session,
        caller.name,
        action,
        project=project,
        target=f"dataset/{name}",
        detail={"version": row.version, "rows": row.rows_written, "mode": mode},
    )
    session.commit()
    return _version_public(row)


def upload(
    session: Session,
    store: ObjectStore,
    caller: Caller,
    project: str,
    name: str,
    path: Path,
    *,
    fmt: str | None,
    filename: str,
    options: dict[str, Any],
    mode: Literal["append", "overwrite"],
    evolve: bool,
) -> DatasetVersionPublic:
    from selfserve.data.connectors import read_upload

    authorize(session, caller, "dataset:write", project)
    batches = read_upload(path, fmt, options, name=Path(filename).name)
    return write(
        session,
        store,
        caller,
        project,
        name,
        batches,
        mode=mode,
        evolve=evolve,
        producer={"kind": "upload", "file": Path(filename).name[:200]},
        action="dataset:upload",
    )


def delete(session: Session, store: ObjectStore, caller: Caller, project: str, name: str) -> None:
    proj, _ = authorize(session, caller, "dataset:write", project)
    ds = datasets.get(session, proj, name)
    datasets.delete(session, store, proj, ds)
    audit.record(session, caller.name, "dataset:delete", project=project, target=f"dataset/{name}")
    session.commit()


# -- contracts -------------------------------------------------------------------------


def set_contract(session: Session, caller: Caller, project: str, name: str, text: str | None) -> DatasetPublic:
    from selfserve.data import contracts

    proj, _ = authorize(session, caller, "dataset:write", project)
    ds = datasets.get(session, proj, name)
    if text is not None:
        contracts.Contract.from_yaml(text)  # refuse a bad contract now, not at the next write
    ds.contract = text
    audit.record(
        session,
        caller.name,
        "dataset:contract",
        project=project,
        target=f"dataset/{name}",
        detail={"removed": text is None},
    )
    session.commit()
    return public(session, ds)


def get_contract(session: Session, caller: Caller, project: str, name: str) -> str:
    proj, _ = authorize(session, caller, "dataset:read", project)
    ds = datasets.get(session, proj, name)
    if not ds.contract:
        raise NotFound(f"dataset {name!r} has no contract")
    return ds.contract


def check_contract(
    session: Session, store: ObjectStore, caller: Caller, project: str, name: str, ver: int | None = None
) -> ContractReportPublic:
    from selfserve.data import contracts

    proj, _ = authorize(session, caller, "dataset:read", project)
    ds = datasets.get(session, proj, name)
    if not ds.contract:
        raise NotFound(f"dataset {name!r} has no contract")
    report = contracts.check(
        contracts.Contract.from_yaml(ds.contract), datasets.read(store, project, name, version=ver)
    )
    return ContractReportPublic(
        passed=report.passed, failures=[CheckFailurePublic(**f.model_dump()) for f in report.failures]
    )
