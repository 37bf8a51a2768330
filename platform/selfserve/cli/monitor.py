"""``selfserve monitor``: drift and quality of a route's predictions against a reference dataset version."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from selfserve.cli._common import EXIT_ERROR, JsonOpt, client, handle_errors, print_json, print_record

if TYPE_CHECKING:
    from selfserve.schemas.monitoring import MonitorPublic, MonitorRunPublic

app = typer.Typer(
    help="Monitors: drift and quality of a route's predictions against the data its model learnt from, on a "
    "schedule; runs, HTML reports. `alert` lists what they raised.",
    no_args_is_help=True,
)
COLUMNS = ["route", "reference", "window", "schedule", "threshold", "last_status", "last_drift", "last_run"]
SHOW_FIELDS = [
    "route",
    "reference",
    "label",
    "task",
    "window",
    "schedule",
    "threshold",
    "on_drift",
    "policy",
    "webhook_url",
    "flow_deployment",
    "created_by",
    "created_at",
    "last_run",
    "last_status",
    "last_drift",
    "drifted",
    "quality",
]
RUN_COLUMNS = ["id", "status", "drift_share", "drifted", "quality", "rows", "report", "created_at"]
# How a run's status reads for people: a window without traffic is not "no drift".
STATUS_TEXT = {"ok": "ok", "drift": "drift", "no_data": "no data in window", "error": "error"}
ProjectArg = typer.Argument(..., help="The project.")
RouteArg = typer.Argument(..., help="The monitored route, from `monitor list`.")


class OnDrift(StrEnum):
    alert = "alert"
    retrain = "retrain"


class Policy(StrEnum):
    auto = "auto"
    manual = "manual"


OnDriftOpt = typer.Option(
    OnDrift.alert,
    "--on-drift",
    help="What drift leads to: an alert; retrain also marks the monitor for retraining (see --policy).",
)
PolicyOpt = typer.Option(
    Policy.auto,
    "--policy",
    help="With --on-drift retrain: auto lets a retrained model go live by itself, manual waits for approval.",
)
OutOpt = typer.Option(None, "--out", "-o", dir_okay=False, help="Where to save it (default: ROUTE-report.html here).")


# -- parsing -----------------------------------------------------------------------------------------


def window_seconds(value: str) -> int:
    """``1h`` -> 3600, ``30m`` -> 1800, ``3600`` -> 3600; a usage error for anything else."""
    from selfserve.settings import parse_duration

    try:
        seconds = parse_duration(value.strip() + ("s" if value.strip().isdigit() else ""))
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if seconds <= 0 or seconds != int(seconds):
        raise typer.BadParameter(f"{value!r} is not a positive whole number of seconds")
    return int(seconds)


def _check_window(value: str) -> str:
    window_seconds(value)
    return value


def _check_cron(value: str | None) -> str | None:
    if value is not None:
        from selfserve.schemas.pipelines import check_cron

        try:
            check_cron(value)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    return value


# -- display -----------------------------------------------------------------------------------------


def span(seconds: float) -> str:
    """``3600`` -> ``"1h"``, ``5400`` -> ``"90m"``: in the largest unit that divides it."""
    for unit, n in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{seconds // n:g}{unit}"
    return f"{seconds:g}s"


def percent(share: float | None) -> str | None:
    return None if share is None else f"{share:.0%}"


def drifted_text(run: MonitorRunPublic) -> str | None:
    """``"age, income (2 of 3)"``, ``"none of 3"``; None when the run compared no columns."""
    if not run.columns:
        return None
    drifted = sorted(c for c, v in run.columns.items() if isinstance(v, dict) and v.get("drifted"))
    if not drifted:
        return f"none of {len(run.columns)}"
    return f"{', '.join(drifted)} ({len(drifted)} of {len(run.columns)})"


def quality_text(run: MonitorRunPublic) -> str | None:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(run.quality.items())) or None


def _monitor_row(m: MonitorPublic) -> dict[str, Any]:
    last = m.last_run
    return {
        **m.model_dump(),
        "reference": f"{m.reference_dataset}@{m.reference_version}",
        "window": span(m.window_seconds),
        "schedule": m.schedule or "on demand",
        "threshold": percent(m.drift_share),
        "last_run": last.created_at if last else None,
        "last_status": STATUS_TEXT.get(last.status, last.status) if last else "never run",
        "last_drift": percent(last.drift_share) if last else None,
        "drifted": drifted_text(last) if last else None,
        "quality": quality_text(last) if last else None,
    }


def _run_row(r: MonitorRunPublic) -> dict[str, Any]:
    window = None
    if r.window_start is not None and r.window_end is not None:
        window = f"{r.window_start:%Y-%m-%d %H:%M} - {r.window_end:%H:%M}"
    return {
        **r.model_dump(),
        "status": STATUS_TEXT.get(r.status, r.status),
        "drift_share": percent(r.drift_share),
        "drifted": drifted_text(r),
        "quality": quality_text(r),
        "rows": f"{r.rows_current:,}",
        "window": window,
        "report": "yes" if r.has_report else "no",
    }


# -- commands ----------------------------------------------------------------------------------------


@app.command("create")
@handle_errors
def create(
    project: str = ProjectArg,
    route: str = typer.Argument(..., help="The route to watch, from `route list`."),
    reference: str | None = typer.Option(
        None,
        "--reference",
        metavar="DATASET[@VERSION]",
        help="Compare with this dataset version (default: the one the route's model was trained on).",
    ),
    label: str | None = typer.Option(
        None, "--label", metavar="COLUMN", help="The reference's label column, for quality (default: the target)."
    ),
    window: str = typer.Option(
        "1h",
        "--window",
        "-w",
        metavar="DURATION",
        callback=_check_window,
        help="How much of the prediction log each run reads, e.g. 1h, 30m or 3600 (seconds).",
    ),
    schedule: str | None = typer.Option(
        None,
        "--schedule",
        metavar="CRON",
        callback=_check_cron,
        help="Run on a cron schedule (UTC), e.g. '*/15 * * * *'; without it, runs only with `monitor run`.",
    ),
    drift_share: float = typer.Option(
        0.3, "--drift-share", min=0.0, max=1.0, help="Alert when this share of the columns drift (0 to 1)."
    ),
    on_drift: OnDrift = OnDriftOpt,
    policy: Policy = PolicyOpt,
    webhook: str | None = typer.Option(
        None, "--webhook", metavar="URL", help="POST every alert here as JSON (public or allowlisted hosts)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Watch a route: each run compares the window's logged inputs with the reference, column by column."""
    m = client().monitors.create(
        project,
        route,
        reference=reference,
        label=label,
        window_seconds=window_seconds(window),
        schedule=schedule,
        drift_share=drift_share,
        on_drift=on_drift.value,
        policy=policy.value,
        webhook_url=webhook,
    )
    if as_json:
        print_json(m)
        return
    when = f"on cron {m.schedule} (UTC)" if m.schedule else "on demand"
    typer.echo(
        f"created monitor on route {m.route}: the last {span(m.window_seconds)} of its predictions against "
        f"{m.reference_dataset}@{m.reference_version}, {when}; alert at {percent(m.drift_share)} of columns drifted"
    )
    typer.echo(f"run it now with `selfserve monitor run {project} {m.route}`")


