"""Versioned datasets: Delta tables under ``projects/<p>/datasets/<name>``.

Every write is one atomic Delta commit, so one version; a reader never sees half a write.
Before the commit the write checks the schema (an append that changes it is refused unless
``evolve``), the dataset's contract and the project's storage quota; a failed check commits
nothing. The metadata DB keeps, per version, rows, bytes, schema, producer and input versions.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
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

log = logging.getLogger(__name__)

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
    Timestamps keep microseconds at most (finer ones are cut, as deltalake's writer does) and a
    zoned timestamp is kept in UTC (the same instant).

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
            elif pa.types.is_timestamp(t) and (t.unit == "ns" or t.tz not in (None, "UTC")):
                unit = "us" if t.unit == "ns" else t.unit
                col = col.cast(pa.timestamp(unit, tz=None if t.tz is None else "UTC"), safe=False)
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

    Record batches are written as they arrive, taken from ``data`` a few ahead in a background
    thread, so that reading them and writing them overlap. A table, a write with ``evolve`` and a
    dataset with a contract (which holds for every row before anything is committed) are written
    whole.

    Raises:
        InvalidInput: bad name, empty input, a schema change on append without ``evolve``, a
            batch whose columns differ from the first one's, a failed contract (the detail lists
            every failing check).
        QuotaExceeded: the write would take the project over its storage quota.
        Conflict: the dataset kept changing under the write and the commit gave up.
    """
    check_name(name, "dataset name")
    if mode not in ("append", "overwrite"):
        raise InvalidInput(f"invalid write mode {mode!r}: use append or overwrite")
    ds = find(session, project, name)
    write_id = uuid.uuid4().hex
    if isinstance(data, pa.Table) or evolve or (ds is not None and ds.contract):
        table = _normalise(to_table(data))
        _check_schema(session, ds, name, table.schema, mode=mode, evolve=evolve)
        if ds is not None and ds.contract:
            from selfserve.data import contracts

            contract = contracts.Contract.from_yaml(ds.contract)
            contracts.check(contract, _after_write(store, project.name, ds, table, mode)).raise_if_failed()
        quotas.check(session, project, "storage", int(table.nbytes))
        dt = _commit(store, project.name, name, table, mode=mode, evolve=evolve, write_id=write_id)
        rows_written = table.num_rows
    else:
        dt, rows_written = _commit_stream(session, store, project, ds, name, data, mode=mode, write_id=write_id)
    version = _version_of(store, project.name, name, dt.version(), write_id)
    if version != dt.version():
        dt.load_as_version(version)
    actions = pa.table(dt.get_add_actions(flatten=True))
    rows = int(pc.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0
    size = int(pc.sum(actions["size_bytes"]).as_py() or 0) if actions.num_rows else 0
    schema = pa.schema(dt.schema().to_arrow())

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
        rows_written=rows_written,
        bytes=size,
        columns=columns_of(schema),
        producer=producer or {"kind": "api"},
        inputs=[i.as_dict() for i in inputs],
        created_by=actor,
    )
    session.add(row)
    quotas.add_usage(session, project, "storage", ds.storage_bytes - before)
    session.flush()
    # The first query of the new version need not read the log again.
    _remember(store, project.name, ds, Snapshot(version, tuple(dt.file_uris()), schema))
    return row


def _check_schema(
    session: Session, ds: Dataset | None, name: str, schema: pa.Schema, *, mode: WriteMode, evolve: bool
) -> None:
    """Refuse columns Delta cannot hold, no columns at all, and an append that changes the
    dataset's columns without ``evolve``."""
    if len(schema) == 0:
        raise InvalidInput("nothing to write: the input has no columns")
    cols = [_column(f) for f in delta_fields(schema)]
    if ds is not None and ds.current_version is not None and mode == "append":
        current = version_row(session, ds)
        diff = _schema_diff(current.columns, cols)
        if diff and not evolve:
            raise InvalidInput(
                f"schema of dataset {name!r} differs: {'; '.join(diff)}; pass --evolve to change it",
                detail={"differences": diff},
            )


