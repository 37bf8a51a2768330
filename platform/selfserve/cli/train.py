"""``selfserve train``: train candidate models on a dataset version as the built-in ``train`` flow, register
the best as ``challenger`` and promote it to ``champion`` if it beats the current one; now, or on a schedule."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

from selfserve.cli._common import EXIT_ERROR, JsonOpt, client, handle_errors, print_json
from selfserve.cli.flow import ScheduleIntervalOpt, ScheduleOpt, check_schedule, schedule_text

if TYPE_CHECKING:
    from selfserve.client import Client
    from selfserve.schemas.pipelines import FlowDeploymentPublic, LogLine, RunPublic

CANDIDATES = ("rf", "gb", "linear")


class Task(StrEnum):
    classification = "classification"
    regression = "regression"


class Metric(StrEnum):
    f1 = "f1"
    accuracy = "accuracy"
    roc_auc = "roc_auc"
    rmse = "rmse"
    mae = "mae"
    r2 = "r2"


TaskOpt = typer.Option(..., "--task", help="classification or regression.")
MetricOpt = typer.Option(
    None,
    "--metric",
    help="What decides: classification f1 (default), accuracy, roc_auc; regression rmse (default), mae, r2.",
)


def parse_dataset(value: str) -> tuple[str, int | None]:
    """``features`` or ``features@3``; a usage error otherwise."""
    name, sep, version = value.partition("@")
    if not name or (sep and not version.isdigit()):
        raise typer.BadParameter(f"{value!r} is not DATASET or DATASET@VERSION (e.g. features@3)")
    return name, int(version) if sep else None


def parse_list(value: str | None) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    if value is None:
        return None
    items = [x.strip() for x in value.split(",") if x.strip()]
    if not items:
        raise typer.BadParameter(f"{value!r} names nothing: give NAME[,NAME...]")
    return items


def _check_dataset(value: str) -> str:
    parse_dataset(value)
    return value


def _check_candidates(value: str | None) -> str | None:
    items = parse_list(value) or []
    unknown = [x for x in items if x not in CANDIDATES]
    if unknown:
        raise typer.BadParameter(f"unknown candidate(s) {', '.join(unknown)}; candidates are: {', '.join(CANDIDATES)}")
    if len(set(items)) != len(items):
        raise typer.BadParameter("each candidate may be named once")
    return value


def _check_list(value: str | None) -> str | None:
    parse_list(value)
    return value


def request_of(
    dataset: str,
    target: str,
    task: Task,
    model: str,
    *,
    metric: Metric | None = None,
    candidates: str | None = None,
    tune_trials: int | None = None,
    margin: float | None = None,
    test_size: float | None = None,
    seed: int | None = None,
    features: str | None = None,
    exclude: str | None = None,
) -> dict[str, Any]:
    """The train flow's request, with only what the command line set (the platform fills the defaults)."""
    name, version = parse_dataset(dataset)
    request: dict[str, Any] = {
        "dataset": {"name": name, **({"version": version} if version is not None else {})},
        "target": target,
        "task": task.value,
        "model": model,
        "metric": metric.value if metric else None,
        "candidates": parse_list(candidates),
        "tune_trials": tune_trials,
        "margin": margin,
        "test_size": test_size,
        "seed": seed,
        "features": parse_list(features),
        "exclude": parse_list(exclude),
    }
    return {k: v for k, v in request.items() if v is not None}


def find_result(lines: list[LogLine]) -> dict[str, Any] | None:
    """The train flow's result, from its last log line that carries one."""
    from selfserve.schemas.training import RESULT_PREFIX

    for line in reversed(lines):
        if line.message.startswith(RESULT_PREFIX):
            try:
                found = json.loads(line.message[len(RESULT_PREFIX) :])
            except ValueError:
                continue
            if isinstance(found, dict):
                return found
    return None


def _value(v: Any) -> str:
    return "undefined" if v is None else f"{v:.4f}"


def result_text(result: dict[str, Any]) -> list[str]:
    """The result for people: the new version and whether it is the champion now, and why."""
    metric = result.get("metric")
    out = [
        f"version {result.get('version')} of model {result.get('model')} ({result.get('candidate')}): "
        f"held-out {metric} {_value(result.get('value'))}; alias challenger"
    ]
    verdict = "promoted to champion" if result.get("promoted") else "not promoted: the champion stays"
    out.append(f"{verdict} ({result.get('reason')})")
    return out


def _deploy(
    c: Client, project: str, name: str, request: dict[str, Any], cron: str | None, interval: str | None
) -> tuple[FlowDeploymentPublic, bool]:
    """Deploy (or update) the train flow; a run now keeps the schedule an existing deployment has.

    Returns the deployment and whether an existing schedule was kept.
    """
    from selfserve.errors import NotFound

    every: str | float | None = interval
    kept = False
    if cron is None and interval is None:
        try:
            existing = c.flows.get(project, name)
        except NotFound:
            existing = None
        if existing is not None and existing.schedule is not None:
            cron, every, kept = existing.schedule.cron, existing.schedule.interval_seconds, True
    d = c.flows.deploy_builtin(project, "train", name, request, cron=cron, interval=every)
    return d, kept