@app.command("list")
@handle_errors
def list_(project: str = ProjectArg, as_json: bool = JsonOpt) -> None:
    """The project's monitors and how their last run went."""
    from selfserve.cli.dataset import print_rows

    found = client().monitors.list(project)
    if as_json:
        print_json(found)
        return
    print_rows([_monitor_row(m) for m in found], COLUMNS, keep=("route", "reference", "last_status"))


@app.command("show")
@handle_errors
def show(project: str = ProjectArg, route: str = RouteArg, as_json: bool = JsonOpt) -> None:
    """A monitor: its reference, window, schedule and threshold, and what its last run found."""
    m = client().monitors.get(project, route)
    if as_json:
        print_json(m)
        return
    print_record(_monitor_row(m), SHOW_FIELDS)
    if m.last_run is not None and m.last_run.status == "error" and m.last_run.error:
        typer.echo(f"\nthe last run failed: {m.last_run.error}")


@app.command("runs")
@handle_errors
def runs(
    project: str = ProjectArg,
    route: str = RouteArg,
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=1000, help="At most this many, newest first."),
    as_json: bool = JsonOpt,
) -> None:
    """The monitor's runs, newest first: status, share of drifted columns, quality, rows in the window."""
    from selfserve.cli.dataset import print_rows

    found = client().monitors.runs(project, route, limit=limit)
    if as_json:
        print_json(found)
        return
    print_rows([_run_row(r) for r in found], RUN_COLUMNS, keep=("id", "status", "drift_share", "created_at"))