# -- the Delta commit ------------------------------------------------------------------
#
# The common writes (a new dataset, an append or an overwrite with the same columns) write their
# Parquet files with Arrow's writer, straight to the table's location, and then commit them in
# one Delta transaction with their statistics; deltalake's own writer is slower. Anything else
# (a schema change with ``evolve``, a table with features this path does not write) goes
# through ``deltalake.write_deltalake``. Files of a commit that fails are removed again; until
# a commit names them no reader sees them.
#
# Record batches (an ingest's reads, an upload) are written to those files as they arrive, while a
# background thread takes the next ones from their source: the read and the write overlap, and only
# a few batches are held at a time.

# A checkpoint every 10 commits keeps opening a table with many small appends cheap.
_TABLE_CONFIG = {"delta.checkpointInterval": "10"}
_ROW_GROUP_ROWS = 1024 * 1024  # Arrow's default: row groups are what DuckDB reads in parallel
_FILE_ROWS = 8 * _ROW_GROUP_ROWS
_STATS_COLUMNS = 32  # as delta.dataSkippingNumIndexedCols: statistics for the first 32 columns
_STATS_TEXT_CHARS = 32
_PLAIN_WRITER_FEATURES = frozenset({"timestampNtz"})
_STREAM_AHEAD = 3  # batches read ahead of the write
# Streamed batches are gathered into row groups of at least this many rows (at most _ROW_GROUP_ROWS)
# before they are written. Each row group keeps its own dictionaries: smaller ones make larger files
# (about 17% more for 128k rows than for 1M on the ingest benchmark's table, 10% for 256k), larger
# ones leave more of the write until after the last batch is read.
_STREAM_GROUP_ROWS = 256 * 1024


class _UseDeltaWriter(Exception):
    """This write needs deltalake's own writer."""


def _commit(
    store: ObjectStore, project: str, name: str, table: pa.Table, *, mode: WriteMode, evolve: bool, write_id: str
) -> Any:
    """Commit ``table`` to the dataset's Delta table; returns the table, loaded at or after the commit.

    Raises:
        InvalidInput: the data does not fit the table's schema (without ``evolve``) or cannot be stored.
        Conflict: the commit lost to other writers ``_COMMIT_ATTEMPTS`` times.
    """
    try:
        return _commit_files(store, project, name, table, mode=mode, evolve=evolve, write_id=write_id)
    except _UseDeltaWriter:
        return _commit_with_deltalake(store, project, name, table, mode=mode, evolve=evolve, write_id=write_id)


def _open_latest(location: str, store: ObjectStore) -> Any:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(location, storage_options=store.storage_options() or None)
    except TableNotFoundError:
        return None


def _fit(dt: Any, table: pa.Table, mode: WriteMode, evolve: bool) -> pa.Table:
    """``table`` in the columns and Arrow types the Delta table stores (``dt`` None: a new table).

    Raises:
        InvalidInput: nulls in a column the table declares without them.
        _UseDeltaWriter: the write changes the schema, or the table is not a plain one.
    """
    return _fit_to(table, _target_schema(dt, table.schema, mode, evolve))


def _target_schema(dt: Any, schema: pa.Schema, mode: WriteMode, evolve: bool) -> pa.Schema:
    """The columns and Arrow types the Delta table stores data of ``schema`` in (``dt`` None: a new table).

    Raises:
        _UseDeltaWriter: the write changes the schema, or the table is not a plain one.
    """
    target = _delta_arrow_schema(schema)
    if dt is not None:
        protocol = dt.protocol()
        features = set(protocol.writer_features or ())
        if dt.metadata().partition_columns or (protocol.min_writer_version > 2 and features - _PLAIN_WRITER_FEATURES):
            raise _UseDeltaWriter
        current = pa.schema(dt.schema().to_arrow())
        if {(f.name, f.type) for f in current} == {(f.name, f.type) for f in target}:  # in any order
            target = current
        elif not (mode == "overwrite" and evolve) or (
            any(pa.types.is_timestamp(f.type) and f.type.tz is None for f in target) and "timestampNtz" not in features
        ):
            raise _UseDeltaWriter
    return target


