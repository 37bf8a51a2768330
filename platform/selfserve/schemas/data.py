"""API models of the data capability: sources, datasets, queries, ingestion, transforms, products."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from selfserve.schemas import Model, Name, Text


class SourceCreate(Model):
    name: Name
    kind: str = Field(max_length=16, description="file, s3, postgres, mysql, sqlite, redis, rest or nats")
    config: dict[str, Any] = Field(default_factory=dict, description="Settings of the source; secrets go apart.")
    secrets: dict[str, str] = Field(
        default_factory=dict, description="Passwords, tokens, keys: encrypted at rest, never returned."
    )


class SourcePublic(Model):
    name: str
    kind: str
    config: dict[str, Any]
    secrets: list[str] = Field(description="Names of the secrets set (never their values).")
    created_by: str
    created_at: datetime
    updated_at: datetime


class SourceTest(Model):
    ok: bool
    message: str


class Column(Model):
    name: str
    type: str
    nullable: bool = True


class DatasetVersionPublic(Model):
    version: int
    operation: str
    rows: int
    rows_written: int
    bytes: int
    columns: list[Column]
    producer: dict[str, Any]
    inputs: list[dict[str, Any]]
    created_by: str
    created_at: datetime


class DatasetPublic(Model):
    name: str
    description: str
    current_version: int | None
    rows: int | None = None
    bytes: int | None = None
    storage_bytes: int
    columns: list[Column] = Field(default_factory=list)
    has_contract: bool = False
    published: bool = False
    created_by: str
    created_at: datetime
    updated_at: datetime


class TableData(Model):
    """Rows as lists, in the order of ``columns``; values are JSON-safe (times as ISO text)."""

    columns: list[Column]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = False


class QueryRequest(Model):
    sql: str = Field(max_length=100_000)
    limit: int = Field(100, ge=1, le=100_000)


class ContractSet(Model):
    contract: str = Field(max_length=200_000, description="The contract as YAML.")


class CheckFailurePublic(Model):
    check: str
    column: str | None = None
    failing: int
    total: int
    message: str
    samples: list[dict[str, Any]] = Field(default_factory=list)


class ContractReportPublic(Model):
    passed: bool
    failures: list[CheckFailurePublic]


class IngestRequest(Model):
    source: Name
    to: Name
    table: str | None = Field(None, max_length=1000)
    query: str | None = Field(None, max_length=100_000)
    incremental: str | None = Field(None, max_length=255, description="Cursor column for incremental loads.")
    batch_rows: int | None = Field(None, ge=1, le=10_000_000)
    max_rows_per_second: float | None = Field(None, gt=0)
    mode: Literal["append", "overwrite"] = "append"
    evolve: bool = False
    options: dict[str, Any] = Field(default_factory=dict)


class TransformRequest(Model):
    to: Name
    sql: str | None = Field(None, max_length=200_000, description="DuckDB SQL over the project's datasets.")
    polars: str | None = Field(
        None, max_length=200_000, description="Python source defining a function of named LazyFrames."
    )
    function: str = Field("transform", max_length=128)
    inputs: dict[str, str] = Field(
        default_factory=dict, description="Polars only: argument name -> dataset[@version] (default: by name)."
    )
    mode: Literal["append", "overwrite"] = "overwrite"
    evolve: bool = False


class JobPublic(Model):
    id: int
    kind: str
    status: str
    params: dict[str, Any]
    progress: dict[str, Any]
    result: dict[str, Any] | None = None
    error: str | None = None
    created_by: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ProductPublish(Model):
    description: Text = Field("", max_length=4000)
    tags: list[Text] = Field(default_factory=list, max_length=20)
    sla_freshness: Text | None = Field(None, max_length=20, description="e.g. 24h")


class ProductPublic(Model):
    project: str
    dataset: str
    description: str
    tags: list[str]
    owner: str
    sla_freshness_seconds: float | None
    last_updated: datetime | None
    freshness: Literal["fresh", "stale", "no-sla"]
    published_at: datetime
    access: str | None = Field(None, description="The caller's projects' access: granted, requested or none.")


class AccessRequestCreate(Model):
    for_project: Name
    reason: Text = Field("", max_length=2000)


class AccessPublic(Model):
    id: int
    product: str
    consumer: str
    status: str
    requested_by: str
    reason: str
    decided_by: str | None = None
    decided_at: datetime | None = None
    created_at: datetime
