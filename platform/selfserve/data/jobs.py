"""Background jobs for long operations (ingest, transform) with progress, in the API process.

A job takes one unit of the project's ``runs`` quota from submission to its end. Jobs that
were running when the API stopped are marked failed at the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from selfserve.errors import NotFound, SelfServeError
from selfserve.policy import audit, quotas
from selfserve.policy.authz import Caller, authorize
from selfserve.schemas.data import JobPublic
from selfserve.store import Store
from selfserve.store.tables import Job, Project, utcnow

log = logging.getLogger(__name__)
Progress = Callable[[dict[str, Any]], None]
Work = Callable[[Session, Progress], dict[str, Any]]


def public(job: Job) -> JobPublic:
    return JobPublic.model_validate(job, from_attributes=True)


class JobRunner:
    def __init__(self, store: Store, *, workers: int = 2, progress_every: float = 0.5) -> None:
        self.store = store
        self.progress_every = progress_every
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="selfserve-job")
        self._idle = threading.Condition()
        self._active = 0

    def recover(self) -> int:
        """Mark jobs left running or queued by a previous process as failed; returns how many."""
        with self.store.begin() as s:
            stale = list(s.scalars(select(Job).where(Job.status.in_(("queued", "running")))))
            for job in stale:
                job.status, job.error, job.finished_at = "failed", "interrupted: the platform restarted", utcnow()
                proj = s.get(Project, job.project_id)
                if proj is not None:
                    quotas.add_usage(s, proj, "runs", -1)
        return len(stale)

    def submit(
        self, session: Session, caller: Caller, proj: Project, kind: str, params: dict[str, Any], work: Work
    ) -> Job:
        """Queue ``work``; refused with 429 when the project's concurrent-runs quota is full."""
        quotas.reserve(session, proj, "runs", 1)
        job = Job(project_id=proj.id, kind=kind, params=params, progress={}, created_by=caller.name)
        session.add(job)
        session.flush()
        audit.record(session, caller.name, f"job:{kind}", project=proj.name, target=f"job/{job.id}", detail=params)
        session.commit()
        with self._idle:
            self._active += 1
        self._pool.submit(self._run, job.id, work)
        return job

    def _run(self, job_id: int, work: Work) -> None:
        last = 0.0

        def progress(values: dict[str, Any]) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < self.progress_every:
                return
            last = now
            with self.store.begin() as s:
                j = s.get(Job, job_id)
                if j is not None:
                    j.progress = dict(values)

        try:
            with self.store.begin() as s:
                j = s.get(Job, job_id)
                assert j is not None
                j.status, j.started_at = "running", utcnow()
            with self.store.session() as s:
                result = work(s, progress)
            status, error = "succeeded", None
        except SelfServeError as e:
            status, error, result = "failed", e.message, {"error": e.to_dict()["error"]}
        except Exception as e:  # a job's failure is recorded on the job; the worker lives on
            log.exception("job %s failed", job_id)
            status, error, result = "failed", f"internal error: {type(e).__name__}", None
        try:
            with self.store.begin() as s:
                j = s.get(Job, job_id)
                if j is not None:
                    j.status, j.error, j.result, j.finished_at = status, error, result, utcnow()
                    if result and "rows" in result:
                        j.progress = {**(j.progress or {}), "rows_read": result.get("rows_read", result["rows"])}
                    proj = s.get(Project, j.project_id)
                    if proj is not None:
                        quotas.add_usage(s, proj, "runs", -1)
                        audit.record(
                            s,
                            j.created_by,
                            f"job:{j.kind}",
                            project=proj.name,
                            target=f"job/{j.id}",
                            outcome="ok" if status == "succeeded" else "failed",
                            detail={"error": error} if error else None,
                        )
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)


def show(session: Session, caller: Caller, project: str, job_id: int) -> JobPublic:
    proj, _ = authorize(session, caller, "dataset:read", project)
    job = session.get(Job, job_id)
    if job is None or job.project_id != proj.id:
        raise NotFound(f"job {job_id} not found in project {project!r}")
    return public(job)


def list_(session: Session, caller: Caller, project: str, limit: int = 50) -> list[JobPublic]:
    proj, _ = authorize(session, caller, "dataset:read", project)
    rows = session.scalars(select(Job).where(Job.project_id == proj.id).order_by(Job.id.desc()).limit(limit))
    return [public(j) for j in rows]
