"""Built-in flow: train candidate models on a pinned dataset version, register the best as ``challenger``,
and promote it to ``champion`` when it beats the current champion on held-out rows.

The run holds its project's token (``selfserve.Client()``) and MLflow credentials of the project's
service account in the project's workspace (``MLFLOW_*`` in its environment). The work is done by
:mod:`selfserve.ml.training`; this flow only reads the dataset, runs the candidates side by side as
tasks, and logs what happens.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from selfserve import Client
from selfserve.schemas.training import RESULT_PREFIX, TrainRequest

if TYPE_CHECKING:
    from prefect.futures import PrefectFuture

    from selfserve.ml.training import Fitted, Plan, Promote

# Candidates run side by side, one per core the run may use (each model uses one core: n_jobs=1).
WORKERS = max(1, min(3, len(os.sched_getaffinity(0))))


def _start(project: str, request: dict[str, Any], log: Any) -> Plan:
    from selfserve.ml import training

    req = TrainRequest.model_validate(request)
    with Client() as client:
        version = training.resolve_version(client, project, req.dataset)
        how = "as requested" if req.dataset.version is not None else "the latest, pinned for this run"
        log.info("dataset %s: version %d (%s)", req.dataset.name, version, how)
        frame = training.load_dataset(client, project, req.dataset.name, version)
    log.info("read %s rows x %d columns", f"{len(frame):,}", len(frame.columns))
    plan = training.make_plan(frame, req, dataset_version=version)
    for note in plan.data.notes:
        log.info("feature %s", note)
    s = plan.split
    log.info(
        "%d training rows (%d to fit, %d to compare candidates), %d held out (seed %d%s)",
        len(s.train),
        len(s.fit),
        len(s.validation),
        len(s.heldout),
        req.seed,
        ", stratified" if s.stratified else "",
    )
    log.info(
        "candidates %s, %s; metric %s (%s is better)",
        ", ".join(req.candidates),
        f"{req.tune_trials} Optuna trial(s) each" if req.tune_trials else "default parameters",
        req.metric,
        "lower" if req.lower_is_better else "higher",
    )
    return plan


@task(name="fit-candidate", task_run_name="fit-{family}", cache_policy=NO_CACHE)
def fit_candidate(plan: Plan, family: str) -> Fitted:
    from selfserve.ml import training

    return training.fit_candidate(plan, family, log=get_run_logger())


def _gather(futures: list[PrefectFuture[Fitted]], families: list[str], log: Any) -> list[Fitted]:
    """The candidates that trained; a failed one is logged and left out, unless all failed."""
    fitted: list[Fitted] = []
    errors: list[BaseException] = []
    for family, future in zip(families, futures, strict=True):
        try:
            fitted.append(future.result())
        except Exception as e:
            log.error("candidate %s failed: %s: %s", family, type(e).__name__, e)
            errors.append(e)
    if not fitted:
        raise errors[0]
    return fitted


def platform_promote(client: Client, project: str, model: str) -> Promote:
    """Promotion through the platform, which keeps the model's history and the audit trail."""

    def promote(name: str, version: int, reason: str) -> None:
        client.models.promote(project, model, version, reason=reason)

    return promote


def _finish(project: str, plan: Plan, fitted: list[Fitted], log: Any) -> dict[str, Any]:
    from selfserve.ml import training

    with Client() as client:
        return training.finish(
            plan,
            fitted,
            project=project,
            flow_run_id=flow_run.get_id(),
            promote=platform_promote(client, project, plan.request.model),
            log=log,
        )


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the result line carries: JSON (an undefined metric is null); the held-out rows' ids stay
    in MLflow, in the run's split.json."""

    def plain(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return plain({k: v for k, v in result.items() if k != "heldout_ids"})


@flow(
    name="selfserve-train",
    description="Train candidate models on a dataset version; register the best; promote it if it beats the champion.",
    task_runner=ThreadPoolTaskRunner(max_workers=WORKERS),
)
async def train(project: str, request: dict[str, Any]) -> dict[str, Any]:
    log = get_run_logger()
    plan = await asyncio.to_thread(_start, project, request, log)
    families: list[str] = list(plan.request.candidates)
    futures = [fit_candidate.submit(plan, family) for family in families]
    fitted = await asyncio.to_thread(_gather, futures, families, log)
    result = await asyncio.to_thread(_finish, project, plan, fitted, log)
    log.info("%s%s", RESULT_PREFIX, json.dumps(summary(result), default=str, allow_nan=False))
    return result
