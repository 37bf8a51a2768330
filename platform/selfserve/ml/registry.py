"""Experiments and the model registry as users see them: runs, comparisons, versions, promotions, lineage.

Every call authorizes first, then reads or writes MLflow as the platform's admin, over REST, in the
project's own workspace only (``X-MLflow-Workspace``): another project's experiment, run or model is
never found, so it answers 404 like anything that does not exist. Promotions move the ``champion``
alias; their history is the platform's (``ModelPromotion``), so that a rollback knows where to go.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from selfserve.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from selfserve.ml import experiment_name, registered_model_name, workspace_name
from selfserve.policy import audit
from selfserve.policy.authz import Caller, authorize
from selfserve.schemas.models import (
    DatasetRef,
    ExperimentPublic,
    ExperimentRun,
    LineageCode,
    LineageRun,
    ModelDetail,
    ModelLineage,
    ModelPublic,
    ModelVersionPublic,
    ModelVersionRef,
    PromotionPublic,
    RunComparison,
)
from selfserve.settings import Settings
from selfserve.store.tables import FlowDeployment, ModelPromotion, PipelineRun, Project

if TYPE_CHECKING:
    from selfserve.ml.mlflow import MLflowAdmin

NOT_ENABLED = "models are not enabled on this platform (setting models.enabled)"
CHAMPION, CHALLENGER = "champion", "challenger"
# Run tags the platform's training flow sets (and anyone may set from their own code).
TAG_DATASET = "selfserve.dataset"
TAG_DATASET_VERSION = "selfserve.dataset_version"
TAG_DATASETS = "selfserve.datasets"  # several inputs: "name@version,name@version"
TAG_FLOW_RUN = "selfserve.flow_run_id"
# Model version tags: the metric the training flow chose the version by, and selfserve.heldout_<metric>.
TAG_METRIC = "selfserve.metric"
PAGE = 1000
MAX_RUNS_COUNTED = 50_000
_SORT_KEY = re.compile(r"^[^`\x00-\x1f\x7f]{1,250}$")
_V2 = "/api/2.0/mlflow"


class Registry:
    """The registry adapter held by the API: settings and a lazily made MLflow admin client."""

    def __init__(self, settings: Settings, admin: MLflowAdmin | None = None) -> None:
        self.settings = settings
        self._admin = admin

    @property
    def enabled(self) -> bool:
        return self.settings.models.enabled

    @property
    def admin(self) -> MLflowAdmin:
        if not self.enabled:
            raise ServiceUnavailable(NOT_ENABLED)
        if self._admin is None:
            from selfserve.ml.mlflow import MLflowAdmin

            self._admin = MLflowAdmin.from_settings(self.settings)
        return self._admin

    def close(self) -> None:
        close = getattr(self._admin, "close", None)
        if close is not None:
            close()

    def workspace(self, project: str) -> _Workspace:
        """The project's MLflow workspace; 503 when models are off."""
        return _Workspace(self.admin, project)


class _Missing(Exception):
    """MLflow answered RESOURCE_DOES_NOT_EXIST (or the workspace itself does not exist)."""


class _Workspace:
    """Calls to MLflow's REST API in one project's workspace, with MLflow's errors made platform errors."""

    def __init__(self, admin: MLflowAdmin, project: str) -> None:
        self.admin = admin
        self.project = project
        self.name = workspace_name(project)

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """MLflow's answer as JSON.

        Raises:
            _Missing: the object (or the workspace) does not exist.
            InvalidInput: MLflow refused a value.
            ServiceUnavailable: MLflow is down or failed (``MLflowError`` names the call).
        """
        from selfserve.ml.mlflow import MLflowError

        query = {k: _query_value(v) for k, v in (params or {}).items()}
        try:
            # The admin client's one transport: a refused connection is tried again, errors are scrubbed.
            found = self.admin._call(method, _V2 + path, json=json, params=query, workspace=self.name, missing_ok=True)
        except MLflowError as e:
            if e.error_code == "INVALID_PARAMETER_VALUE":
                said = re.search(r"\((.+)\)$", e.message)  # MLflow's own words, scrubbed by MLflowError
                raise InvalidInput(f"the model registry refused a value: {said[1] if said else e.message}") from None
            raise
        if found is None:
            raise _Missing(path)
        return found

    def pages(self, method: str, path: str, key: str, query: dict[str, Any], *, limit: int) -> Iterator[dict[str, Any]]:
        """Items of a paged search (a GET's query or a POST's body), at most ``limit`` of them."""
        token: str | None = None
        seen = 0
        while seen < limit:
            page_query = {**query, "max_results": min(PAGE, limit - seen)}
            if token:
                page_query["page_token"] = token
            if method == "GET":
                page = self.call(method, path, params=page_query)
            else:
                page = self.call(method, path, json=page_query)
            items = page.get(key) or []
            yield from items
            seen += len(items)
            token = page.get("next_page_token")
            if not token or not items:
                return


