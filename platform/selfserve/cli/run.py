"""``selfserve run``: the runs of a project's flow deployments (list, show, logs, cancel), and
``run compare`` for MLflow runs side by side."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

from selfserve.cli._common import EXIT_ERROR, JsonOpt, client, handle_errors, print_json, print_record

if TYPE_CHECKING:
    from selfserve.client import Client
    from selfserve.schemas.models import RunComparison
    from selfserve.schemas.pipelines import LogLine, RunPublic

app = typer.Typer(
    help="Runs of flow deployments (from `flow run` or a schedule): list, show, logs, cancel; "
    "`compare` puts MLflow runs (from `experiment runs`) side by side.",
    no_args_is_help=True,
)
COLUMNS = ["id", "deployment", "state", "start", "duration", "message"]
SHOW_FIELDS = [
    "id",
    "name",
    "deployment",
    "state",
    "message",
    "parameters",
    "created_at",
    "expected_start_time",
    "start_time",
    "end_time",
    "duration",
    "run_count",
    "cpu_seconds",
    "max_rss",
    "memory_limit",
    "cpus",
]
ProjectArg = typer.Argument(..., help="The project.")
RunIdArg = typer.Argument(..., metavar="RUN_ID", help="The run's id, from `run list`.")
POLL_SECONDS = 1.0
# Prefect ships a run's last log lines in batches, up to a few seconds after the run's final state:
# following goes on this long after the end so that the error that ended a run is not cut off.
GRACE_SECONDS = 3.0
PAGE = 200


class State(StrEnum):
    scheduled = "scheduled"
    waiting = "waiting"
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    crashed = "crashed"
    cancelling = "cancelling"
    cancelled = "cancelled"
    paused = "paused"


StateOpt = typer.Option(None, "--state", "-s", help="Only runs in this state.")


# -- display, shared with `flow run` -------------------------------------------------------------------


def duration(seconds: float | None) -> str | None:
    """Seconds for people: 3.25 -> '3.2s', 245 -> '4m 05s', 7380 -> '2h 03m'."""
    if seconds is None:
        return None
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _state(r: RunPublic) -> str:
    return r.state if r.state_name.lower() == r.state else f"{r.state} ({r.state_name})"


def _row(r: RunPublic) -> dict[str, Any]:
    from selfserve.cli.dataset import size

    return {
        **r.model_dump(),
        "state": _state(r),
        "start": r.start_time or r.expected_start_time,
        "duration": duration(r.duration_seconds),
        "max_rss": size(r.max_rss_bytes),
        "memory_limit": size(r.memory_limit_bytes),
    }


def _line(line: LogLine) -> str:
    return f"{line.time.astimezone():%H:%M:%S} {line.level:<7} {line.message}"


def report_started(r: RunPublic, project: str, as_json: bool) -> None:
    if as_json:
        print_json(r)
        return
    typer.echo(f"started run {r.name} ({r.id}) of {r.deployment}; it is {r.state}")
    typer.echo(f"follow it with `selfserve run logs {project} {r.id} --follow`")


class Cursor:
    """Where a reader of a run's log lines is, and the lines it has seen at that time.

    The engine's ``after`` includes lines at that very time, so the newest lines of one page come
    again in the next: they are recognised and dropped, and lines that share their time but came
    later are kept.
    """

    def __init__(self) -> None:
        self.after: datetime | None = None
        self._seen: set[tuple[Any, ...]] = set()

    @staticmethod
    def _key(line: LogLine) -> tuple[Any, ...]:
        return (line.time, line.level, line.source, line.message)

    def read(self, c: Client, project: str, run_id: str) -> tuple[RunPublic, list[LogLine], bool]:
        """The run, the lines not seen yet, and whether the page was full (more may be waiting)."""
        page = c.runs.logs(project, run_id, after=self.after, limit=PAGE)
        new = [x for x in page.lines if not (x.time == self.after and self._key(x) in self._seen)]
        if page.lines:
            last = page.lines[-1].time
            if last != self.after:
                self.after, self._seen = last, set()
            self._seen.update(self._key(x) for x in page.lines if x.time == last)
        return page.run, new, len(page.lines) >= PAGE and bool(new)


def follow(
    c: Client,
    project: str,
    run_id: str,
    *,
    on_line: Callable[[LogLine], None],
    on_state: Callable[[RunPublic], None] | None = None,
) -> RunPublic:
    """Pass each log line and each change of state to the callbacks until the run ends; returns its last state."""
    from selfserve.client._pipelines import FINAL

    cursor = Cursor()
    last: str | None = None
    ended_at: float | None = None
    while True:
        run, lines, more = cursor.read(c, project, run_id)
        final = run.state in FINAL
        # A final state is told last, after the lines that trail it.
        if run.state != last and on_state and not final:
            on_state(run)
        last = run.state
        for line in lines:
            on_line(line)
        if final:
            if ended_at is None:
                # A run that ended long ago has had all its lines shipped: no need to wait for more.
                age = (datetime.now(UTC) - run.end_time).total_seconds() if run.end_time else 0.0
                ended_at = time.monotonic() - max(age, 0.0)
            if not lines and time.monotonic() - ended_at >= GRACE_SECONDS:
                if on_state:
                    on_state(run)
                return run
        if not more:
            time.sleep(POLL_SECONDS)


def watch_run(c: Client, project: str, started: RunPublic, *, as_json: bool) -> None:
    """Follow a run to its end (``flow run --watch``); exits 1 unless it completed."""
    if as_json:
        done = c.runs.wait(project, started.id, timeout=float("inf"))
        print_json(done)
    else:
        typer.echo(f"started run {started.name} ({started.id}) of {started.deployment}")

        def on_state(r: RunPublic) -> None:
            took = f" in {duration(r.duration_seconds)}" if r.state == "completed" and r.duration_seconds else ""
            typer.echo(f"run {r.name}: {_state(r)}{took}")

        done = follow(c, project, started.id, on_line=lambda line: typer.echo(_line(line)), on_state=on_state)
    if done.state != "completed":
        why = f": {done.message}" if done.message else ""
        typer.echo(f"error: run {done.name} ({done.id}) {done.state}{why}", err=True)
        raise typer.Exit(EXIT_ERROR)


# -- commands ----------------------------------------------------------------------------------------


@app.command("list")
@handle_errors
def list_(
    project: str = ProjectArg,
    state: State | None = StateOpt,
    flow: str | None = typer.Option(None, "--flow", "-f", metavar="NAME", help="Only runs of this deployment."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=500, help="At most this many runs, newest first."),
    as_json: bool = JsonOpt,
) -> None:
    """A project's runs, newest first."""
    from selfserve.cli.dataset import print_rows

    runs = client().runs.list(project, state=state.value if state else None, flow=flow, limit=limit)
    if as_json:
        print_json(runs)
        return
    print_rows([_row(r) for r in runs], COLUMNS, keep=("id",))


