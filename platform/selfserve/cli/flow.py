"""``selfserve flow``: deploy flows (your own code, or a scheduled ``ingest``/``transform``) and run them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, print_json, print_record
from selfserve.cli.run import report_started, watch_run

if TYPE_CHECKING:
    from selfserve.client import Client
    from selfserve.schemas.pipelines import FlowDeploymentPublic, Schedule

app = typer.Typer(
    help="Flows: deploy Prefect flows of your own code or scheduled ingests and transforms; run, pause, delete. "
    "`run` follows their runs.",
    no_args_is_help=True,
)
COLUMNS = ["name", "kind", "flow", "schedule", "paused", "parameters", "updated_at"]
SHOW_FIELDS = [
    "name",
    "kind",
    "flow",
    "entrypoint",
    "schedule",
    "paused",
    "parameters",
    "retries",
    "timeout",
    "description",
    "code_sha",
    "env_sha",
    "created_by",
    "created_at",
    "updated_at",
]
ProjectArg = typer.Argument(..., help="The project.")
NameArg = typer.Argument(..., help="The flow deployment, from `flow list`.")


# -- parsing, shared with `ingest` and `transform` ---------------------------------------------------


def _constant(name: str) -> Any:
    # NaN and Infinity are not JSON to anyone but Python: keep them as text.
    raise ValueError(name)


def param_value(text: str) -> Any:
    """A ``--param`` value: JSON when it is valid JSON (``7``, ``true``, ``[1,2]``, ``"7"``), text otherwise."""
    try:
        return json.loads(text, parse_constant=_constant)
    except ValueError:
        return text


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``["days=7", "tag=eu"]`` -> ``{"days": 7, "tag": "eu"}``; a usage error for anything but NAME=VALUE."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE")
        if not key.isidentifier():
            raise typer.BadParameter(f"{key!r} in {item!r} is not a parameter name (a Python identifier)")
        out[key] = param_value(value)
    return out


def _check_params(items: list[str]) -> list[str]:
    parse_params(items)  # while the command line is parsed, so that a bad pair is a usage error (exit 2)
    return items


def _check_cron(value: str | None) -> str | None:
    if value is not None:
        from selfserve.schemas.pipelines import check_cron

        try:
            check_cron(value)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    return value


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        from selfserve.settings import parse_duration

        try:
            seconds = parse_duration(value)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        if seconds <= 0:
            raise typer.BadParameter(f"{value!r} is not a positive duration")
    return value


def check_schedule(cron: str | None, interval: str | None, cron_option: str = "--cron") -> None:
    if cron is not None and interval is not None:
        raise typer.BadParameter(f"give either {cron_option} or --interval, not both")


def parse_entrypoint(value: str) -> tuple[Path, str]:
    """``./etl.py:etl`` -> (Path("./etl.py"), "etl"); a usage error naming what is wrong otherwise."""
    file, sep, function = value.rpartition(":")
    if not sep:
        raise typer.BadParameter(f"{value!r} is not FILE:FUNCTION (e.g. ./etl.py:etl): no ':'")
    if not file:
        raise typer.BadParameter(f"{value!r} is not FILE:FUNCTION (e.g. ./etl.py:etl): no file before ':'")
    if not function.isidentifier():
        what = "no function after ':'" if not function else f"{function!r} is not a Python function name"
        raise typer.BadParameter(f"{value!r} is not FILE:FUNCTION (e.g. ./etl.py:etl): {what}")
    path = Path(file)
    if not path.is_file():
        raise typer.BadParameter(f"{file!r} is not a file")
    return path, function


def _check_entrypoint(value: str) -> str:
    parse_entrypoint(value)
    return value


ParamsOpt = typer.Option(
    [],
    "--param",
    "-p",
    metavar="NAME=VALUE",
    callback=_check_params,
    help="A flow parameter (repeatable); VALUE is JSON when it parses (7, true, [1,2], '\"7\"'), else text.",
)
CronOpt = typer.Option(None, "--cron", metavar="CRON", callback=_check_cron, help="Run on a cron schedule (UTC).")
IntervalOpt = typer.Option(
    None, "--interval", metavar="DURATION", callback=_check_duration, help="Run every DURATION, e.g. 1h or 30m."
)
RetriesOpt = typer.Option(0, "--retries", min=0, max=10, help="Retry a failed run this many times.")
FlowTimeoutOpt = typer.Option(
    None, "--timeout", metavar="DURATION", callback=_check_duration, help="Fail a run that takes longer, e.g. 30m."
)
RequirementsOpt = typer.Option(
    None,
    "--requirements",
    "-r",
    exists=True,
    dir_okay=False,
    readable=True,
    help="A requirements file: the flow runs in its own environment with these packages.",
)
SourceOpt = typer.Option(
    None,
    "--source",
    exists=True,
    file_okay=False,
    help="Copy this whole directory (holding FILE) with the flow, for its imports. Default: FILE alone.",
)


# -- `ingest` and `transform` on a schedule ---------------------------------------------------------

ScheduleOpt = typer.Option(
    None,
    "--schedule",
    metavar="CRON",
    callback=_check_cron,
    help="Do not run now: deploy this as a flow that runs on a cron schedule (UTC), e.g. '0 2 * * *'.",
)
ScheduleIntervalOpt = typer.Option(
    None,
    "--interval",
    metavar="DURATION",
    callback=_check_duration,
    help="Do not run now: deploy this as a flow that runs every DURATION, e.g. 1h.",
)


def schedule_name_option(command: str) -> Any:
    return typer.Option(
        None, "--name", help=f"With --schedule or --interval: the flow deployment's name (default: {command}-TO)."
    )


def check_schedule_options(schedule: str | None, interval: str | None, name: str | None) -> None:
    check_schedule(schedule, interval, "--schedule")
    if name is not None and schedule is None and interval is None:
        raise typer.BadParameter("--name names a scheduled flow: give --schedule or --interval too")


def deploy_scheduled(
    c: Client,
    project: str,
    flow: str,
    name: str,
    request: dict[str, Any],
    cron: str | None,
    interval: str | None,
    as_json: bool,
) -> None:
    """Deploy the built-in ``flow`` with ``request`` (the body the command would send to run now)."""
    d = c.flows.deploy_builtin(project, flow, name, request, cron=cron, interval=interval)
    if as_json:
        print_json(d)
        return
    typer.echo(f"scheduled {flow} into {request['to']} as flow {d.name} in {project}: {schedule_text(d.schedule)}")
    typer.echo(f"run it now with `selfserve flow run {project} {d.name}`; its runs: `selfserve run list {project}`")


# -- display -----------------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    for unit, n in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if value >= n and value % n == 0:
            return f"{value // n:g}{unit}"
    return f"{value:g}s"


def schedule_text(schedule: Schedule | None) -> str | None:
    if schedule is None:
        return None
    if schedule.cron is not None:
        return f"cron {schedule.cron} ({schedule.timezone})"
    return f"every {_seconds(schedule.interval_seconds or 0)}"


def _row(d: FlowDeploymentPublic) -> dict[str, Any]:
    return {
        **d.model_dump(),
        "flow": d.flow_name,
        "schedule": schedule_text(d.schedule),
        "timeout": _seconds(d.timeout_seconds) if d.timeout_seconds else None,
        "parameters": json.dumps(d.parameters, sort_keys=True) if d.parameters else None,
    }


def report_deployed(d: FlowDeploymentPublic, project: str, as_json: bool) -> None:
    """What deploying prints: the deployment, its schedule, and how to run it now."""
    if as_json:
        print_json(d)
        return
    when = f"scheduled {schedule_text(d.schedule)}" if d.schedule else "runs on demand"
    typer.echo(f"deployed {d.kind} flow {d.flow_name} as {d.name} in {project}; {when}")
    typer.echo(f"run it now with `selfserve flow run {project} {d.name}`")


# -- commands ----------------------------------------------------------------------------------------


@app.command("deploy")
@handle_errors
def deploy(
    project: str = ProjectArg,
    entrypoint: str = typer.Argument(
        ..., metavar="FILE:FUNCTION", callback=_check_entrypoint, help="The @flow function, e.g. ./etl.py:etl."
    ),
    name: str = typer.Option(..., "--name", "-n", help="The deployment's name: a-z, 0-9 and '-'."),
    cron: str | None = CronOpt,
    interval: str | None = IntervalOpt,
    params: list[str] = ParamsOpt,
    retries: int = RetriesOpt,
    timeout: str | None = FlowTimeoutOpt,
    requirements: Path | None = RequirementsOpt,
    source: Path | None = SourceOpt,
    description: str = typer.Option("", "--description", "-d", help="What the flow does."),
    as_json: bool = JsonOpt,
) -> None:
    """Deploy a flow of your own code: the code is copied into the platform and checked there."""
    check_schedule(cron, interval)
    file, function = parse_entrypoint(entrypoint)
    d = client().flows.deploy(
        project,
        file,
        function,
        name=name,
        source=source,
        cron=cron,
        interval=interval,
        parameters=parse_params(params),
        retries=retries,
        timeout=timeout,
        requirements=requirements,
        description=description,
    )
    report_deployed(d, project, as_json)


@app.command("list")
@handle_errors
def list_(project: str = ProjectArg, as_json: bool = JsonOpt) -> None:
    """A project's flow deployments and their schedules."""
    from selfserve.cli.dataset import print_rows

    deployments = client().flows.list(project)
    if as_json:
        print_json(deployments)
        return
    print_rows([_row(d) for d in deployments], COLUMNS, keep=("name", "schedule"))


