"""API models of monitoring: monitors over routes, their runs and reports, alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from selfserve.schemas import Model, Name, Text
from selfserve.schemas.pipelines import Cron
from selfserve.schemas.serving import Column, RouteName

RunStatus = Literal["ok", "drift", "no_data", "error"]


class MonitorRequest(Model):
    """The parameters of the built-in ``monitor`` flow: which route's monitor to run."""

    route: RouteName


class MonitorCreate(Model):
    route: RouteName
    reference: str | None = Field(
        None,
        max_length=80,
        pattern=r"^[a-z][a-z0-9-]{0,62}(@[0-9]{1,10})?$",
        description="DATASET or DATASET@VERSION to compare with; default the dataset version the route's "
        "current model was trained on.",
    )
    label: Column | None = Field(None, description="The reference's label column; default the model's target.")
    window_seconds: int = Field(3600, ge=60, le=90 * 86400, description="How much of the log each run reads.")
    schedule: Cron = Field(None, max_length=120, description="Cron expression; none: runs on demand only.")
    drift_share: float = Field(0.3, gt=0, le=1, description="Share of drifted columns that raises an alert.")
    on_drift: Literal["alert", "retrain"] = "alert"
    policy: Literal["auto", "manual"] = "auto"
    webhook_url: Text | None = Field(None, max_length=2000, description="POSTed every alert (allowlisted hosts).")


class MonitorRunPublic(Model):
    id: int
    status: RunStatus
    drift_share: float | None
    columns: dict[str, Any]
    quality: dict[str, float]
    rows_reference: int
    rows_current: int
    window_start: datetime | None
    window_end: datetime | None
    has_report: bool
    flow_run_id: str | None
    error: str | None
    created_at: datetime


class MonitorPublic(Model):
    route: str
    reference_dataset: str
    reference_version: int
    label: str | None
    task: str | None
    window_seconds: int
    schedule: str | None
    drift_share: float
    on_drift: str
    policy: str
    webhook_url: str | None
    flow_deployment: str | None
    created_by: str
    created_at: datetime
    last_run: MonitorRunPublic | None = None


class MonitorRunRecord(Model):
    """What a monitor run found, sent by the run (the built-in monitor flow) to the platform."""

    status: RunStatus
    drift_share: float | None = Field(None, ge=0, le=1)
    columns: dict[Column, dict[str, Any]] = Field(default_factory=dict, max_length=10_000)
    quality: dict[Name | str, float] = Field(default_factory=dict, max_length=100)
    rows_reference: int = Field(0, ge=0)
    rows_current: int = Field(0, ge=0)
    window_start: datetime | None = None
    window_end: datetime | None = None
    flow_run_id: Text | None = Field(None, max_length=64)
    error: Text | None = Field(None, max_length=20_000)
    html: str | None = Field(None, description="Evidently's HTML report.")


class AlertPublic(Model):
    id: int
    route: str
    kind: str
    message: str
    detail: dict[str, Any]
    webhook: str | None
    run_id: int | None
    created_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
