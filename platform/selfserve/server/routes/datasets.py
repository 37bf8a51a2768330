from __future__ import annotations

import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, BackgroundTasks, Query, Request, UploadFile
from fastapi.responses import FileResponse

from selfserve.data import jobs, service
from selfserve.errors import InvalidInput, PayloadTooLarge
from selfserve.policy.authz import authorize
from selfserve.schemas.data import (
    Column,
    ContractReportPublic,
    ContractSet,
    DatasetPublic,
    DatasetVersionPublic,
    IngestRequest,
    JobPublic,
    QueryRequest,
    TableData,
    TransformRequest,
)
from selfserve.server.deps import (
    CallerDep,
    DatasetName,
    JobsDep,
    ObjectStoreDep,
    ProjectName,
    RowId,
    SessionDep,
    action,
)

router = APIRouter(prefix="/projects/{project}", tags=["datasets"])
# The upload route's path, for the body-size middleware: uploads have their own, larger limit.
UPLOAD_PATH = r"/api/v1/projects/[^/]+/datasets/[^/]+/upload"
UPLOAD_ENVELOPE_BYTES = 1 << 16  # multipart boundaries and part headers around the file
VersionQuery = Query(None, ge=0, description="A version number; default the latest.")
AsOfQuery = Query(None, description="Time travel: the version current at this time (no zone: UTC).")


@router.get("/datasets", response_model=list[DatasetPublic], openapi_extra=action("dataset:read"))
def list_datasets(project: ProjectName, caller: CallerDep, session: SessionDep) -> list[DatasetPublic]:
    return service.list_datasets(session, caller, project)


@router.get("/datasets/{name}", response_model=DatasetPublic, openapi_extra=action("dataset:read"))
def show_dataset(project: ProjectName, name: DatasetName, caller: CallerDep, session: SessionDep) -> DatasetPublic:
    return service.show(session, caller, project, name)


@router.delete("/datasets/{name}", status_code=204, openapi_extra=action("dataset:write"))
def delete_dataset(
    project: ProjectName, name: DatasetName, caller: CallerDep, session: SessionDep, store: ObjectStoreDep
) -> None:
    """Delete a dataset with every version."""
    service.delete(session, store, caller, project, name)


@router.get("/datasets/{name}/history", response_model=list[DatasetVersionPublic], openapi_extra=action("dataset:read"))
def dataset_history(
    project: ProjectName, name: DatasetName, caller: CallerDep, session: SessionDep
) -> list[DatasetVersionPublic]:
    """Every version, newest first, with rows, bytes, producer and input versions."""
    return service.history(session, caller, project, name)


@router.get("/datasets/{name}/schema", response_model=list[Column], openapi_extra=action("dataset:read"))
def dataset_schema(
    project: ProjectName, name: DatasetName, caller: CallerDep, session: SessionDep, version: int | None = VersionQuery
) -> list[Column]:
    return service.version(session, caller, project, name, version).columns


@router.get("/datasets/{name}/preview", response_model=TableData, openapi_extra=action("dataset:read"))
def preview_dataset(
    project: ProjectName,
    name: DatasetName,
    caller: CallerDep,
    session: SessionDep,
    store: ObjectStoreDep,
    version: int | None = VersionQuery,
    as_of: datetime | None = AsOfQuery,
    limit: int = Query(20, ge=1, le=100_000),
) -> TableData:
    if version is not None and as_of is not None:
        raise InvalidInput("give version or as_of, not both")
    return service.preview(session, store, caller, project, name, ver=version, as_of=as_of, limit=limit)


