"""Versioned datasets: Delta tables under ``projects/<p>/datasets/<name>``.

Every write is one atomic Delta commit, so one version; a reader never sees half a write.
Before the commit the write checks the schema (an append that changes it is refused unless
``evolve``), the dataset's contract and the project's storage quota; a failed check commits
nothing. The metadata DB keeps, per version, rows, bytes, schema, producer and input versions.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.orm import Session

from selfserve.data.objectstore import ObjectStore, dataset_prefix
from selfserve.errors import Conflict, InvalidInput, NotFound
from selfserve.policy import quotas
from selfserve.schemas import check_name
from selfserve.store.tables import Dataset, DatasetVersion, IngestState, Project, Source, utcnow

WriteMode = Literal["append", "overwrite"]
_WRITE_ID = "selfserve.write_id"
_COMMIT_ATTEMPTS = 5


@dataclass(frozen=True)
class InputRef:
    """A dataset version a write was computed from (its lineage)."""

    project: str
    dataset: str
    version: int

    def as_dict(self) -> dict[str, Any]:
        return {"project": self.project, "dataset": self.dataset, "version": self.version}


def sql_name(dataset: str) -> str:
    """The name a dataset has in SQL: ``raw-customers`` -> ``raw_customers``."""
    return dataset.replace("-", "_")


def uri(store: ObjectStore, project: str, name: str) -> str:
    return store.uri(dataset_prefix(project, name))


def get(session: Session, project: Project, name: str) -> Dataset:
    ds = session.scalar(select(Dataset).where(Dataset.project_id == project.id, Dataset.name == name))
    if ds is None:
        raise NotFound(f"dataset {name!r} not found in project {project.name!r}")
    return ds


def find(session: Session, project: Project, name: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.project_id == project.id, Dataset.name == name))


def list_for(session: Session, project: Project) -> list[Dataset]:
    return list(session.scalars(select(Dataset).where(Dataset.project_id == project.id).order_by(Dataset.name)))


def versions(session: Session, ds: Dataset) -> list[DatasetVersion]:
    stmt = select(DatasetVersion).where(DatasetVersion.dataset_id == ds.id).order_by(DatasetVersion.version.desc())
    return list(session.scalars(stmt))


def version_row(session: Session, ds: Dataset, version: int | None = None) -> DatasetVersion:
    v = ds.current_version if version is None else version
    row = session.scalar(select(DatasetVersion).where(DatasetVersion.dataset_id == ds.id, DatasetVersion.version == v))
    if row is None:
        raise NotFound(f"dataset {ds.name!r} has no version {v}")
    return row


def columns_of(schema: pa.Schema) -> list[dict[str, Any]]:
    """Name, Delta type and nullability of each column (Delta types normalise string/large_string etc.).

    A column Delta cannot hold (a query's interval, say) shows its Arrow type instead.
    """
    try:
        return [_column(f) for f in delta_fields(schema)]
    except InvalidInput:
        return [_column_or_arrow(f) for f in schema]


def delta_fields(schema: pa.Schema) -> list[Any]:
    """The Delta fields of an Arrow schema.

    Raises:
        InvalidInput: a column's type cannot be stored in a Delta table.
    """
    from deltalake import Schema

    try:
        return list(Schema.from_arrow(schema).fields)
    except Exception as e:  # deltalake raises a bare Exception for a type it cannot hold
        raise InvalidInput(f"this data cannot be stored in a dataset: {_first_line(e)}") from None


def _column(f: Any) -> dict[str, Any]:
    return {"name": f.name, "type": getattr(f.type, "type", str(f.type)), "nullable": f.nullable}


def _column_or_arrow(field: pa.Field) -> dict[str, Any]:
    try:
        [f] = delta_fields(pa.schema([field]))
    except InvalidInput:
        return {"name": field.name, "type": str(field.type), "nullable": field.nullable}
    return _column(f)


def _schema_diff(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    o = {c["name"]: c["type"] for c in old}
    n = {c["name"]: c["type"] for c in new}
    diff = [f"new column {k!r} ({t})" for k, t in n.items() if k not in o]
    diff += [f"missing column {k!r} ({t})" for k, t in o.items() if k not in n]
    diff += [f"column {k!r} is {n[k]}, was {o[k]}" for k in n if k in o and n[k] != o[k]]
    return diff


def to_table(data: pa.Table | Iterable[pa.RecordBatch]) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    batches = list(data)
    if not batches:
        raise InvalidInput("no rows and no columns to write: the input is empty")
    return pa.Table.from_batches(batches)


_SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def _normalise(table: pa.Table) -> pa.Table:
    """Make the columns writable to Delta, which has no unsigned, dictionary, null, time-of-day or
    duration types: a time of day becomes its ISO text (``"12:34:56"``) and a duration its seconds.

    Raises:
        InvalidInput: a value does not fit (an unsigned integer over the largest signed one).
    """
    columns = []
    changed = False
    for f, col in zip(table.schema, table.columns, strict=True):
        t = f.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        try:
            if pa.types.is_null(t):
                col = col.cast(pa.string())
            elif pa.types.is_unsigned_integer(t):
                col = col.cast(pa.int64())
            elif pa.types.is_time(t):
                col = col.cast(pa.string())
            elif pa.types.is_duration(t):
                col = pc.multiply(col.cast(pa.int64()).cast(pa.float64()), _SECONDS_PER_UNIT[t.unit])
            elif t != f.type:
                col = col.cast(t)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise InvalidInput(f"column {f.name!r} ({f.type}) cannot be stored: {_first_line(e)}") from None
        changed = changed or col.type != f.type
        columns.append(col)
    if not changed:
        return table
    return pa.table(
        columns,
        schema=pa.schema([pa.field(f.name, c.type, f.nullable) for f, c in zip(table.schema, columns, strict=True)]),
    )


def write(
    session: Session,
    store: ObjectStore,
    project: Project,
    name: str,
    data: pa.Table | Iterable[pa.RecordBatch],
    *,
    actor: str,
    mode: WriteMode = "append",
    evolve: bool = False,
    producer: dict[str, Any] | None = None,
    inputs: Iterable[InputRef] = (),
    description: str | None = None,
) -> DatasetVersion:
    """Commit ``data`` as the next version of dataset ``name`` (created on its first write).

    Raises:
        InvalidInput: bad name, empty input, a schema change on append without ``evolve``, a
            failed contract (the detail lists every failing check).
        QuotaExceeded: the write would take the project over its storage quota.
    """
    from deltalake import CommitProperties, DeltaTable, write_deltalake
    from deltalake.exceptions import CommitFailedError, SchemaMismatchError

    check_name(name, "dataset name")
    if mode not in ("append", "overwrite"):
        raise InvalidInput(f"invalid write mode {mode!r}: use append or overwrite")
    table = _normalise(to_table(data))
    if table.num_columns == 0:
        raise InvalidInput("nothing to write: the input has no columns")
    cols = [_column(f) for f in delta_fields(table.schema)]
    ds = find(session, project, name)
    if ds is not None and ds.current_version is not None and mode == "append":
        current = version_row(session, ds)
        diff = _schema_diff(current.columns, cols)
        if diff and not evolve:
            raise InvalidInput(
                f"schema of dataset {name!r} differs: {'; '.join(diff)}; pass --evolve to change it",
                detail={"differences": diff},
            )
    if ds is not None and ds.contract:
        from selfserve.data import contracts

        contract = contracts.Contract.from_yaml(ds.contract)
        contracts.check(contract, _after_write(store, project.name, ds, table, mode)).raise_if_failed()
    estimate = int(table.nbytes)
    quotas.check(session, project, "storage", estimate)

    location = uri(store, project.name, name)
    write_id = uuid.uuid4().hex
    # A commit that loses a race (two first writes both creating the table) committed nothing
    # and is tried again on top of the winner's commit.
    for attempt in range(_COMMIT_ATTEMPTS):
        try:
            write_deltalake(
                location,
                table,
                mode=mode,
                schema_mode=("merge" if mode == "append" else "overwrite") if evolve else None,
                storage_options=store.storage_options() or None,
                commit_properties=CommitProperties(custom_metadata={_WRITE_ID: write_id}),
            )
            break
        except CommitFailedError as e:
            if attempt == _COMMIT_ATTEMPTS - 1:
                raise Conflict(
                    f"dataset {name!r} kept changing during the write; try again ({_first_line(e)})"
                ) from None
        except SchemaMismatchError as e:
            raise InvalidInput(
                f"schema of dataset {name!r} differs: {_first_line(e)}; pass --evolve to change it"
            ) from None
        except Exception as e:
            # deltalake raises a bare Exception for a type Delta cannot hold (e.g. inside a list).
            if "Invalid data type for Delta Lake" not in str(e):
                raise
            raise InvalidInput(f"dataset {name!r} cannot store this data: {_first_line(e)}") from None
    dt = DeltaTable(location, storage_options=store.storage_options() or None)
    version = _version_of(store, project.name, name, dt.version(), write_id)
    if version != dt.version():
        dt.load_as_version(version)
    rows = _row_count(dt)

    # Concurrent writers of one project update its metadata one at a time: the storage usage
    # row is locked until the caller commits (FOR UPDATE on PostgreSQL, the write lock on
    # SQLite), and the dataset row is read again under that lock, so neither the current
    # version nor the storage accounting can go back, and a first write creates one dataset.
    quotas.add_usage(session, project, "storage", 0)
    ds = session.scalar(
        select(Dataset)
        .where(Dataset.project_id == project.id, Dataset.name == name)
        .with_for_update(of=Dataset)
        .execution_options(populate_existing=True)
    )
    if ds is None:
        ds = Dataset(project_id=project.id, name=name, created_by=actor, description=description or "")
        session.add(ds)
        session.flush()
    elif description is not None:
        ds.description = description
    before = ds.storage_bytes or 0
    ds.storage_bytes = store.size_of(dataset_prefix(project.name, name))
    ds.current_version = max(version, -1 if ds.current_version is None else ds.current_version)
    ds.updated_at = utcnow()
    row = DatasetVersion(
        dataset_id=ds.id,
        version=version,
        operation="create" if version == 0 else mode,
        rows=rows,
        rows_written=table.num_rows,
        bytes=_table_bytes(dt),
        columns=columns_of(pa.schema(dt.schema().to_arrow())),
        producer=producer or {"kind": "api"},
        inputs=[i.as_dict() for i in inputs],
        created_by=actor,
    )
    session.add(row)
    quotas.add_usage(session, project, "storage", ds.storage_bytes - before)
    session.flush()
    return row


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__


def _after_write(store: ObjectStore, project: str, ds: Dataset, table: pa.Table, mode: WriteMode) -> pa.Table:
    """The dataset as the write would leave it: a contract holds for the whole dataset (``unique``
    across every row, ``rows`` counting them all), not just for the rows an append adds."""
    if mode != "append" or ds.current_version is None:
        return table
    current = read(store, project, ds.name, version=ds.current_version)
    return pa.concat_tables([current, table], promote_options="permissive")


def _commit_info(store: ObjectStore, project: str, name: str, version: int) -> dict[str, Any] | None:
    """The ``commitInfo`` of one commit, read from its log file (None: no such commit file)."""
    key = f"{dataset_prefix(project, name)}/_delta_log/{version:020d}.json"
    try:
        raw = store.get_bytes(key)
    except FileNotFoundError:
        return None
    for line in raw.splitlines():
        if b'"commitInfo"' in line:
            return dict(json.loads(line)["commitInfo"])
    return {}


def _version_of(store: ObjectStore, project: str, name: str, latest: int, write_id: str) -> int:
    """The version our commit got, found in the commit files themselves, newest first: with
    concurrent writers, deltalake's ``history()`` was seen to give two commits the same version."""
    for version in range(latest, max(latest - 1000, -1), -1):
        info = _commit_info(store, project, name, version)
        if info is None:
            break
        if info.get(_WRITE_ID) == write_id:
            return version
    raise Conflict("the write committed but its version could not be found in the table's log")


def _row_count(dt: Any) -> int:
    actions = pa.table(dt.get_add_actions(flatten=True))
    return int(pc.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0


def _table_bytes(dt: Any) -> int:
    actions = pa.table(dt.get_add_actions(flatten=True))
    return int(pc.sum(actions["size_bytes"]).as_py() or 0) if actions.num_rows else 0


def open_table(
    store: ObjectStore, project: str, name: str, *, version: int | None = None, as_of: datetime | None = None
) -> Any:
    """The Delta table at a version or a point in time."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    when = (
        f"version {version}" if version is not None else f"time {as_of.isoformat()}" if as_of else "its latest version"
    )
    try:
        dt = DeltaTable(uri(store, project, name), storage_options=store.storage_options() or None)
        if version is not None:
            dt.load_as_version(version)
        elif as_of is not None:
            dt.load_as_version(_version_at(store, project, name, dt.version(), as_of, when))
    except (DeltaError, ValueError, OSError) as e:
        raise NotFound(f"dataset {name!r} has no data at {when}: {str(e).splitlines()[0][:200]}") from None
    return dt


def _version_at(store: ObjectStore, project: str, name: str, latest: int, as_of: datetime, when: str) -> int:
    """The last version committed at or before ``as_of`` (a time without a zone is UTC).

    deltalake itself answers a time before the first commit with version 0; here that is an error.
    """
    moment = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC)
    cutoff = moment.timestamp() * 1000
    for version in range(latest, -1, -1):
        info = _commit_info(store, project, name, version)
        if info is None:
            break
        stamp = info.get("timestamp")
        if stamp is not None and stamp <= cutoff:
            return version
    raise NotFound(f"dataset {name!r} has no data at {when}: its first version is later")


def read(
    store: ObjectStore,
    project: str,
    name: str,
    *,
    version: int | None = None,
    as_of: datetime | None = None,
    columns: list[str] | None = None,
    limit: int | None = None,
) -> pa.Table:
    dt = open_table(store, project, name, version=version, as_of=as_of)
    ds = dt.to_pyarrow_dataset()
    if limit is not None:
        return ds.head(limit, columns=columns)
    return ds.to_table(columns=columns)


def delete(session: Session, store: ObjectStore, project: Project, ds: Dataset) -> None:
    """Delete the dataset, its versions, the watermarks of incremental loads into it, and its files.

    A dataset created later under the same name starts afresh: an incremental load into it reads
    its source from the beginning again.
    """
    freed = ds.storage_bytes or 0
    sources = select(Source.id).where(Source.project_id == project.id)
    session.execute(sql_delete(IngestState).where(IngestState.source_id.in_(sources), IngestState.dataset == ds.name))
    session.delete(ds)
    quotas.add_usage(session, project, "storage", -freed)
    session.flush()
    store.delete_prefix(dataset_prefix(project.name, ds.name))