def _follow(c: Client, project: str, started: RunPublic, *, quiet: bool) -> tuple[RunPublic, dict[str, Any] | None]:
    """Follow the run to its end (and its last log lines, which trail it): unless ``quiet``, print its
    states and lines, all but the result line, which is returned."""
    from selfserve.cli.run import _line, _state, duration, follow
    from selfserve.schemas.training import RESULT_PREFIX

    if not quiet:
        typer.echo(f"started run {started.name} ({started.id}) of {started.deployment}")
    found: list[LogLine] = []

    def on_line(line: LogLine) -> None:
        if line.message.startswith(RESULT_PREFIX):
            found.append(line)
        elif not quiet:
            typer.echo(_line(line))

    def on_state(r: RunPublic) -> None:
        took = f" in {duration(r.duration_seconds)}" if r.state == "completed" and r.duration_seconds else ""
        typer.echo(f"run {r.name}: {_state(r)}{took}")

    done = follow(c, project, started.id, on_line=on_line, on_state=None if quiet else on_state)
    return done, find_result(found)


@handle_errors
def train(
    project: str = typer.Argument(..., help="The project."),
    dataset: str = typer.Option(
        ...,
        "--dataset",
        "-d",
        metavar="DATASET[@VERSION]",
        callback=_check_dataset,
        help="The dataset to train on; without @VERSION, its latest version when the run starts (pinned then).",
    ),
    target: str = typer.Option(..., "--target", "-t", help="The column to predict."),
    task: Task = TaskOpt,
    model: str = typer.Option(..., "--model", "-m", help="The registered model's name in the project."),
    metric: Metric | None = MetricOpt,
    candidates: str | None = typer.Option(
        None,
        "--candidates",
        metavar="rf,gb,linear",
        callback=_check_candidates,
        help="Model families to try (default: all three): random forest, gradient boosting, linear.",
    ),
    tune_trials: int | None = typer.Option(
        None, "--tune-trials", min=0, max=200, help="Optuna trials per family (default 0: default parameters)."
    ),
    margin: float | None = typer.Option(
        None, "--margin", min=0.0, help="Promote only when better than the champion by more than this (default 0)."
    ),
    test_size: float | None = typer.Option(
        None, "--test-size", min=0.05, max=0.5, help="Share of rows held out for the comparison (default 0.2)."
    ),
    seed: int | None = typer.Option(None, "--seed", min=0, help="Seed of the splits, models and search (default 0)."),
    features: str | None = typer.Option(
        None, "--features", metavar="COL,COL", callback=_check_list, help="Only these feature columns."
    ),
    exclude: str | None = typer.Option(
        None, "--exclude", metavar="COL,COL", callback=_check_list, help="Never use these columns (ids, leaks)."
    ),
    name: str | None = typer.Option(None, "--name", help="The flow deployment's name (default: train-MODEL)."),
    schedule: str | None = ScheduleOpt,
    interval: str | None = ScheduleIntervalOpt,
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Follow the run to its end (default), or start it and return."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Train candidates on a dataset version, register the best as challenger, promote it if it beats the champion.

    The training runs as the project's built-in `train` flow (deployed as train-MODEL, or --name):
    with --schedule or --interval it is deployed to run on that schedule instead of now. Running it
    now keeps the schedule the deployment already has. Exits non-zero when the run fails.
    """
    check_schedule(schedule, interval, "--schedule")
    request = request_of(
        dataset,
        target,
        task,
        model,
        metric=metric,
        candidates=candidates,
        tune_trials=tune_trials,
        margin=margin,
        test_size=test_size,
        seed=seed,
        features=features,
        exclude=exclude,
    )
    deployment = name or f"train-{model}"[:63]
    c = client()
    d, kept = _deploy(c, project, deployment, request, schedule, interval)
    if schedule is not None or interval is not None:
        if as_json:
            print_json(d)
            return
        typer.echo(f"scheduled training of model {model} as flow {d.name} in {project}: {schedule_text(d.schedule)}")
        typer.echo(f"run it now with `selfserve flow run {project} {d.name}`; its runs: `selfserve run list {project}`")
        return
    started = c.flows.run(project, d.name)
    if not as_json:
        note = f"; it keeps its schedule, {schedule_text(d.schedule)}" if kept else ""
        typer.echo(f"deployed training of model {model} as flow {d.name} in {project}{note}")
    if not wait:
        from selfserve.cli.run import report_started

        report_started(started, project, as_json)
        return
    done, result = _follow(c, project, started, quiet=as_json)
    if as_json:
        print_json({"run": done.model_dump(mode="json"), "result": result})
    else:
        for line in result_text(result) if result else []:
            typer.echo(line)
    if done.state != "completed":
        why = f": {done.message}" if done.message else ""
        typer.echo(f"error: run {done.name} ({done.id}) {done.state}{why}", err=True)
        raise typer.Exit(EXIT_ERROR)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