@app.command("show")
@handle_errors
def show(project: str = ProjectArg, name: str = NameArg, as_json: bool = JsonOpt) -> None:
    """One flow deployment: its code, schedule and parameters."""
    d = client().flows.get(project, name)
    if as_json:
        print_json(d)
        return
    print_record(_row(d), SHOW_FIELDS)


@app.command("run")
@handle_errors
def run(
    project: str = ProjectArg,
    name: str = NameArg,
    params: list[str] = ParamsOpt,
    watch: bool = typer.Option(
        False, "--watch", "-w", help="Follow the run's states and logs to its end; exit 0 only if it completed."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Start a run now, with parameters overriding the deployment's."""
    c = client()
    started = c.flows.run(project, name, parameters=parse_params(params))
    if not watch:
        report_started(started, project, as_json)
        return
    watch_run(c, project, started, as_json=as_json)


@app.command("pause")
@handle_errors
def pause(project: str = ProjectArg, name: str = NameArg, as_json: bool = JsonOpt) -> None:
    """Stop scheduling runs of a deployment (runs on demand still work)."""
    d = client().flows.pause(project, name)
    if as_json:
        print_json(d)
        return
    typer.echo(f"paused {d.name}: no scheduled runs until `selfserve flow resume {project} {d.name}`")


@app.command("resume")
@handle_errors
def resume(project: str = ProjectArg, name: str = NameArg, as_json: bool = JsonOpt) -> None:
    """Schedule a paused deployment's runs again."""
    d = client().flows.resume(project, name)
    if as_json:
        print_json(d)
        return
    when = f"scheduled {schedule_text(d.schedule)}" if d.schedule else "it has no schedule; runs on demand"
    typer.echo(f"resumed {d.name}: {when}")


@app.command("delete")
@handle_errors
def delete(project: str = ProjectArg, name: str = NameArg) -> None:
    """Delete a deployment with its schedule and the runs it has not started yet."""
    client().flows.delete(project, name)
    typer.echo(f"deleted flow deployment {name}")