def _query_value(value: Any) -> Any:
    return [str(v) for v in value] if isinstance(value, list) else str(value)


# -- conversions ------------------------------------------------------------------------------------


def _time(ms: Any) -> datetime | None:
    if ms in (None, "", 0, "0"):
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def _pairs(items: Iterable[dict[str, Any]] | None) -> dict[str, Any]:
    return {str(i["key"]): i.get("value") for i in items or () if "key" in i}


def _metrics(run: dict[str, Any]) -> dict[str, float]:
    """A run's latest metric values; NaN and infinities (MLflow sends them as text) are left out, as JSON
    has no such numbers."""
    out: dict[str, float] = {}
    for m in run.get("data", {}).get("metrics") or ():
        try:
            value = float(m["value"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(value):
            out[str(m["key"])] = value
    return out


def short_name(full: str, prefix: str) -> str:
    return full[len(prefix) :] if full.startswith(prefix) else full


def _datasets(run: dict[str, Any]) -> list[DatasetRef]:
    """The dataset versions a run read: the platform's tags first, then MLflow's logged inputs."""
    tags = _pairs(run.get("data", {}).get("tags"))
    found: list[DatasetRef] = []
    if tags.get(TAG_DATASET):
        found.append(DatasetRef(name=str(tags[TAG_DATASET]), version=_str_or_none(tags.get(TAG_DATASET_VERSION))))
    for item in str(tags.get(TAG_DATASETS) or "").split(","):
        if item.strip():
            name, _, version = item.strip().partition("@")
            found.append(DatasetRef(name=name, version=version or None))
    for inp in (run.get("inputs") or {}).get("dataset_inputs") or ():
        ds = inp.get("dataset") or {}
        if not ds.get("name"):
            continue
        name, sep, version = str(ds["name"]).rpartition("@")
        if not (sep and name and version.isdigit()):
            name, version = str(ds["name"]), ""
        context = _pairs(inp.get("tags")).get("mlflow.data.context")
        ref = next((r for r in found if r.name == name and (r.version == version or not version)), None)
        if ref is None:
            found.append(DatasetRef(name=name, version=version or None, context=context, digest=ds.get("digest")))
        else:
            ref.context = ref.context or context
            ref.digest = ref.digest or ds.get("digest")
    unique: dict[tuple[str, str | None], DatasetRef] = {}
    for ref in found:
        unique.setdefault((ref.name, ref.version), ref)
    return list(unique.values())


def _str_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _float_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _run_public(
    run: dict[str, Any], experiments: dict[str, str], versions: dict[str, list[ModelVersionRef]]
) -> ExperimentRun:
    info = run.get("info") or {}
    run_id = str(info.get("run_id") or info.get("run_uuid"))
    tags = _pairs(run.get("data", {}).get("tags"))
    start, end = _time(info.get("start_time")), _time(info.get("end_time"))
    return ExperimentRun(
        id=run_id,
        name=str(info.get("run_name") or tags.get("mlflow.runName") or ""),
        experiment=experiments.get(str(info.get("experiment_id")), str(info.get("experiment_id"))),
        status=str(info.get("status") or "").lower(),
        start_time=start,
        end_time=end,
        duration_seconds=(end - start).total_seconds() if start and end else None,
        params={k: str(v) for k, v in _pairs(run.get("data", {}).get("params")).items()},
        metrics=_metrics(run),
        datasets=_datasets(run),
        model_versions=versions.get(run_id, []),
        parent_id=_str_or_none(tags.get("mlflow.parentRunId")),
        flow_run_id=_str_or_none(tags.get(TAG_FLOW_RUN)),
        user=_str_or_none(info.get("user_id") or tags.get("mlflow.user")),
    )


def _model_public(rm: dict[str, Any], project: str) -> ModelPublic:
    aliases = {str(a["alias"]): int(a["version"]) for a in rm.get("aliases") or () if "alias" in a}
    latest = [int(v["version"]) for v in rm.get("latest_versions") or () if "version" in v]
    return ModelPublic(
        name=short_name(str(rm["name"]), f"{project}."),
        mlflow_name=str(rm["name"]),
        description=str(rm.get("description") or ""),
        aliases=aliases,
        champion=aliases.get(CHAMPION),
        challenger=aliases.get(CHALLENGER),
        latest_version=max(latest) if latest else None,
        created_at=_time(rm.get("creation_timestamp")),
        updated_at=_time(rm.get("last_updated_timestamp")),
    )


def _version_public(
    mv: dict[str, Any],
    project: str,
    aliases: dict[str, int],
    runs: dict[str, dict[str, Any]],
    experiments: dict[str, str],
) -> ModelVersionPublic:
    version = int(mv["version"])
    run = runs.get(str(mv.get("run_id") or ""))
    exp_id = str((run or {}).get("info", {}).get("experiment_id") or "")
    tags = _pairs(mv.get("tags"))
    metric = _str_or_none(tags.get(TAG_METRIC))
    return ModelVersionPublic(
        model=short_name(str(mv["name"]), f"{project}."),
        version=version,
        status=str(mv.get("status") or "").lower(),
        aliases=sorted({*(mv.get("aliases") or ()), *(a for a, v in aliases.items() if v == version)}),
        run_id=_str_or_none(mv.get("run_id")),
        experiment=experiments.get(exp_id) if exp_id else None,
        metric=metric,
        metric_value=_float_or_none(tags.get(f"selfserve.heldout_{metric}")) if metric else None,
        metrics=_metrics(run) if run else {},
        description=str(mv.get("description") or ""),
        created_at=_time(mv.get("creation_timestamp")),
    )


def _promotion_public(row: ModelPromotion) -> PromotionPublic:
    return PromotionPublic(
        model=row.model,
        version=row.version,
        previous_version=row.previous_version,
        action=row.action,  # type: ignore[arg-type]
        reason=row.reason,
        actor=row.actor,
        at=row.at,
    )


def _quote(value: str) -> str:
    """A value inside an MLflow filter string's single quotes."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


# -- reads of MLflow ---------------------------------------------------------------------------------


def _experiments(ws: _Workspace) -> list[dict[str, Any]]:
    try:
        return list(ws.pages("POST", "/experiments/search", "experiments", {"view_type": "ACTIVE_ONLY"}, limit=10_000))
    except _Missing:
        return []  # the project's workspace is not provisioned yet: nothing in it


def _experiment_names(ws: _Workspace, experiments: list[dict[str, Any]] | None = None) -> dict[str, str]:
    prefix = f"{ws.project}/"
    found = _experiments(ws) if experiments is None else experiments
    return {str(e["experiment_id"]): short_name(str(e["name"]), prefix) for e in found}


def _experiment(ws: _Workspace, name: str) -> dict[str, Any]:
    """The project's experiment ``name``: ``<project>/<name>`` in MLflow, else exactly ``name``, else the
    experiment whose id is ``name`` (for names no URL path can hold, like ``other/x``)."""
    for candidate in dict.fromkeys((experiment_name(ws.project, name), name)):
        try:
            exp = ws.call("GET", "/experiments/get-by-name", params={"experiment_name": candidate})["experiment"]
        except (_Missing, KeyError):
            continue
        if exp.get("lifecycle_stage", "active") == "active":
            return dict(exp)
    if name.isdigit():
        try:
            exp = ws.call("GET", "/experiments/get", params={"experiment_id": name})["experiment"]
        except (_Missing, KeyError):
            exp = {}
        if exp and exp.get("lifecycle_stage", "active") == "active":
            return dict(exp)
    raise NotFound(f"experiment {name!r} not found in project {ws.project!r}")


def _versions_of_runs(ws: _Workspace, run_ids: list[str]) -> dict[str, list[ModelVersionRef]]:
    if not run_ids:
        return {}
    quoted = ", ".join(f"'{_quote(r)}'" for r in run_ids)
    try:
        found = ws.call(
            "GET", "/model-versions/search", params={"filter": f"run_id IN ({quoted})", "max_results": 1000}
        )
    except _Missing:
        return {}
    out: dict[str, list[ModelVersionRef]] = {}
    prefix = f"{ws.project}."
    for mv in found.get("model_versions") or ():
        ref = ModelVersionRef(model=short_name(str(mv["name"]), prefix), version=int(mv["version"]))
        out.setdefault(str(mv.get("run_id")), []).append(ref)
    return out


def _run(ws: _Workspace, run_id: str) -> dict[str, Any] | None:
    try:
        return dict(ws.call("GET", "/runs/get", params={"run_id": run_id})["run"])
    except (_Missing, KeyError):
        return None


def _runs_by_id(ws: _Workspace, run_ids: Iterable[str], experiments: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The runs of ``run_ids`` that exist in the workspace, found by searches of 100 ids at a time."""
    wanted = list(dict.fromkeys(r for r in run_ids if r))
    exp_ids = [str(e["experiment_id"]) for e in experiments]
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(wanted) if exp_ids else 0, 100):
        chunk = wanted[i : i + 100]
        quoted = ", ".join(f"'{_quote(r)}'" for r in chunk)
        body = {
            "experiment_ids": exp_ids,
            "filter": f"attributes.run_id IN ({quoted})",
            "run_view_type": "ALL",
        }
        for run in ws.pages("POST", "/runs/search", "runs", body, limit=len(chunk)):
            out[str(run["info"]["run_id"])] = run
    return out


def _registered_model(ws: _Workspace, name: str) -> dict[str, Any]:
    try:
        return dict(
            ws.call("GET", "/registered-models/get", params={"name": registered_model_name(ws.project, name)})[
                "registered_model"
            ]
        )
    except (_Missing, KeyError):
        raise NotFound(f"model {name!r} not found in project {ws.project!r}") from None


def _model_version(ws: _Workspace, name: str, version: int) -> dict[str, Any] | None:
    params = {"name": registered_model_name(ws.project, name), "version": str(version)}
    try:
        return dict(ws.call("GET", "/model-versions/get", params=params)["model_version"])
    except (_Missing, KeyError):
        return None


def _versions(ws: _Workspace, name: str, limit: int) -> list[dict[str, Any]]:
    params = {
        "filter": f"name = '{_quote(registered_model_name(ws.project, name))}'",
        "order_by": ["version_number DESC"],
        "max_results": limit,
    }
    try:
        return list(ws.call("GET", "/model-versions/search", params=params).get("model_versions") or [])
    except _Missing:
        return []


def _version_list(ws: _Workspace, rm: dict[str, Any], name: str, limit: int) -> list[ModelVersionPublic]:
    found = _versions(ws, name, limit)
    all_experiments = _experiments(ws) if found else []
    runs = _runs_by_id(ws, (str(mv.get("run_id") or "") for mv in found), all_experiments)
    experiments = _experiment_names(ws, all_experiments)
    aliases = {str(a["alias"]): int(a["version"]) for a in rm.get("aliases") or () if "alias" in a}
    return [_version_public(mv, ws.project, aliases, runs, experiments) for mv in found]


def _history(session: Session, proj: Project, name: str, version: int | None = None) -> list[PromotionPublic]:
    stmt = select(ModelPromotion).where(ModelPromotion.project_id == proj.id, ModelPromotion.model == name)
    if version is not None:
        stmt = stmt.where(ModelPromotion.version == version)
    return [_promotion_public(r) for r in session.scalars(stmt.order_by(ModelPromotion.id.desc()))]


# -- experiments and runs ---------------------------------------------------------------------------


def list_experiments(registry: Registry, session: Session, caller: Caller, project: str) -> list[ExperimentPublic]:
    """The project's experiments, with how many runs each has and when the newest started."""
    authorize(session, caller, "experiment:read", project)
    ws = registry.workspace(project)
    experiments = _experiments(ws)
    counts: dict[str, int] = {}
    last: dict[str, datetime | None] = {}
    ids = [str(e["experiment_id"]) for e in experiments]
    if ids:
        body = {"experiment_ids": ids, "order_by": ["attributes.start_time DESC"], "run_view_type": "ACTIVE_ONLY"}
        for run in ws.pages("POST", "/runs/search", "runs", body, limit=MAX_RUNS_COUNTED):
            exp_id = str(run.get("info", {}).get("experiment_id"))
            counts[exp_id] = counts.get(exp_id, 0) + 1
            last.setdefault(exp_id, _time(run.get("info", {}).get("start_time")))
    prefix = f"{project}/"
    out = [
        ExperimentPublic(
            name=short_name(str(e["name"]), prefix),
            mlflow_name=str(e["name"]),
            id=str(e["experiment_id"]),
            runs=counts.get(str(e["experiment_id"]), 0),
            last_run_at=last.get(str(e["experiment_id"])),
            created_at=_time(e.get("creation_time")),
        )
        for e in experiments
    ]
    return sorted(out, key=lambda e: e.name)


def parse_sort(sort: str | None) -> tuple[str, bool] | None:
    """``"f1"`` -> ("f1", ascending), ``"-f1"`` -> ("f1", descending); None for no sort.

    Raises:
        InvalidInput: the metric name is empty or holds a backtick or a control character.
    """
    if sort is None:
        return None
    desc = sort.startswith("-")
    key = sort[1:] if desc else sort
    if not _SORT_KEY.match(key):
        raise InvalidInput(f"invalid sort {sort!r}: give a metric name, with a leading '-' for descending order")
    return key, desc


def list_runs(
    registry: Registry,
    session: Session,
    caller: Caller,
    project: str,
    experiment: str,
    *,
    sort: str | None = None,
    limit: int = 50,
) -> list[ExperimentRun]:
    """Runs of one experiment: the newest first, or by the metric ``sort`` (``-f1``: highest first)."""
    authorize(session, caller, "experiment:read", project)
    order = parse_sort(sort)
    ws = registry.workspace(project)
    exp = _experiment(ws, experiment)
    order_by = ["attributes.start_time DESC"]
    if order is not None:
        order_by.insert(0, f"metrics.`{order[0]}` {'DESC' if order[1] else 'ASC'}")
    body = {"experiment_ids": [str(exp["experiment_id"])], "order_by": order_by, "run_view_type": "ACTIVE_ONLY"}
    runs = list(ws.pages("POST", "/runs/search", "runs", body, limit=limit))
    if order is not None and runs and not any(order[0] in _metrics(r) for r in runs):
        known = ", ".join(sorted({k for r in runs for k in _metrics(r)})) or "none"
        raise InvalidInput(f"no run of experiment {experiment!r} has the metric {order[0]!r}; its metrics: {known}")
    names = {str(exp["experiment_id"]): short_name(str(exp["name"]), f"{project}/")}
    versions = _versions_of_runs(ws, [str(r["info"]["run_id"]) for r in runs])
    return [_run_public(r, names, versions) for r in runs]


def compare_runs(
    registry: Registry, session: Session, caller: Caller, project: str, run_ids: list[str]
) -> RunComparison:
    """2 to 10 runs of the project side by side: every parameter and metric any of them has."""
    authorize(session, caller, "experiment:read", project)
    if not 2 <= len(run_ids) <= 10:
        raise InvalidInput(f"compare takes 2 to 10 run ids, not {len(run_ids)}")
    twice = sorted({r for r in run_ids if run_ids.count(r) > 1})
    if twice:
        raise InvalidInput(f"run id(s) given more than once: {', '.join(twice)}")
    ws = registry.workspace(project)
    runs = []
    for run_id in run_ids:
        run = _run(ws, run_id)
        if run is None:
            raise NotFound(f"run {run_id!r} not found in project {project!r}")
        runs.append(run)
    experiments = _experiment_names(ws)
    versions = _versions_of_runs(ws, run_ids)
    public = [_run_public(r, experiments, versions) for r in runs]
    params = sorted({k for r in public for k in r.params})
    differing = [k for k in params if len({r.params.get(k) for r in public}) > 1]
    return RunComparison(
        runs=public, params=params, metrics=sorted({k for r in public for k in r.metrics}), differing_params=differing
    )


# -- models -----------------------------------------------------------------------------------------


def list_models(registry: Registry, session: Session, caller: Caller, project: str) -> list[ModelPublic]:
    """The project's registered models (``<project>.<name>`` in MLflow), by name."""
    authorize(session, caller, "model:read", project)
    ws = registry.workspace(project)
    prefix = f"{project}."
    body = {"filter": f"name LIKE '{_quote(prefix)}%'", "order_by": ["name ASC"]}
    try:
        found = list(ws.pages("GET", "/registered-models/search", "registered_models", body, limit=10_000))
    except _Missing:
        return []
    return [_model_public(rm, project) for rm in found if str(rm.get("name", "")).startswith(prefix)]


def show_model(
    registry: Registry, session: Session, caller: Caller, project: str, name: str, *, versions: int = 10
) -> ModelDetail:
    """One model: its aliases, its newest versions and its promotion history."""
    proj, _ = authorize(session, caller, "model:read", project)
    ws = registry.workspace(project)
    rm = _registered_model(ws, name)
    return ModelDetail(
        **_model_public(rm, project).model_dump(),
        versions=_version_list(ws, rm, name, versions),
        promotions=_history(session, proj, name),
    )


def list_versions(
    registry: Registry, session: Session, caller: Caller, project: str, name: str, *, limit: int = 100
) -> list[ModelVersionPublic]:
    """A model's versions, newest first, with their run, its metrics and their aliases."""
    authorize(session, caller, "model:read", project)
    ws = registry.workspace(project)
    return _version_list(ws, _registered_model(ws, name), name, limit)


def _aliases(rm: dict[str, Any]) -> dict[str, int]:
    return {str(a["alias"]): int(a["version"]) for a in rm.get("aliases") or () if "alias" in a}


def _ready_version(ws: _Workspace, name: str, version: int) -> None:
    mv = _model_version(ws, name, version)
    if mv is None:
        raise Conflict(f"model {name!r} has no version {version} in project {ws.project!r}")
    status = str(mv.get("status") or "")
    if status != "READY":
        raise Conflict(f"version {version} of model {name!r} is {status.lower() or 'not ready'}, not ready")


def _set_champion(ws: _Workspace, name: str, version: int, rm: dict[str, Any]) -> None:
    full = registered_model_name(ws.project, name)
    ws.call("POST", "/registered-models/alias", json={"name": full, "alias": CHAMPION, "version": str(version)})
    # A champion is no longer a challenger: the alias is left for the next candidate.
    if _aliases(rm).get(CHALLENGER) == version:
        with contextlib.suppress(_Missing, InvalidInput):  # gone already
            ws.call("DELETE", "/registered-models/alias", json={"name": full, "alias": CHALLENGER})


def promote(
    registry: Registry, session: Session, caller: Caller, project: str, name: str, version: int, *, reason: str = ""
) -> PromotionPublic:
    """Make ``version`` the champion; the one before is kept in the history for :func:`rollback`.

    Raises:
        NotFound: no such model in the project.
        Conflict: the version does not exist, is not ready, or is the champion already.
    """
    proj, _ = authorize(session, caller, "model:promote", project)
    ws = registry.workspace(project)
    rm = _registered_model(ws, name)
    _ready_version(ws, name, version)
    previous = _aliases(rm).get(CHAMPION)
    if previous == version:
        raise Conflict(f"version {version} is already the champion of model {name!r}")
    row = _record(session, caller, proj, name, "promote", version, previous, reason)
    _set_champion(ws, name, version, rm)
    return _promotion_public(row)


def rollback(
    registry: Registry, session: Session, caller: Caller, project: str, name: str, *, reason: str = ""
) -> PromotionPublic:
    """Make the champion before the current one champion again (the one its promotion replaced).

    Raises:
        NotFound: no such model in the project.
        Conflict: the model has no champion, its champion's promotion replaced none (or was not
            made through the platform), or that version is gone or not ready.
    """
    proj, _ = authorize(session, caller, "model:promote", project)
    ws = registry.workspace(project)
    rm = _registered_model(ws, name)
    current = _aliases(rm).get(CHAMPION)
    if current is None:
        raise Conflict(f"model {name!r} has no champion to roll back")
    promoted = session.scalar(
        select(ModelPromotion)
        .where(
            ModelPromotion.project_id == proj.id,
            ModelPromotion.model == name,
            ModelPromotion.action == "promote",
            ModelPromotion.version == current,
        )
        .order_by(ModelPromotion.id.desc())
        .limit(1)
    )
    if promoted is None or promoted.previous_version is None:
        raise Conflict(f"model {name!r} has no previous champion to roll back to (its champion is version {current})")
    target = promoted.previous_version
    try:
        _ready_version(ws, name, target)
    except Conflict as e:
        raise Conflict(f"cannot roll back to version {target}: {e.message}") from None
    row = _record(session, caller, proj, name, "rollback", target, current, reason)
    _set_champion(ws, name, target, rm)
    return _promotion_public(row)


def _record(
    session: Session,
    caller: Caller,
    proj: Project,
    name: str,
    action: str,
    version: int,
    previous: int | None,
    reason: str,
) -> ModelPromotion:
    """The history row and the audit record, flushed before MLflow is changed: if the change fails,
    the request's transaction rolls both back."""
    row = ModelPromotion(
        project_id=proj.id,
        model=name,
        version=version,
        previous_version=previous,
        action=action,
        reason=reason,
        actor=caller.name,
    )
    session.add(row)
    audit.record(
        session,
        caller.name,
        f"model:{action}",
        project=proj.name,
        target=f"model/{name}",
        detail={"version": version, "previous_version": previous, "reason": reason[:500]},
    )
    session.flush()
    return row


# -- lineage ----------------------------------------------------------------------------------------


def _code(session: Session, proj: Project, run: dict[str, Any]) -> LineageCode:
    tags = _pairs(run.get("data", {}).get("tags"))
    flow_run_id = _str_or_none(tags.get(TAG_FLOW_RUN))
    code = LineageCode(
        flow_run_id=flow_run_id,
        source_name=_str_or_none(tags.get("mlflow.source.name")),
        git_commit=_str_or_none(tags.get("mlflow.source.git.commit")),
    )
    if flow_run_id:
        record = session.scalar(
            select(PipelineRun).where(PipelineRun.flow_run_id == flow_run_id, PipelineRun.project_id == proj.id)
        )
        dep = session.get(FlowDeployment, record.deployment_id) if record and record.deployment_id else None
        if dep is not None:
            code.deployment, code.entrypoint, code.code_sha = dep.name, dep.entrypoint, dep.code_sha
    return code


def lineage(
    registry: Registry, session: Session, caller: Caller, project: str, name: str, version: int
) -> ModelLineage:
    """Where a model version came from and where it went: dataset versions -> run -> code -> deployments."""
    proj, _ = authorize(session, caller, "model:read", project)
    ws = registry.workspace(project)
    rm = _registered_model(ws, name)
    mv = _model_version(ws, name, version)
    if mv is None:
        raise NotFound(f"model {name!r} has no version {version} in project {project!r}")
    run = _run(ws, str(mv["run_id"])) if mv.get("run_id") else None
    experiments = _experiment_names(ws) if run else {}
    public = _version_public(mv, project, _aliases(rm), {str(mv.get("run_id")): run} if run else {}, experiments)
    run_public = None
    if run is not None:
        r = _run_public(run, experiments, {})
        run_public = LineageRun(
            id=r.id,
            name=r.name,
            experiment=r.experiment,
            status=r.status,
            start_time=r.start_time,
            end_time=r.end_time,
            params=r.params,
            metrics=r.metrics,
            user=r.user,
        )
    return ModelLineage(
        model=name,
        version=version,
        status=public.status,
        aliases=public.aliases,
        created_at=public.created_at,
        datasets=_datasets(run) if run else [],
        run=run_public,
        code=_code(session, proj, run) if run else None,
        deployments=[],  # serving is not built yet: its deployments of this version will be listed here
        promotions=_history(session, proj, name, version),
    )