@app.command("show")
@handle_errors
def show(project: str = ProjectArg, run_id: str = RunIdArg, as_json: bool = JsonOpt) -> None:
    """One run: its state, times, parameters and resources used."""
    r = client().runs.get(project, run_id)
    if as_json:
        print_json(r)
        return
    print_record(_row(r), SHOW_FIELDS + (["note"] if r.note and r.note != r.message else []))


@app.command("logs")
@handle_errors
def logs(
    project: str = ProjectArg,
    run_id: str = RunIdArg,
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until the run ends."),
    as_json: bool = JsonOpt,
) -> None:
    """A run's log lines (with --json: a list of lines; following, one JSON object per line)."""
    import json

    c = client()
    if follow_:
        if as_json:
            follow(c, project, run_id, on_line=lambda line: typer.echo(json.dumps(line.model_dump(mode="json"))))
            return
        done = follow(c, project, run_id, on_line=lambda line: typer.echo(_line(line)))
        why = f": {done.message}" if done.message and done.state != "completed" else ""
        typer.echo(f"run {done.name} {done.state}{why}", err=True)
        return
    lines: list[LogLine] = []
    cursor = Cursor()
    while True:
        _, new, more = cursor.read(c, project, run_id)
        lines += new
        if not more:
            break
    if as_json:
        print_json(lines)
        return
    if not lines:
        typer.echo("(no log lines)")
    for line in lines:
        typer.echo(_line(line))


@app.command("cancel")
@handle_errors
def cancel(project: str = ProjectArg, run_id: str = RunIdArg, as_json: bool = JsonOpt) -> None:
    """Cancel a run that has not ended: a scheduled one at once, a running one when its process stops."""
    r = client().runs.cancel(project, run_id)
    if as_json:
        print_json(r)
        return
    typer.echo(f"run {r.name} ({r.id}): {_state(r)}")


def _comparison_rows(cmp: RunComparison) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per attribute, parameter and metric; one column per run (its id's first 8 digits)."""
    from selfserve.cli.experiment import datasets_text, number

    heads = [r.id[:8] for r in cmp.runs]
    if len(set(heads)) < len(heads):
        heads = [r.id for r in cmp.runs]

    def row(key: str, values: list[Any]) -> dict[str, Any]:
        return {"": key, **dict(zip(heads, values, strict=True))}

    rows = [
        row("name", [r.name for r in cmp.runs]),
        row("experiment", [r.experiment for r in cmp.runs]),
        row("status", [r.status for r in cmp.runs]),
        row("datasets", [datasets_text(r.datasets) for r in cmp.runs]),
    ]
    differing = set(cmp.differing_params)
    rows += [
        row(f"params.{k}" + (" *" if k in differing else ""), [r.params.get(k) for r in cmp.runs]) for k in cmp.params
    ]
    rows += [row(f"metrics.{k}", [number(r.metrics.get(k)) for r in cmp.runs]) for k in cmp.metrics]
    return rows, ["", *heads]


RunIdsArg = typer.Argument(..., metavar="RUN_ID...", help="2 to 10 MLflow run ids, from `experiment runs`.")


@app.command("compare")
@handle_errors
def compare(
    project: str = ProjectArg,
    run_ids: list[str] = RunIdsArg,
    as_json: bool = JsonOpt,
) -> None:
    """MLflow runs side by side: every parameter and metric any of them has (* marks differing parameters)."""
    from selfserve.cli.dataset import print_rows

    if not 2 <= len(run_ids) <= 10:
        raise typer.BadParameter(f"give 2 to 10 run ids, not {len(run_ids)}", param_hint="RUN_ID...")
    cmp = client().experiments.compare(project, run_ids)
    if as_json:
        print_json(cmp)
        return
    rows, columns = _comparison_rows(cmp)
    print_rows(rows, columns, keep=("",))
    if cmp.differing_params:
        typer.echo("* differs between the runs")