def _fit_to(table: pa.Table, target: pa.Schema) -> pa.Table:
    """``table`` in the columns and Arrow types of ``target``.

    Raises:
        InvalidInput: nulls in a column ``target`` declares without them.
        _UseDeltaWriter: a column does not cast to its type in ``target`` (args: its name, the reason).
    """
    columns = []
    for field in target:
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            raise InvalidInput(
                f"column {field.name!r} has {column.null_count} empty values; the dataset does not allow them"
            )
        if column.type != field.type:
            try:
                # Delta keeps microseconds: finer timestamps are cut, as deltalake's writer does.
                column = column.cast(field.type, safe=not pa.types.is_timestamp(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise _UseDeltaWriter(field.name, _first_line(e)) from None
        columns.append(column)
    return pa.table(columns, schema=target)


def _delta_arrow_schema(schema: pa.Schema) -> pa.Schema:
    """The Arrow schema a Delta table with these columns reads back (``timestamp[us, tz=UTC]`` for
    any zoned timestamp, ``string`` for ``large_string``, ...)."""
    from deltalake import Schema

    try:
        return pa.schema(Schema.from_arrow(schema).to_arrow())
    except Exception:  # a type Delta cannot hold: deltalake's writer says which
        raise _UseDeltaWriter from None


def _commit_files(
    store: ObjectStore, project: str, name: str, table: pa.Table, *, mode: WriteMode, evolve: bool, write_id: str
) -> Any:
    dt = _open_latest(uri(store, project, name), store)
    data = _fit(dt, table, mode, evolve)
    adds = _write_files(store, dataset_prefix(project, name), data, write_id)

    def still_fits(latest: Any) -> bool:
        return bool(_fit(latest, table, mode, evolve).schema == data.schema)

    return _commit_adds(store, project, name, dt, adds, data.schema, mode=mode, write_id=write_id, fits=still_fits)


def _commit_adds(
    store: ObjectStore,
    project: str,
    name: str,
    dt: Any,
    adds: list[Any],
    schema: pa.Schema,
    *,
    mode: WriteMode,
    write_id: str,
    fits: Callable[[Any], bool],
) -> Any:
    """Commit the written files ``adds`` of columns ``schema`` in one transaction on top of ``dt`` (None:
    create the table); returns the table, loaded at or after the commit. A commit that loses to
    another writer is tried again on top of the winner's if ``fits`` says the files still fit the
    table as it is then. The files are removed if nothing is committed.

    Raises:
        _UseDeltaWriter: the table changed under the write so that the files no longer fit it.
        Conflict: the commit lost to other writers ``_COMMIT_ATTEMPTS`` times.
    """
    from deltalake import CommitProperties, Schema
    from deltalake.exceptions import CommitFailedError, DeltaError
    from deltalake.transaction import create_table_with_add_actions

    location = uri(store, project, name)
    props = CommitProperties(custom_metadata={_WRITE_ID: write_id})
    try:
        for attempt in range(_COMMIT_ATTEMPTS):
            try:
                if dt is None:
                    create_table_with_add_actions(
                        location,
                        Schema.from_arrow(schema),
                        adds,
                        mode="error",
                        configuration=_TABLE_CONFIG,
                        storage_options=store.storage_options() or None,
                        commit_properties=props,
                    )
                    return _open_latest(location, store)
                dt.create_write_transaction(adds, mode=mode, schema=schema, commit_properties=props)
                dt.update_incremental()
                return dt
            except (CommitFailedError, DeltaError) as e:
                # Another writer committed first (or created the table first): try again on top
                # of its commit, if the table still takes these files as they are.
                if not isinstance(e, CommitFailedError) and "already exists" not in str(e):
                    raise
                if attempt == _COMMIT_ATTEMPTS - 1:
                    raise Conflict(
                        f"dataset {name!r} kept changing during the write; try again ({_first_line(e)})"
                    ) from None
                dt = _open_latest(location, store)
                if not fits(dt):
                    raise _UseDeltaWriter from None
        raise AssertionError("unreachable")  # pragma: no cover
    except BaseException:
        _remove_files(store, dataset_prefix(project, name), [a.path for a in adds])
        raise


def _write_files(store: ObjectStore, prefix: str, table: pa.Table, write_id: str) -> list[Any]:
    """Write ``table`` as Parquet files under ``prefix``; returns their Delta add actions."""
    import pyarrow.parquet as pq
    from deltalake.transaction import AddAction

    adds: list[Any] = []
    files: list[str] = []
    try:
        for part, start in enumerate(range(0, max(table.num_rows, 1), _FILE_ROWS)):
            chunk = table.slice(start, _FILE_ROWS)
            files.append(f"part-{part:05d}-{write_id}-c000.snappy.parquet")
            collected: list[Any] = []
            with store.arrow_output(f"{prefix}/{files[-1]}") as out:
                pq.write_table(
                    chunk, out, row_group_size=_ROW_GROUP_ROWS, compression="snappy", metadata_collector=collected
                )
                size = out.tell()
            stats = _file_stats(collected[0], table.schema)
            adds.append(AddAction(files[-1], size, {}, int(time.time() * 1000), True, json.dumps(stats)))
    except BaseException:
        _remove_files(store, prefix, files)
        raise
    return adds


def _commit_stream(
    session: Session,
    store: ObjectStore,
    project: Project,
    ds: Dataset | None,
    name: str,
    data: Iterable[pa.RecordBatch],
    *,
    mode: WriteMode,
    write_id: str,
) -> tuple[Any, int]:
    """Write the batches of ``data`` as they arrive and commit them in one transaction; returns the
    table, loaded at or after the commit, and the rows written.

    The columns are the first batch's, checked before anything is written; before each batch is
    written, the size of the batches so far is held against the project's storage quota.

    Raises:
        InvalidInput: as for :func:`write`, or raised by ``data`` (whatever it raises comes through).
        QuotaExceeded: the batches so far would take the project over its storage quota.
        Conflict: the commit lost to other writers, or the table changed its columns meanwhile.
    """
    with _ReadAhead(data, _STREAM_AHEAD) as batches:
        first = batches.next()
        if first is None:
            raise InvalidInput("no rows and no columns to write: the input is empty")
        raw = first.schema
        part = _normalise(pa.Table.from_batches([first]))
        columns = part.schema
        _check_schema(session, ds, name, columns, mode=mode, evolve=False)
        dt = _open_latest(uri(store, project.name, name), store)
        try:
            target = _target_schema(dt, columns, mode, False)
            fitted = _fit_to(part, target)
        except _UseDeltaWriter:
            # Not a plain write after all (an overwrite that changes the columns, a partitioned
            # table...): deltalake's writer takes the data whole.
            del part
            rest: list[pa.RecordBatch] = []
            while (batch := batches.next()) is not None:
                rest.append(_same_columns(batch, raw, len(rest) + 2))
            table = _normalise(pa.Table.from_batches([first, *rest]))
            del first, rest
            quotas.check(session, project, "storage", int(table.nbytes))
            dt = _commit(store, project.name, name, table, mode=mode, evolve=False, write_id=write_id)
            return dt, table.num_rows
        del first
        files = _StreamedFiles(store, dataset_prefix(project.name, name), write_id, target)
        rows = nbytes = 0
        index = 1
        room = -1.0
        try:
            while True:
                nbytes += part.nbytes
                if nbytes > room:
                    # The quota is read for the first batch, and again whenever the batches so far
                    # outgrow the room it left then.
                    quotas.check(session, project, "storage", nbytes)
                    room = quotas.limits(session, project)["storage"] - quotas.usage(session, project).get("storage", 0)
                if fitted.num_rows:
                    files.add(fitted)
                    rows += fitted.num_rows
                del part, fitted
                batch = batches.next()
                if batch is None:
                    break
                index += 1
                part = _normalise(pa.Table.from_batches([_same_columns(batch, raw, index)]))
                del batch
                try:
                    fitted = _fit_to(part, target)
                except _UseDeltaWriter as e:
                    column, reason = e.args
                    raise InvalidInput(f"column {column!r} of batch {index} cannot be stored: {reason}") from None
            adds = files.finish()
        except BaseException:
            files.abort()
            raise

    def still_fits(latest: Any) -> bool:
        try:
            return bool(_target_schema(latest, columns, mode, False) == target)
        except _UseDeltaWriter:
            return False

    try:
        dt = _commit_adds(store, project.name, name, dt, adds, target, mode=mode, write_id=write_id, fits=still_fits)
    except _UseDeltaWriter:
        raise Conflict(f"dataset {name!r} changed its columns during the write; try again") from None
    return dt, rows


def _same_columns(batch: pa.RecordBatch, schema: pa.Schema, index: int) -> pa.RecordBatch:
    """``batch``, if its columns are ``schema``'s.

    Raises:
        InvalidInput: they are not.
    """
    if batch.schema.equals(schema):
        return batch
    diff = _schema_diff(_arrow_columns(schema), _arrow_columns(batch.schema))
    raise InvalidInput(
        f"batch {index} of the input has other columns than the first: "
        f"{'; '.join(diff) or 'their order or nullability differs'}",
        detail={"differences": diff},
    )


def _arrow_columns(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


_END = object()


class _ReadAhead:
    """Takes the batches of ``data`` in a background thread, at most ``ahead`` of the consumer.

    The thread runs until ``data`` ends or raises, or until the context exits; the exit waits for it.
    An iterator of ``data`` is closed in that thread too, so a source's connection is used by one
    thread only.
    """

    def __init__(self, data: Iterable[pa.RecordBatch], ahead: int) -> None:
        self._data = data
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run,), name="selfserve-read-ahead", daemon=True
        )

    def __enter__(self) -> _ReadAhead:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        while not self._queue.empty():
            self._queue.get_nowait()

    def next(self) -> pa.RecordBatch | None:
        """The next batch, or None at the end.

        Raises:
            BaseException: whatever ``data`` raised.
        """
        if self._done:
            return None
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self._done = True
                    raise RuntimeError("the thread reading the input of the write stopped unexpectedly") from None
        if isinstance(item, pa.RecordBatch):
            return item
        self._done = True
        if isinstance(item, BaseException):
            raise item
        return None

    def _run(self) -> None:
        iterator: Any = None
        try:
            iterator = iter(self._data)
            for batch in iterator:
                if not isinstance(batch, pa.RecordBatch):
                    raise TypeError(f"expected record batches to write, got {type(batch).__name__}")
                if not self._put(batch):
                    return
            self._put(_END)
        except BaseException as e:
            self._put(e)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as e:  # the write has ended already; its own outcome stands
                    log.warning("closing the input of a write failed: %s", _first_line(e))

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
            except queue.Full:
                continue
            return True
        return False


class _StreamedFiles:
    """The Parquet files of one write, written as its tables arrive, as :func:`_write_files` cuts a
    whole table: files of ``_FILE_ROWS`` rows, row groups of at most ``_ROW_GROUP_ROWS`` rows."""

    def __init__(self, store: ObjectStore, prefix: str, write_id: str, schema: pa.Schema) -> None:
        self.store = store
        self.prefix = prefix
        self.write_id = write_id
        self.schema = schema
        self.files: list[str] = []
        self.adds: list[Any] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._out: Any = None
        self._writer: Any = None
        self._collected: list[Any] = []
        self._file_rows = 0

    def add(self, table: pa.Table) -> None:
        """Write ``table`` (of ``schema``), or keep it until a row group's worth of rows has come."""
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= min(_STREAM_GROUP_ROWS, _ROW_GROUP_ROWS):
            self._flush()

    def finish(self) -> list[Any]:
        """Write what is kept and close the last file; returns the files' Delta add actions."""
        if self._pending:
            self._flush()
        if not self.files:  # no rows: one file without any, as for an empty table
            self._open()
            self._writer.write_table(self.schema.empty_table(), row_group_size=_ROW_GROUP_ROWS)
        if self._writer is not None:
            self._close()
        return self.adds

    def abort(self) -> None:
        """Close what is open and remove every file written."""
        writer, out = self._writer, self._out
        self._writer = self._out = None
        self._pending = []
        for stream in (writer, out):
            if stream is not None:
                try:
                    stream.close()
                except Exception as e:  # the write's own error is the one to report
                    log.warning("could not close a file of a failed write: %s", _first_line(e))
        _remove_files(self.store, self.prefix, self.files)

    def _flush(self) -> None:
        table = self._pending[0] if len(self._pending) == 1 else pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        start = 0
        while start < table.num_rows:
            if self._writer is None:
                self._open()
            take = min(table.num_rows - start, _FILE_ROWS - self._file_rows)
            self._writer.write_table(table.slice(start, take), row_group_size=_ROW_GROUP_ROWS)
            self._file_rows += take
            start += take
            if self._file_rows >= _FILE_ROWS:
                self._close()

    def _open(self) -> None:
        import pyarrow.parquet as pq

        self.files.append(f"part-{len(self.files):05d}-{self.write_id}-c000.snappy.parquet")
        self._collected = []
        self._file_rows = 0
        self._out = self.store.arrow_output(f"{self.prefix}/{self.files[-1]}")
        self._writer = pq.ParquetWriter(
            self._out, self.schema, compression="snappy", metadata_collector=self._collected
        )

    def _close(self) -> None:
        from deltalake.transaction import AddAction

        writer, out = self._writer, self._out
        self._writer = self._out = None
        try:
            writer.close()
            size = out.tell()
        finally:
            out.close()
        stats = _file_stats(self._collected[0], self.schema)
        self.adds.append(AddAction(self.files[-1], size, {}, int(time.time() * 1000), True, json.dumps(stats)))


def _remove_files(store: ObjectStore, prefix: str, files: list[str]) -> None:
    """Best effort: the files of a write that committed nothing are garbage no reader sees."""
    for file in files:
        try:
            store.delete_object(f"{prefix}/{file}")
        except Exception as e:  # the write's own error is the one to report
            log.warning("could not remove %s/%s of a failed write: %s", prefix, file, _first_line(e))


def _file_stats(metadata: Any, schema: pa.Schema) -> dict[str, Any]:
    """Delta statistics of one Parquet file from its footer: ``numRecords``, and per top-level column
    of a plain type ``nullCount``, ``minValues`` and ``maxValues``.

    Every bound is safe for data skipping: timestamps widen to whole milliseconds, long text keeps
    a prefix as its minimum and no maximum, and a column whose bounds are not all known (NaN-only
    row groups, oversized values) gets none.
    """
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
    leaf = 0
    for index, field in enumerate(schema):
        column, leaf = leaf, leaf + _leaves(field.type)
        if index >= _STATS_COLUMNS or pa.types.is_nested(field.type):
            continue
        stats = [g.column(column).statistics for g in groups]
        if any(s is None or not s.has_null_count for s in stats):
            continue
        nulls[field.name] = sum(int(s.null_count) for s in stats)
        bounded = [s for s, g in zip(stats, groups, strict=True) if s.null_count < g.num_rows]
        if not bounded or not all(s.has_min_max for s in bounded):
            continue
        try:
            low = _stat_value(min(s.min for s in bounded), field.type, upper=False)
            high = _stat_value(max(s.max for s in bounded), field.type, upper=True)
        except (TypeError, ValueError, OverflowError):
            continue
        if low is not None:
            mins[field.name] = low
        if high is not None:
            maxs[field.name] = high
    return {"numRecords": metadata.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}


def _leaves(t: pa.DataType) -> int:
    """How many Parquet leaf columns a field of this type has."""
    if pa.types.is_struct(t):
        return sum(_leaves(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _leaves(t.key_type) + _leaves(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _leaves(t.value_type)
    return 1


def _stat_value(value: Any, t: pa.DataType, *, upper: bool) -> Any:
    """A Parquet bound as Delta writes it in JSON, or None where no safe bound can be given."""
    if pa.types.is_boolean(t) or pa.types.is_integer(t):
        return value if isinstance(value, bool | int) else None
    if pa.types.is_floating(t):
        return float(value) if math.isfinite(value) else None
    if pa.types.is_decimal(t):
        return float(value) if t.precision <= 15 else None  # exact in a double up to 15 digits
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        if not isinstance(value, str):
            return None
        if len(value) <= _STATS_TEXT_CHARS:
            return value
        return None if upper else value[:_STATS_TEXT_CHARS]  # a prefix is below the value; a cut maximum is not
    if pa.types.is_date(t):
        return value.isoformat() if isinstance(value, date) else None
    if pa.types.is_timestamp(t) and t.tz is not None and isinstance(value, datetime):
        # Delta's statistics hold milliseconds: the minimum rounds down, the maximum up.
        moment = value.astimezone(UTC)
        extra = moment.microsecond % 1000
        if extra and upper:
            moment += timedelta(microseconds=1000 - extra)
        elif extra:
            moment -= timedelta(microseconds=extra)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return None  # binary, timestamps without a zone and the rest: no bounds, which is always safe


def _commit_with_deltalake(
    store: ObjectStore, project: str, name: str, table: pa.Table, *, mode: WriteMode, evolve: bool, write_id: str
) -> Any:
    from deltalake import CommitProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError, SchemaMismatchError

    location = uri(store, project, name)
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
                configuration=_TABLE_CONFIG,
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
    return _open_latest(location, store)


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


def open_table(
    store: ObjectStore, project: str, name: str, *, version: int | None = None, as_of: datetime | None = None
) -> Any:
    """The Delta table at a version or a point in time (its latest version by default).

    Raises:
        NotFound: no such table, version or time.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    when = (
        f"version {version}" if version is not None else f"time {as_of.isoformat()}" if as_of else "its latest version"
    )
    try:
        # Loading a version directly reads the log up to it only, not up to the latest first.
        dt = DeltaTable(uri(store, project, name), version=version, storage_options=store.storage_options() or None)
        if version is None and as_of is not None:
            dt.load_as_version(_version_at(store, project, name, dt.version(), as_of, when))
    except (DeltaError, ValueError, OSError) as e:
        raise NotFound(f"dataset {name!r} has no data at {when}: {str(e).splitlines()[0][:200]}") from None
    return dt


@dataclass(frozen=True)
class Snapshot:
    """One version of a dataset as the engines read it: its data files (URIs) and its schema."""

    version: int
    files: tuple[str, ...]
    schema: pa.Schema


# A committed version never changes, so what it holds is kept per process, keyed by the table's
# location, the dataset row's identity and the version. The row's identity (id and creation time)
# matters: a dataset deleted and created again under its name is a new table whose version 0 is
# not the old one's, and SQLite may even give the new row the old id.
_SNAPSHOTS_KEPT = 256
_snapshots: OrderedDict[tuple[str, str, int], Snapshot] = OrderedDict()
_snapshots_lock = threading.Lock()


def _snapshot_key(store: ObjectStore, project: str, ds: Dataset, version: int) -> tuple[str, str, int]:
    return (uri(store, project, ds.name), f"{ds.id}@{ds.created_at.isoformat()}", version)


def _remember(store: ObjectStore, project: str, ds: Dataset, snap: Snapshot) -> None:
    key = _snapshot_key(store, project, ds, snap.version)
    with _snapshots_lock:
        _snapshots[key] = snap
        _snapshots.move_to_end(key)
        while len(_snapshots) > _SNAPSHOTS_KEPT:
            _snapshots.popitem(last=False)


def _forget(store: ObjectStore, project: str, name: str) -> None:
    location = uri(store, project, name)
    with _snapshots_lock:
        for key in [k for k in _snapshots if k[0] == location]:
            del _snapshots[key]


def snapshot(store: ObjectStore, project: str, ds: Dataset, version: int | None = None) -> Snapshot:
    """The files and schema of a version of ``ds`` (of project ``project``; by default the current
    version the metadata DB records), reading the Delta log only the first time.

    Raises:
        NotFound: the dataset has no such version (or no data yet).
    """
    v = ds.current_version if version is None else version
    if v is None:
        raise NotFound(f"dataset {ds.name!r} has no data yet")
    key = _snapshot_key(store, project, ds, v)
    with _snapshots_lock:
        found = _snapshots.get(key)
        if found is not None:
            _snapshots.move_to_end(key)
            return found
    dt = open_table(store, project, ds.name, version=v)
    snap = Snapshot(v, tuple(dt.file_uris()), pa.schema(dt.schema().to_arrow()))
    _remember(store, project, ds, snap)
    return snap


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
    """Rows of a version of the dataset (or of the version current at ``as_of``; the latest by default).

    Raises:
        NotFound: no such dataset, version or time.
    """
    dt = open_table(store, project, name, version=version, as_of=as_of)
    return scan(store, tuple(dt.file_uris()), pa.schema(dt.schema().to_arrow()), columns=columns, limit=limit)


def scan(
    store: ObjectStore,
    files: tuple[str, ...],
    schema: pa.Schema,
    *,
    columns: list[str] | None = None,
    limit: int | None = None,
) -> pa.Table:
    """Read the data files of a version (a file without a column added later reads it as null).

    Arrow reads the files through its own filesystem for the store: deltalake's dataset goes
    through a Python filesystem that Arrow's I/O threads call back into, which can abort the
    interpreter at exit.
    """
    import pyarrow.dataset as pds

    fs = store.arrow_filesystem()
    fmt = pds.ParquetFileFormat()
    fragments = [fmt.make_fragment(store.arrow_path(f), filesystem=fs) for f in files]
    data = pds.FileSystemDataset(fragments, schema=schema, format=fmt, filesystem=fs)
    if limit is not None:
        return data.head(limit, columns=columns)
    return data.to_table(columns=columns)


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
    _forget(store, project.name, ds.name)
    store.delete_prefix(dataset_prefix(project.name, ds.name))
