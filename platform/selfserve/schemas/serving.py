"""API models of serving: deployments, routes, predictions, feedback and feature views."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from selfserve.schemas import Model, Name, Text, check_name

DeploymentState = Literal["pending", "starting", "ready", "restarting", "failed"]
RouteAction = Literal["create", "set", "switch", "rollback"]
# Routes give their name to two datasets, predictions-<route> and feedback-<route>.
ROUTE_NAME_MAX = 40
ROUTE_NAME_RULE = re.compile(rf"[a-z][a-z0-9-]{{0,{ROUTE_NAME_MAX - 1}}}")
MODEL_REF = re.compile(r"^(?P<model>[a-z][a-z0-9-]{0,62})(?:@(?P<ref>[a-z][a-z0-9_-]{0,62}|[1-9][0-9]{0,9}))?$")
COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\- ]{0,254}$")


def check_route_name(value: str) -> str:
    check_name(value, "route name")
    if not ROUTE_NAME_RULE.fullmatch(value):
        raise ValueError(f"invalid route name {value!r}: {ROUTE_NAME_MAX} characters at most")
    return value


def parse_model_ref(value: str) -> tuple[str, str | int]:
    """``clf@champion`` -> ("clf", "champion"); ``clf@7`` -> ("clf", 7); ``clf`` -> ("clf", "champion")."""
    m = MODEL_REF.fullmatch(value)
    if m is None:
        raise ValueError(
            f"invalid model reference {value!r}: use <model>@<alias> or <model>@<version>, e.g. clf@champion or clf@7"
        )
    ref = m.group("ref") or "champion"
    return m.group("model"), int(ref) if ref.isdigit() else ref


def check_model_ref(value: str) -> str:
    parse_model_ref(value)
    return value


def check_column(value: str) -> str:
    if not COLUMN.fullmatch(value):
        raise ValueError(f"invalid column name {value[:70]!r}")
    return value


RouteName = Annotated[str, AfterValidator(check_route_name), Field(description="a-z, 0-9 and '-', 40 at most")]
ModelRef = Annotated[str, AfterValidator(check_model_ref), Field(max_length=140)]
Column = Annotated[str, AfterValidator(check_column)]


# -- deployments -------------------------------------------------------------------------------------


class DeploymentCreate(Model):
    name: Name
    model: ModelRef = Field(description="The registered model and its alias or version: clf@champion, clf@7.")


class FeatureColumn(Model):
    name: str
    type: str


class DeploymentPublic(Model):
    name: str
    model: str
    version: int
    model_ref: str
    state: DeploymentState
    restarts: int = 0
    last_error: str | None = None
    inputs: list[FeatureColumn] = Field(default_factory=list, description="The model's input columns and types.")
    routes: list[str] = Field(default_factory=list, description="Routes that send traffic to this deployment.")
    created_by: str
    created_at: datetime
    ready_at: datetime | None = None


class DeploymentLogs(Model):
    deployment: str
    lines: list[str]


# -- routes ------------------------------------------------------------------------------------------


class RouteSpec(Model):
    """Where a route sends traffic. Weights are whole percentages that add up to 100."""

    targets: dict[Name, Annotated[int, Field(ge=0, le=100)]] = Field(
        min_length=1, max_length=10, description="Deployment name -> percent of traffic."
    )
    sticky_key: Column | None = Field(
        None, description="A/B: requests with the same value of this input column always reach the same target."
    )
    shadow: Name | None = Field(
        None, description="A deployment that gets a copy of every request; its answer is only logged."
    )
    feature_view: Name | None = Field(
        None, description="A feature view whose values fill each row's missing inputs, looked up by the view's key."
    )

    @model_validator(mode="after")
    def _weights(self) -> RouteSpec:
        total = sum(self.targets.values())
        if total != 100:
            shown = ", ".join(f"{k}={v}" for k, v in self.targets.items())
            raise ValueError(f"target weights must add up to 100, not {total} ({shown})")
        if self.shadow is not None and self.shadow in self.targets:
            raise ValueError(f"the shadow {self.shadow!r} is also a target; a shadow gets a copy of live traffic")
        return self


class RouteCreate(RouteSpec):
    name: RouteName


class RouteSwitch(Model):
    to: Name = Field(description="The deployment that takes all traffic at once (blue/green).")
    reason: Text = Field("", max_length=2000)


class RouteRollback(Model):
    reason: Text = Field("", max_length=2000)


class RouteRevisionPublic(Model):
    revision: int
    action: RouteAction
    spec: RouteSpec
    reason: str = ""
    actor: str
    at: datetime


class RoutePublic(Model):
    name: str
    spec: RouteSpec
    revision: int
    predict_path: str = Field(description="Where to POST predictions.")
    created_by: str
    created_at: datetime
    updated_at: datetime


# -- predict and feedback ----------------------------------------------------------------------------


Scalar = str | int | float | bool | None


class PredictRequest(Model):
    rows: list[dict[Column, Scalar]] = Field(
        min_length=1, description="Input rows: column -> value. With a feature view, the key alone may do."
    )


class PredictResponse(Model):
    request_id: str
    route: str
    target: str = Field(description="The deployment that answered.")
    model: str
    model_version: int
    predictions: list[Any]


class Label(Model):
    request_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    label: Scalar


class FeedbackRequest(Model):
    labels: list[Label] = Field(min_length=1, max_length=10000)


class FeedbackResult(Model):
    accepted: int
    dataset: str


class TargetStats(Model):
    target: str
    shadow: bool = False
    requests: int
    errors: int
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None


class RouteStats(Model):
    """Traffic of the last ``window_seconds`` as the gateway saw it, per target and per minute."""

    route: str
    window_seconds: int
    targets: list[TargetStats]
    timeline: list[dict[str, Any]] = Field(
        default_factory=list, description="Per minute and target: requests, errors, p50_ms, p95_ms."
    )


# -- feature views -----------------------------------------------------------------------------------


FeatureState = Literal["pending", "materializing", "ready", "failed"]


class FeatureViewCreate(Model):
    name: Name
    dataset: Name = Field(description="The project dataset to serve; its newest version is materialized.")
    key: Column = Field(description="The entity column rows are looked up by; its values must be unique.")


class FeatureViewPublic(Model):
    name: str
    dataset: str
    key: str
    state: FeatureState
    materialized_version: int | None = None
    rows: int = 0
    store: Literal["sqlite", "redis"]
    last_error: str | None = None
    materialized_at: datetime | None = None
    created_by: str
    created_at: datetime


class FeatureRow(Model):
    view: str
    key: str
    version: int | None = Field(description="The dataset version the values come from.")
    values: dict[str, Any]
