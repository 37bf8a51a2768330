"""Ingestion: read a source in chunks (optionally throttled and incremental) into a dataset version.

:func:`ingest` is the flow-ready unit: it needs a session, the object store and the project, and
reports progress through a callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import select
from sqlalchemy.orm import Session

from selfserve.data import datasets, sources
from selfserve.data.connectors.base import ReadRequest
from selfserve.data.objectstore import ObjectStore
from selfserve.errors import InvalidInput
from selfserve.policy import secrets
from selfserve.schemas.data import IngestRequest
from selfserve.settings import get_settings
from selfserve.store.tables import DatasetVersion, IngestState, Project, Source, utcnow


def throttled(batches: Iterator[pa.RecordBatch], max_rows_per_second: float | None) -> Iterator[pa.RecordBatch]:
    """Pace the reads so that on average no more than ``max_rows_per_second`` rows are taken."""
    if not max_rows_per_second:
        yield from batches
        return
    start = time.monotonic()
    rows = 0
    for batch in batches:
        yield batch
        rows += batch.num_rows
        ahead = rows / max_rows_per_second - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)


def _max_cursor(batch: pa.RecordBatch, column: str, ordered: bool) -> Any:
    """The batch's largest cursor. Sources that return rows in cursor order (SQL ``ORDER BY``, stream
    ids) give it as the last row: a text cursor such as a stream id does not sort as text."""
    if column not in batch.schema.names:
        raise InvalidInput(f"cursor column {column!r} is not in the source's rows (columns: {batch.schema.names})")
    col = batch.column(column)
    return col[len(col) - 1].as_py() if ordered else pc.max(col).as_py()


def _jsonable(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v


def ingest(
    session: Session,
    store: ObjectStore,
    proj: Project,
    req: IngestRequest,
    *,
    actor: str,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> DatasetVersion:
    """Read ``req.source`` into dataset ``req.to`` as one new version.

    Raises:
        InvalidInput, ServiceUnavailable: from the source (masked); QuotaExceeded on storage.
    """
    if (req.table is None) == (req.query is None):
        raise InvalidInput("give exactly one of table or query")
    src: Source = sources.get(session, proj, req.source)
    state = None
    if req.incremental:
        state = session.scalar(
            select(IngestState).where(IngestState.source_id == src.id, IngestState.dataset == req.to)
        )
        if state is not None and state.cursor_column != req.incremental:
            raise InvalidInput(
                f"{req.to!r} was loaded incrementally by {state.cursor_column!r}, not {req.incremental!r}"
            )
    batch_rows = req.batch_rows or get_settings().data.default_batch_rows
    if req.max_rows_per_second:
        batch_rows = max(1, min(batch_rows, int(req.max_rows_per_second)))
    read = ReadRequest(
        table=req.table,
        query=req.query,
        cursor_column=req.incremental,
        watermark=state.watermark if state else None,
        batch_rows=batch_rows,
        options=req.options or None,
    )
    connector = sources.connector_for(src)
    ordered = bool(getattr(connector, "cursor_ordered", False))
    rows = 0
    watermark = state.watermark if state else None
    started = time.monotonic()

    def batches() -> Iterator[pa.RecordBatch]:
        """The source's rows for the write, counted (and the watermark moved) as they are read."""
        nonlocal rows, watermark
        for batch in throttled(connector.read(read), req.max_rows_per_second):
            if batch.num_rows == 0:
                continue
            rows += batch.num_rows
            if req.incremental:
                top = _max_cursor(batch, req.incremental, ordered)
                if top is not None and (ordered or watermark is None or _jsonable(top) > watermark):
                    watermark = _jsonable(top)
            if progress:
                progress({"rows_read": rows, "seconds": round(time.monotonic() - started, 2)})
            yield batch
        if not rows:
            if req.incremental and state is not None:
                raise InvalidInput(f"no new rows in {req.source!r} since {req.incremental} = {state.watermark}")
            raise InvalidInput(f"source {req.source!r} returned no rows")

    try:
        # The source is read while the dataset is written (in a thread of the write's own): the
        # row count and the watermark are final once the write returns.
        row = datasets.write(
            session,
            store,
            proj,
            req.to,
            batches(),
            actor=actor,
            mode=req.mode,
            evolve=req.evolve,
            producer={
                "kind": "ingest",
                "source": src.name,
                "source_kind": src.kind,
                "table": req.table,
                "query": req.query,
                "incremental": req.incremental,
            },
        )
    except InvalidInput as e:
        connector.rollback()
        raise InvalidInput(secrets.mask(e.message, secrets.decrypt(src.secret)), detail=e.detail) from None
    except BaseException:
        connector.rollback()
        raise
    # The version is committed: now a queue may forget the messages it came from.
    connector.commit()
    if req.incremental:
        if state is None:
            state = IngestState(source_id=src.id, dataset=req.to, cursor_column=req.incremental, watermark=watermark)
            session.add(state)
        else:
            state.watermark = watermark
            state.updated_at = utcnow()
    session.flush()
    return row