@router.get("/datasets/{name}/export", response_class=FileResponse, openapi_extra=action("dataset:read"))
def export_dataset(
    project: ProjectName,
    name: DatasetName,
    caller: CallerDep,
    session: SessionDep,
    store: ObjectStoreDep,
    background: BackgroundTasks,
    version: int | None = VersionQuery,
    format: Literal["csv", "parquet", "json"] = Query("parquet"),
) -> FileResponse:
    """Download a version as CSV, Parquet or NDJSON."""
    tmp = Path(tempfile.mkdtemp(prefix="selfserve-export-"))
    suffix = {"csv": "csv", "parquet": "parquet", "json": "ndjson"}[format]
    try:
        path = service.export(
            session, store, caller, project, name, ver=version, fmt=format, dest=tmp / f"{name}.{suffix}"
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # background tasks run only after a response that succeeded
        raise
    background.add_task(shutil.rmtree, tmp, True)
    return FileResponse(path, filename=path.name)


@router.post(
    "/datasets/{name}/upload",
    response_model=DatasetVersionPublic,
    status_code=201,
    openapi_extra=action("dataset:write"),
)
async def upload_dataset(
    request: Request,
    project: ProjectName,
    name: DatasetName,
    caller: CallerDep,
    session: SessionDep,
    store: ObjectStoreDep,
    file: UploadFile,
    format: str | None = Query(None, pattern="^(csv|parquet|json|ndjson)$"),
    mode: Literal["append", "overwrite"] = Query("append"),
    evolve: bool = Query(False),
    delimiter: str | None = Query(None, min_length=1, max_length=1),
    encoding: str | None = Query(None, max_length=32),
) -> DatasetVersionPublic:
    """Upload a CSV, Parquet, JSON or NDJSON file as a new version."""
    from starlette.concurrency import run_in_threadpool

    await run_in_threadpool(authorize, session, caller, "dataset:write", project)
    limit = request.app.state.settings.data.max_upload_bytes
    tmp = Path(tempfile.mkdtemp(prefix="selfserve-upload-"))
    try:
        dest = tmp / "upload"
        size = 0
        with dest.open("wb") as out:
            while chunk := await file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"upload over the limit of {limit} bytes")
                out.write(chunk)
        options: dict[str, Any] = {k: v for k, v in {"delimiter": delimiter, "encoding": encoding}.items() if v}
        return await run_in_threadpool(
            service.upload,
            session,
            store,
            caller,
            project,
            name,
            dest,
            fmt=format,
            filename=file.filename or "upload",
            options=options,
            mode=mode,
            evolve=evolve,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@router.get("/datasets/{name}/contract", response_model=ContractSet, openapi_extra=action("dataset:read"))
def get_contract(project: ProjectName, name: DatasetName, caller: CallerDep, session: SessionDep) -> ContractSet:
    return ContractSet(contract=service.get_contract(session, caller, project, name))


@router.put("/datasets/{name}/contract", response_model=DatasetPublic, openapi_extra=action("dataset:write"))
def set_contract(
    project: ProjectName, name: DatasetName, body: ContractSet, caller: CallerDep, session: SessionDep
) -> DatasetPublic:
    """Attach a contract (YAML); it is checked before every later commit."""
    return service.set_contract(session, caller, project, name, body.contract)


@router.delete("/datasets/{name}/contract", response_model=DatasetPublic, openapi_extra=action("dataset:write"))
def remove_contract(project: ProjectName, name: DatasetName, caller: CallerDep, session: SessionDep) -> DatasetPublic:
    return service.set_contract(session, caller, project, name, None)


@router.post("/datasets/{name}/check", response_model=ContractReportPublic, openapi_extra=action("dataset:read"))
def check_dataset(
    project: ProjectName,
    name: DatasetName,
    caller: CallerDep,
    session: SessionDep,
    store: ObjectStoreDep,
    version: int | None = VersionQuery,
) -> ContractReportPublic:
    """Run the dataset's contract against a version now."""
    return service.check_contract(session, store, caller, project, name, version)


@router.post("/query", response_model=TableData, openapi_extra=action("dataset:read"))
def query(
    project: ProjectName, body: QueryRequest, caller: CallerDep, session: SessionDep, store: ObjectStoreDep
) -> TableData:
    """DuckDB SQL over the project's datasets (by name, '-' as '_') and granted products (project.name)."""
    return service.query(session, store, caller, project, body.sql, body.limit)


@router.post("/ingest", response_model=JobPublic, status_code=202, openapi_extra=action("dataset:write"))
def ingest(
    project: ProjectName,
    body: IngestRequest,
    caller: CallerDep,
    session: SessionDep,
    store: ObjectStoreDep,
    runner: JobsDep,
) -> JobPublic:
    """Start reading a source into a dataset version; poll the job for progress."""
    from selfserve.data import ingest as ingest_mod
    from selfserve.data import sources

    proj, _ = authorize(session, caller, "dataset:write", project)
    sources.get(session, proj, body.source)
    if (body.table is None) == (body.query is None):
        raise InvalidInput("give exactly one of table or query")

    def work(s: Any, progress: Any) -> dict[str, Any]:
        p = s.merge(proj)
        row = ingest_mod.ingest(s, store, p, body, actor=caller.name, progress=progress)
        s.commit()
        return {"dataset": body.to, "version": row.version, "rows": row.rows_written}

    job = runner.submit(session, caller, proj, "ingest", body.model_dump(exclude_none=True), work)
    return jobs.public(job)


@router.post("/transforms", response_model=JobPublic, status_code=202, openapi_extra=action("dataset:write"))
def transform(
    project: ProjectName,
    body: TransformRequest,
    caller: CallerDep,
    session: SessionDep,
    store: ObjectStoreDep,
    runner: JobsDep,
) -> JobPublic:
    """Start a SQL or Polars transform into a new dataset version."""
    from selfserve.data import transforms
    from selfserve.policy import quotas

    proj, _ = authorize(session, caller, "dataset:write", project)
    if (body.sql is None) == (body.polars is None):
        raise InvalidInput("give exactly one of sql or polars")
    if body.sql is not None:
        service.check_query(session, proj, body.sql)
    memory = int(quotas.limits(session, proj)["memory"])

    def work(s: Any, progress: Any) -> dict[str, Any]:
        p = s.merge(proj)
        if body.sql is not None:
            row = transforms.run_sql(
                s, store, p, body.sql, body.to, actor=caller.name, mode=body.mode, evolve=body.evolve
            )
        else:
            row = transforms.run_polars(
                s,
                store,
                p,
                body.polars or "",
                body.to,
                actor=caller.name,
                function=body.function,
                inputs=body.inputs,
                mode=body.mode,
                evolve=body.evolve,
                memory_bytes=memory,
            )
        s.commit()
        return {"dataset": body.to, "version": row.version, "rows": row.rows_written, "inputs": row.inputs}

    params = body.model_dump(exclude_none=True, exclude={"polars"}) | ({"polars": True} if body.polars else {})
    job = runner.submit(session, caller, proj, "transform", params, work)
    return jobs.public(job)


@router.get("/jobs", response_model=list[JobPublic], openapi_extra=action("dataset:read"))
def list_jobs(project: ProjectName, caller: CallerDep, session: SessionDep) -> list[JobPublic]:
    return jobs.list_(session, caller, project)


@router.get("/jobs/{job_id}", response_model=JobPublic, openapi_extra=action("dataset:read"))
def show_job(project: ProjectName, job_id: RowId, caller: CallerDep, session: SessionDep) -> JobPublic:
    return jobs.show(session, caller, project, job_id)