@app.command("run")
@handle_errors
def run(
    project: str = ProjectArg,
    route: str = RouteArg,
    watch: bool = typer.Option(
        False, "--watch", help="Follow the run to its end, then print what it found; exit 0 only if it completed."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Run the monitor now (a run of its flow on the project's pool)."""
    c = client()
    flow_run_id = c.monitors.run(project, route)
    if not watch:
        if as_json:
            print_json({"flow_run_id": flow_run_id})
            return
        typer.echo(f"started a run of the monitor on route {route}: flow run {flow_run_id}")
        typer.echo(f"follow it with `selfserve run logs {project} {flow_run_id} --follow`")
        return
    from selfserve.cli.run import watch_run

    if as_json:
        done = c.runs.wait(project, flow_run_id, timeout=float("inf"))
        found = _recorded(c.monitors.runs(project, route, limit=10), flow_run_id)
        print_json({"flow_run": done.model_dump(mode="json"), "monitor_run": found and found.model_dump(mode="json")})
        if done.state != "completed":
            raise typer.Exit(EXIT_ERROR)
        return
    watch_run(c, project, c.runs.get(project, flow_run_id), as_json=False)
    found = _recorded(c.monitors.runs(project, route, limit=10), flow_run_id)
    if found is not None:
        print_record(_run_row(found), ["id", "status", "drift_share", "drifted", "quality", "rows", "window"])


def _recorded(runs: list[MonitorRunPublic], flow_run_id: str) -> MonitorRunPublic | None:
    """The monitor run that flow run ``flow_run_id`` recorded, if it got that far."""
    return next((r for r in runs if r.flow_run_id == flow_run_id), None)


@app.command("report")
@handle_errors
def report(
    project: str = ProjectArg,
    route: str = RouteArg,
    run_id: int | None = typer.Option(
        None, "--run", min=1, metavar="ID", help="The run, from `monitor runs` (default: the newest with a report)."
    ),
    out: Path | None = OutOpt,
    open_: bool = typer.Option(False, "--open", help="Open the saved report in a web browser."),
) -> None:
    """Save a run's full HTML report (Evidently's: drift per column, distributions, quality)."""
    from selfserve.cli.dataset import size

    dest = out if out is not None else Path(f"{route}-report.html")
    saved = client().monitors.report(project, route, dest, run=run_id)
    which = "the newest report" if run_id is None else f"the report of run {run_id}"
    typer.echo(f"saved {which} of the monitor on route {route} to {saved} ({size(saved.stat().st_size)})")
    if open_:
        import webbrowser

        if not webbrowser.open(saved.resolve().as_uri()):
            typer.echo(f"error: no web browser to open it with; open {saved.resolve()} yourself", err=True)
            raise typer.Exit(EXIT_ERROR)


@app.command("delete")
@handle_errors
def delete(
    project: str = ProjectArg,
    route: str = RouteArg,
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm: the monitor's runs go with it."),
) -> None:
    """Stop watching a route: the monitor, its schedule and its runs go; its alerts stay."""
    if not yes:
        typer.echo(f"error: deleting the monitor on {route} deletes its runs too; pass --yes to confirm", err=True)
        raise typer.Exit(EXIT_ERROR)
    client().monitors.delete(project, route)
    typer.echo(f"deleted the monitor on route {route}")
