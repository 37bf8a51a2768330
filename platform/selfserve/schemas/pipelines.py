"""API models of pipelines: flow deployments, runs and their logs."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from selfserve.schemas import Model, Name, Text

_CRON_FIELD = r"[0-9A-Za-z*/,\-?LW#]+"
_CRON = re.compile(rf"^\s*{_CRON_FIELD}(\s+{_CRON_FIELD}){{4}}\s*$")

RunState = Literal[
    "scheduled", "waiting", "pending", "running", "completed", "failed", "crashed", "cancelling", "cancelled", "paused"
]
BUILTIN_FLOWS = ("ingest", "transform", "train", "monitor")


def check_cron(value: str | None) -> str | None:
    if value is not None and not _CRON.fullmatch(value):
        raise ValueError(f"{value!r} is not a cron expression of 5 fields, like '0 2 * * *'")
    return value


Cron = Annotated[str | None, AfterValidator(check_cron)]


class Schedule(Model):
    cron: Cron = Field(None, max_length=120, description="Cron expression, e.g. '0 2 * * *'.")
    interval_seconds: float | None = Field(None, gt=0, le=366 * 86400, description="Run every this many seconds.")
    timezone: Text = Field("UTC", max_length=64, description="IANA time zone of the cron expression.")

    @model_validator(mode="after")
    def _one(self) -> Schedule:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give either a cron expression or an interval, not both or neither")
        return self


class BuiltinDeploy(Model):
    """Schedule a built-in flow (``ingest``, ``transform`` or ``train``) with fixed parameters."""

    flow: Literal["ingest", "transform", "train", "monitor"]
    name: Name
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedule: Schedule | None = None
    retries: int = Field(0, ge=0, le=10)
    timeout_seconds: float | None = Field(None, gt=0, le=7 * 86400)
    description: Text = Field("", max_length=2000)


class FlowDeploymentPublic(Model):
    name: str
    kind: Literal["builtin", "user"]
    flow_name: str
    entrypoint: str
    code_sha: str
    env_sha: str | None
    schedule: Schedule | None
    parameters: dict[str, Any]
    retries: int
    timeout_seconds: float | None
    paused: bool
    description: str
    created_by: str
    created_at: datetime
    updated_at: datetime


class RunRequest(Model):
    parameters: dict[str, Any] = Field(default_factory=dict, description="Overrides of the deployment's parameters.")


class RunPublic(Model):
    id: str
    name: str
    deployment: str | None
    flow_name: str | None
    state: RunState
    state_name: str
    message: str | None
    parameters: dict[str, Any]
    created_at: datetime
    expected_start_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    duration_seconds: float | None
    run_count: int
    cpu_seconds: float | None = None
    max_rss_bytes: int | None = None
    memory_limit_bytes: int | None = None
    cpus: int | None = None
    note: str | None = None


class LogLine(Model):
    time: datetime
    level: str
    message: str
    source: str


class RunLogs(Model):
    run: RunPublic
    lines: list[LogLine]
    next_after: datetime | None = Field(description="Pass as ?after= to read only newer lines.")


class FlowDeploySpec(Model):
    """How to deploy the project's own flow; sent as the ``spec`` form field next to the code zip."""

    name: Name
    entrypoint: Text = Field(max_length=255, description="FILE.py:FUNCTION within the code.")
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedule: Schedule | None = None
    retries: int = Field(0, ge=0, le=10)
    timeout_seconds: float | None = Field(None, gt=0, le=7 * 86400)
    description: Text = Field("", max_length=2000)
