"""Sub-clients of the data capability: sources, datasets (with queries, ingestion, transforms), products."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from selfserve.client._base import SubClient
from selfserve.errors import SelfServeError
from selfserve.schemas import data as schemas


class SourcesClient(SubClient):
    def list(self, project: str) -> list[schemas.SourcePublic]:
        return self._many(schemas.SourcePublic, self._call("sources.list", project=project))

    def add(
        self,
        project: str,
        name: str,
        kind: str,
        config: dict[str, Any] | None = None,
        *,
        secrets: dict[str, str] | None = None,
    ) -> schemas.SourcePublic:
        body = {"name": name, "kind": kind, "config": config or {}, "secrets": secrets or {}}
        return self._one(schemas.SourcePublic, self._call("sources.add", project=project, json=body))

    def get(self, project: str, name: str) -> schemas.SourcePublic:
        return self._one(schemas.SourcePublic, self._call("sources.get", project=project, name=name))

    def test(self, project: str, name: str) -> schemas.SourceTest:
        return self._one(schemas.SourceTest, self._call("sources.test", project=project, name=name))

    def remove(self, project: str, name: str) -> None:
        self._call("sources.remove", project=project, name=name)


class JobsClient(SubClient):
    def list(self, project: str) -> list[schemas.JobPublic]:
        return self._many(schemas.JobPublic, self._call("jobs.list", project=project))

    def get(self, project: str, job_id: int) -> schemas.JobPublic:
        return self._one(schemas.JobPublic, self._call("jobs.get", project=project, job_id=job_id))

    def wait(
        self,
        project: str,
        job_id: int,
        *,
        timeout: float = 3600,
        poll: float = 0.25,
        on_progress: Callable[[schemas.JobPublic], None] | None = None,
    ) -> schemas.JobPublic:
        """Wait for a job to end; a failed job raises the error it failed with."""
        from selfserve.errors import ERRORS_BY_CODE

        deadline = time.monotonic() + timeout
        while True:
            job = self.get(project, job_id)
            if on_progress:
                on_progress(job)
            if job.status == "succeeded":
                return job
            if job.status == "failed":
                err = (job.result or {}).get("error") or {}
                cls = ERRORS_BY_CODE.get(err.get("code", ""), SelfServeError)
                raise cls(job.error or "job failed", detail=err.get("detail"))
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s")
            time.sleep(poll)


class DatasetsClient(SubClient):
    def list(self, project: str) -> list[schemas.DatasetPublic]:
        return self._many(schemas.DatasetPublic, self._call("datasets.list", project=project))

    def get(self, project: str, name: str) -> schemas.DatasetPublic:
        return self._one(schemas.DatasetPublic, self._call("datasets.get", project=project, name=name))

    def delete(self, project: str, name: str) -> None:
        self._call("datasets.delete", project=project, name=name)

    def history(self, project: str, name: str) -> builtins.list[schemas.DatasetVersionPublic]:
        return self._many(schemas.DatasetVersionPublic, self._call("datasets.history", project=project, name=name))

    def schema(self, project: str, name: str, *, version: int | None = None) -> builtins.list[schemas.Column]:
        params = {"version": version} if version is not None else None
        return self._many(schemas.Column, self._call("datasets.schema", project=project, name=name, params=params))

    def preview(
        self,
        project: str,
        name: str,
        *,
        version: int | None = None,
        as_of: str | datetime | None = None,
        limit: int = 20,
    ) -> schemas.TableData:
        """The first ``limit`` rows of the latest version, of ``version``, or of the version current
        at ``as_of`` (an ISO time or a datetime; without a zone it is UTC)."""
        params: dict[str, Any] = {"limit": limit}
        if version is not None:
            params["version"] = version
        if as_of is not None:
            params["as_of"] = as_of.isoformat() if isinstance(as_of, datetime) else as_of
        return self._one(schemas.TableData, self._call("datasets.preview", project=project, name=name, params=params))

    def query(self, project: str, sql: str, *, limit: int = 100) -> schemas.TableData:
        data = self._call("datasets.query", project=project, json={"sql": sql, "limit": limit})
        return self._one(schemas.TableData, data)

    def upload(
        self,
        project: str,
        name: str,
        path: str | Path,
        *,
        format: str | None = None,
        mode: str = "append",
        evolve: bool = False,
        delimiter: str | None = None,
        encoding: str | None = None,
    ) -> schemas.DatasetVersionPublic:
        p = Path(path)
        params: dict[str, Any] = {"mode": mode, "evolve": str(evolve).lower()}
        for key, value in (("format", format), ("delimiter", delimiter), ("encoding", encoding)):
            if value:
                params[key] = value
        with p.open("rb") as f:
            data = self._client._request(
                "datasets.upload", project=project, name=name, params=params, files={"file": (p.name, f)}
            )
        return self._one(schemas.DatasetVersionPublic, data)

    def export(
        self, project: str, name: str, dest: str | Path, *, version: int | None = None, format: str = "parquet"
    ) -> Path:
        params: dict[str, Any] = {"format": format}
        if version is not None:
            params["version"] = version
        out = Path(dest)
        self._client._download("datasets.export", out, project=project, name=name, params=params)
        return out

    def get_contract(self, project: str, name: str) -> str:
        return str(self._call("datasets.get_contract", project=project, name=name)["contract"])

    def set_contract(self, project: str, name: str, contract: str) -> schemas.DatasetPublic:
        data = self._call("datasets.set_contract", project=project, name=name, json={"contract": contract})
        return self._one(schemas.DatasetPublic, data)

    def remove_contract(self, project: str, name: str) -> schemas.DatasetPublic:
        return self._one(schemas.DatasetPublic, self._call("datasets.remove_contract", project=project, name=name))

    def check(self, project: str, name: str, *, version: int | None = None) -> schemas.ContractReportPublic:
        params = {"version": version} if version is not None else None
        data = self._call("datasets.check", project=project, name=name, params=params)
        return self._one(schemas.ContractReportPublic, data)

    def ingest(self, project: str, source: str, to: str, *, wait: bool = True, **options: Any) -> schemas.JobPublic:
        """Read ``source`` into dataset ``to``; options as in IngestRequest (table, query, incremental...)."""
        body = {"source": source, "to": to, **{k: v for k, v in options.items() if v is not None}}
        job = self._one(schemas.JobPublic, self._call("datasets.ingest", project=project, json=body))
        return self._client.jobs.wait(project, job.id) if wait else job

    def transform(
        self,
        project: str,
        to: str,
        *,
        sql: str | None = None,
        polars: str | None = None,
        wait: bool = True,
        **options: Any,
    ) -> schemas.JobPublic:
        body = {"to": to, "sql": sql, "polars": polars, **{k: v for k, v in options.items() if v is not None}}
        job = self._one(schemas.JobPublic, self._call("datasets.transform", project=project, json=body))
        return self._client.jobs.wait(project, job.id) if wait else job


class ProductsClient(SubClient):
    def publish(
        self,
        project: str,
        dataset: str,
        *,
        description: str = "",
        tags: list[str] | None = None,
        sla_freshness: str | None = None,
    ) -> schemas.ProductPublic:
        body = {"description": description, "tags": tags or [], "sla_freshness": sla_freshness}
        return self._one(
            schemas.ProductPublic, self._call("products.publish", project=project, name=dataset, json=body)
        )

    def unpublish(self, project: str, dataset: str) -> None:
        self._call("products.unpublish", project=project, name=dataset)

    def search(self, text: str = "", *, tag: str | None = None) -> list[schemas.ProductPublic]:
        params: dict[str, Any] = {"q": text}
        if tag:
            params["tag"] = tag
        return self._many(schemas.ProductPublic, self._call("products.search", params=params))

    def request(self, product: str, *, for_project: str, reason: str = "") -> schemas.AccessPublic:
        """Ask for ``project/dataset`` to be readable from ``for_project``."""
        project, _, dataset = product.partition("/")
        body = {"for_project": for_project, "reason": reason}
        data = self._call("products.request", project=project, name=dataset, json=body)
        return self._one(schemas.AccessPublic, data)

    def requests(self, project: str, *, status: str | None = None) -> list[schemas.AccessPublic]:
        params = {"status": status} if status else None
        return self._many(schemas.AccessPublic, self._call("products.requests", project=project, params=params))

    def grant(self, project: str, request_id: int) -> schemas.AccessPublic:
        return self._decide(project, request_id, "grant")

    def deny(self, project: str, request_id: int) -> schemas.AccessPublic:
        return self._decide(project, request_id, "deny")

    def revoke(self, project: str, request_id: int) -> schemas.AccessPublic:
        return self._decide(project, request_id, "revoke")

    def _decide(self, project: str, request_id: int, decision: str) -> schemas.AccessPublic:
        data = self._call("products.decide", project=project, request_id=request_id, decision=decision)
        return self._one(schemas.AccessPublic, data)
