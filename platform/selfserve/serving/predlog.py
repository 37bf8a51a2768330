"""The prediction log: every predicted row, and labels that arrive later, as project datasets.

The gateway only appends to an in-memory buffer. A background thread writes the buffer every
``serving.log_flush_seconds`` (at once past ``serving.log_flush_rows``), one Delta append per
dataset: ``predictions-<route>`` (one row per predicted row: request id, row index, time, target,
model and version, shadow or live, status, latency, the inputs and the prediction as JSON) and
``feedback-<route>`` (request id, label as JSON, time). ``close()`` writes what is left, so nothing
buffered is lost on a clean shutdown. A write that fails is tried again at the next flush; after
``MAX_ATTEMPTS`` failures, or when the buffer is past ``MAX_BUFFERED`` rows, the oldest rows are
dropped and counted (``dropped``), never the request that is being answered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from selfserve.settings import Settings
from selfserve.store import Store

log = logging.getLogger("selfserve.predlog")
MAX_ATTEMPTS = 5
MAX_BUFFERED = 500_000
ACTOR = "gateway"

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("target", pa.string()),
        ("model", pa.string()),
        ("model_version", pa.int64()),
        ("shadow", pa.bool_()),
        ("ok", pa.bool_()),
        ("latency_ms", pa.float64()),
        ("inputs", pa.string()),
        ("prediction", pa.string()),
        ("error", pa.string()),
    ]
)
FEEDBACK_SCHEMA = pa.schema([("request_id", pa.string()), ("label", pa.string()), ("ts", pa.timestamp("us", tz="UTC"))])


def predictions_dataset(route: str) -> str:
    return f"predictions-{route}"


def feedback_dataset(route: str) -> str:
    return f"feedback-{route}"


@dataclass
class _Pending:
    project_id: int
    project: str
    route: str
    dataset: str
    schema: pa.Schema
    rows: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0


class PredictionLog:
    def __init__(self, settings: Settings, store: Store, object_store: Any) -> None:
        self.settings = settings
        self.store = store
        self.object_store = object_store
        self.dropped = 0
        self.written = 0
        self._pending: dict[tuple[int, str], _Pending] = {}
        self._size = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the request path: append only --------------------------------------------------------------

    def add_predictions(
        self,
        project_id: int,
        project: str,
        route: str,
        request_id: str,
        target: Any,
        shadow: bool,
        rows: Sequence[dict[str, Any]],
        predictions: Sequence[Any] | None,
        latency_ms: float,
        error: str | None,
    ) -> None:
        ts = datetime.now(UTC)
        records = [
            {
                "request_id": request_id,
                "row": i,
                "ts": ts,
                "target": target.name,
                "model": target.model,
                "model_version": target.version,
                "shadow": shadow,
                "ok": error is None,
                "latency_ms": latency_ms,
                "inputs": orjson.dumps(row).decode(),
                "prediction": None
                if predictions is None or i >= len(predictions)
                else orjson.dumps(predictions[i]).decode(),
                "error": error,
            }
            for i, row in enumerate(rows)
        ]
        self._add(project_id, project, route, predictions_dataset(route), PREDICTIONS_SCHEMA, records)

    def add_labels(self, project_id: int, project: str, route: str, labels: Sequence[tuple[str, Any]]) -> None:
        ts = datetime.now(UTC)
        records = [{"request_id": rid, "label": orjson.dumps(label).decode(), "ts": ts} for rid, label in labels]
        self._add(project_id, project, route, feedback_dataset(route), FEEDBACK_SCHEMA, records)

    def _add(
        self, project_id: int, project: str, route: str, dataset: str, schema: pa.Schema, records: list[dict[str, Any]]
    ) -> None:
        with self._lock:
            p = self._pending.get((project_id, dataset))
            if p is None:
                p = self._pending[(project_id, dataset)] = _Pending(project_id, project, route, dataset, schema)
            p.rows.extend(records)
            self._size += len(records)
            if self._size > MAX_BUFFERED:
                self._drop_oldest(self._size - MAX_BUFFERED)
            full = self._size >= self.settings.serving.log_flush_rows
        if full:
            self._wake.set()

    def _drop_oldest(self, n: int) -> None:
        for p in sorted(self._pending.values(), key=lambda p: len(p.rows), reverse=True):
            if n <= 0:
                break
            k = min(n, len(p.rows))
            del p.rows[:k]
            n -= k
            self._size -= k
            self.dropped += k
        log.warning("prediction log buffer full: dropped the oldest rows (%d dropped so far)", self.dropped)

    @property
    def buffered(self) -> int:
        return self._size

    # -- the background writer ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.serving.log_flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.flush()
            except Exception:  # the writer must outlive any one bad write
                log.exception("prediction log flush failed")

    def close(self) -> None:
        """Stop the writer and write everything still buffered."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.flush(final=True)

    def flush(self, *, final: bool = False) -> int:
        """Write every buffered row; returns how many were written."""
        with self._flush_lock:
            with self._lock:
                batches = [(key, p, p.rows) for key, p in self._pending.items() if p.rows]
                for _, p, rows in batches:
                    p.rows = []
                    self._size -= len(rows)
            written = 0
            for key, p, rows in batches:
                try:
                    self._write(p, rows)
                except Exception as e:
                    p.attempts += 1
                    if p.attempts >= MAX_ATTEMPTS or final:
                        self.dropped += len(rows)
                        log.error(
                            "prediction log: %d rows for %s/%s dropped after %d failed writes: %s",
                            len(rows),
                            p.project,
                            p.dataset,
                            p.attempts,
                            e,
                        )
                        p.attempts = 0
                        continue
                    log.warning("prediction log: writing %s/%s failed (%s); retrying", p.project, p.dataset, e)
                    with self._lock:
                        current = self._pending.setdefault(key, p)
                        current.rows[:0] = rows
                        self._size += len(rows)
                    continue
                p.attempts = 0
                written += len(rows)
            self.written += written
            return written

    def _write(self, p: _Pending, rows: list[dict[str, Any]]) -> None:
        from selfserve.data import datasets
        from selfserve.policy import quotas
        from selfserve.store.tables import Project

        table = pa.Table.from_pylist(rows, schema=p.schema)
        started = time.perf_counter()
        with self.store.session() as session:
            proj = session.get(Project, p.project_id)
            if proj is None:  # the project was deleted: nothing to keep
                return
            datasets.write(
                session,
                self.object_store,
                proj,
                p.dataset,
                table,
                actor=ACTOR,
                producer={"kind": "gateway", "route": p.route},
                description=f"Every request of route {p.route}, written by the gateway."
                if p.dataset.startswith("predictions-")
                else f"Labels sent for the predictions of route {p.route}.",
            )
            if p.dataset.startswith("predictions-"):
                quotas.add_usage(session, proj, "predictions", sum(1 for r in rows if not r["shadow"]))
            session.commit()
        log.debug(
            "prediction log: %d rows to %s/%s in %.3f s", len(rows), p.project, p.dataset, time.perf_counter() - started
        )
