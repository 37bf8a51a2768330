from __future__ import annotations

import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from selfserve.cli._common import (
    EXIT_ERROR,
    JsonOpt,
    _cell,
    client,
    handle_errors,
    output,
    print_json,
    print_record,
    print_table,
)

if TYPE_CHECKING:
    from selfserve.client import Client
    from selfserve.schemas.data import DatasetVersionPublic, JobPublic, TableData

app = typer.Typer(
    help="Datasets: versioned tables of a project. Upload, preview, query, export, contracts, jobs.",
    no_args_is_help=True,
)
contract_app = typer.Typer(
    help="A dataset's contract: declared checks (YAML) every later write must pass.", no_args_is_help=True
)
app.add_typer(contract_app, name="contract")

COLUMNS = ["name", "version", "rows", "size", "contract", "published", "updated_at"]
SHOW_FIELDS = [
    "name",
    "description",
    "current_version",
    "rows",
    "size",
    "storage",
    "has_contract",
    "published",
    "created_by",
    "created_at",
    "updated_at",
]
HISTORY_COLUMNS = ["version", "operation", "rows", "size", "producer", "inputs", "created_by", "created_at"]
JOB_COLUMNS = ["id", "kind", "status", "target", "rows_read", "created_at", "finished_at", "error"]
NUMERIC = ("byte", "short", "integer", "long", "float", "double", "decimal")


class Mode(StrEnum):
    append = "append"
    overwrite = "overwrite"


class UploadFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"
    json = "json"
    ndjson = "ndjson"


class ExportFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"
    json = "json"


VersionOpt = typer.Option(None, "--version", "-v", min=0, help="A version number; default the latest.")
AppendOpt = typer.Option(Mode.append, "--mode", help="Add the rows, or replace the dataset's rows.")
OverwriteOpt = typer.Option(Mode.overwrite, "--mode", help="Replace the dataset's rows, or add to them.")
EvolveOpt = typer.Option(False, "--evolve", help="Accept new or changed columns on append.")
UploadFileArg = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="A CSV, Parquet or JSON file.")
UploadFormatOpt = typer.Option(None, "--format", "-f", help="Default: from the file's extension.")
ExportFileArg = typer.Argument(..., dir_okay=False, help="Where to write the file.")
ExportFormatOpt = typer.Option(
    None, "--format", "-f", help="Default: from FILE's extension (.csv, .json, .ndjson), else parquet."
)
ContractFileArg = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="The contract as YAML.")
ProjectArg = typer.Argument(..., help="The project.")
NameArg = typer.Argument(..., help="The dataset.")


# -- shared with `ingest` and `transform` ------------------------------------------------------


def size(n: int | None) -> str | None:
    """Bytes for people: 87724 -> '87.7 KB'."""
    if n is None:
        return None
    for suffix, unit in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= unit:
            return f"{n / unit:.1f} {suffix}"
    return f"{n} B"


def print_data(data: TableData) -> None:
    """Rows of a preview or a query as a table, then how many there are."""
    from rich.console import Console
    from rich.table import Table

    if not data.columns:
        typer.echo("(no columns)")
        return
    table = Table(header_style="bold")
    for c in data.columns:
        table.add_column(c.name, justify="right" if c.type.startswith(NUMERIC) else "left")
    for row in data.rows:
        table.add_row(*(_cell(v) for v in row))
    Console(width=max(100, Console().width)).print(table)
    more = " (more rows not shown: raise --limit)" if data.truncated else ""
    typer.echo(f"{data.row_count} row{'' if data.row_count == 1 else 's'}{more}")


def print_rows(rows: list[dict[str, Any]], columns: Sequence[str], *, keep: Sequence[str] = ()) -> None:
    """Like ``print_table``, but nothing is cut short: long words fold, and the ``keep`` columns (names,
    lineage) keep their lines whole while the others wrap to make room."""
    from rich.console import Console
    from rich.table import Table

    if not rows:
        typer.echo("(none)")
        return
    table = Table(header_style="bold")
    for c in columns:
        table.add_column(c, no_wrap=c in keep, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    Console(width=max(100, Console().width)).print(table)


def wait_for_job(c: Client, project: str, job: JobPublic, *, timeout: float, progress: bool) -> JobPublic:
    """Poll a job to its end, with a bar of the rows read so far on stderr; a failed job raises its error."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if not progress:
        return _wait(c, project, job.id, timeout, None)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]:,} rows read"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"{job.kind} job {job.id}: {job.status}", total=None, rows=0)

        def show(j: JobPublic) -> None:
            bar.update(task, description=f"{j.kind} job {j.id}: {j.status}", rows=int(j.progress.get("rows_read", 0)))

        try:
            done = _wait(c, project, job.id, timeout, show)
        except BaseException:
            # Leave no bar behind: the error says what happened, a frozen spinner would not.
            bar.live.transient = True
            bar.live.stop()
            bar.disable = True  # so that leaving the block prints nothing more
            raise
        bar.update(task, total=1, completed=1)
        return done


def _wait(c: Client, project: str, job_id: int, timeout: float, on_progress: Any) -> JobPublic:
    try:
        return c.jobs.wait(project, job_id, timeout=timeout, on_progress=on_progress)
    except TimeoutError as e:
        typer.echo(f"error: {e}; it goes on in the background: `selfserve dataset job {project} {job_id}`", err=True)
        raise typer.Exit(EXIT_ERROR) from None


def report_job(c: Client, project: str, job: JobPublic, *, wait: bool, as_json: bool, timeout: float) -> None:
    """What ``ingest`` and ``transform`` print: the job started, or (waiting) the version it made."""
    if not wait:
        if as_json:
            print_json(job)
            return
        typer.echo(
            f"started {job.kind} job {job.id} into {job.params.get('to')} ({job.status}); "
            f"follow it with `selfserve dataset job {project} {job.id} --wait`"
        )
        return
    done = wait_for_job(c, project, job, timeout=timeout, progress=not as_json)
    if as_json:
        print_json(done)
        return
    result = done.result or {}
    rows = result.get("rows", 0)
    typer.echo(
        f"{job.kind} job {job.id} wrote {rows:,} row{'' if rows == 1 else 's'} "
        f"to {result.get('dataset')}: version {result.get('version')}"
    )


TimeoutOpt = typer.Option(3600.0, "--timeout", min=1, help="Seconds to wait for the job before giving up waiting.")
NoWaitOpt = typer.Option(False, "--no-wait", help="Start the job and return; `dataset job` follows it.")


# -- rows for display ------------------------------------------------------------------------------


def _ref(entry: dict[str, Any], project: str) -> str:
    where = "" if entry.get("project") in (None, project) else f"{entry['project']}/"
    return f"{where}{entry.get('dataset')}@{entry.get('version')}"


def _producer(p: dict[str, Any]) -> str:
    kind = p.get("kind", "?")
    if kind == "upload":
        return f"upload {p.get('file', '')}".strip()
    if kind == "transform":
        return f"transform ({p.get('engine', '?')})"
    if kind == "ingest":
        what = p.get("table") or "query"
        return f"ingest {p.get('source')} ({p.get('source_kind')}): {what}"
    return str(kind)


def _version_row(v: DatasetVersionPublic, project: str) -> dict[str, Any]:
    return {
        "version": v.version,
        "operation": v.operation,
        "rows": v.rows,
        "written": v.rows_written,
        "size": size(v.bytes),
        "producer": _producer(v.producer),
        "inputs": "\n".join(_ref(i, project) for i in v.inputs) or None,
        "created_by": v.created_by,
        "created_at": v.created_at,
    }


def _job_row(j: JobPublic) -> dict[str, Any]:
    return {
        **j.model_dump(),
        "target": j.params.get("to"),
        "rows_read": j.progress.get("rows_read"),
    }


# -- reading ------------------------------------------------------------------------------------


@app.command("list")
@handle_errors
def list_(project: str = ProjectArg, as_json: bool = JsonOpt) -> None:
    """A project's datasets with their current version."""
    datasets = client().datasets.list(project)
    if as_json:
        print_json(datasets)
        return
    rows = [
        {
            **d.model_dump(),
            "version": d.current_version,
            "size": size(d.bytes),
            "contract": "yes" if d.has_contract else "-",
            "published": "yes" if d.published else "-",
        }
        for d in datasets
    ]
    print_rows(rows, COLUMNS, keep=("name",))


@app.command("show")
@handle_errors
def show(project: str = ProjectArg, name: str = NameArg, as_json: bool = JsonOpt) -> None:
    """A dataset: its current version, size, columns, contract and whether it is published."""
    d = client().datasets.get(project, name)
    if as_json:
        print_json(d)
        return
    print_record({**d.model_dump(), "size": size(d.bytes), "storage": size(d.storage_bytes)}, SHOW_FIELDS)
    typer.echo("columns:")
    for col in d.columns:
        typer.echo(f"  {col.name:<24} {col.type}{'' if col.nullable else ' not null'}")


@app.command("history")
@handle_errors
def history(project: str = ProjectArg, name: str = NameArg, as_json: bool = JsonOpt) -> None:
    """Every version, newest first: how it was made (producer) and from which versions (inputs)."""
    versions = client().datasets.history(project, name)
    if as_json:
        print_json(versions)
        return
    print_rows([_version_row(v, project) for v in versions], HISTORY_COLUMNS, keep=("inputs",))


@app.command("schema")
@handle_errors
def schema(
    project: str = ProjectArg, name: str = NameArg, version: int | None = VersionOpt, as_json: bool = JsonOpt
) -> None:
    """The columns of a version, with their types."""
    output(client().datasets.schema(project, name, version=version), as_json, ["name", "type", "nullable"])


@app.command("preview")
@handle_errors
def preview(
    project: str = ProjectArg,
    name: str = NameArg,
    version: int | None = VersionOpt,
    as_of: str | None = typer.Option(
        None, "--as-of", help="Time travel: the version current at this ISO time, e.g. 2025-06-30T12:00:00Z."
    ),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="At most this many rows."),
    as_json: bool = JsonOpt,
) -> None:
    """The first rows of a version (default the latest), or of the version current at a time."""
    if version is not None and as_of is not None:
        raise typer.BadParameter("give --version or --as-of, not both")
    data = client().datasets.preview(project, name, version=version, as_of=as_of, limit=limit)
    if as_json:
        print_json(data)
        return
    print_data(data)


@app.command("query")
@handle_errors
def query(
    project: str = ProjectArg,
    sql: str = typer.Argument(
        ..., metavar="SQL", help="DuckDB SQL naming the project's datasets ('-' in names as '_'); '-' reads stdin."
    ),
    limit: int = typer.Option(100, "--limit", "-n", min=1, help="At most this many rows."),
    as_json: bool = JsonOpt,
) -> None:
    """Run a read-only SQL query over the project's datasets and the products granted to it."""
    text = sys.stdin.read() if sql == "-" else sql
    data = client().datasets.query(project, text, limit=limit)
    if as_json:
        print_json(data)
        return
    print_data(data)


# -- writing ------------------------------------------------------------------------------------


@app.command("upload")
@handle_errors
def upload(
    project: str = ProjectArg,
    file: Path = UploadFileArg,
    to: str = typer.Option(..., "--to", help="The dataset to write (created if new)."),
    format: UploadFormat | None = UploadFormatOpt,
    mode: Mode = AppendOpt,
    evolve: bool = EvolveOpt,
    delimiter: str | None = typer.Option(None, "--delimiter", help="CSV: the field delimiter (default ',')."),
    encoding: str | None = typer.Option(None, "--encoding", help="CSV: the text encoding (default utf-8)."),
    as_json: bool = JsonOpt,
) -> None:
    """Upload a file as a new version of a dataset; the dataset's contract is checked first."""
    v = client().datasets.upload(
        project,
        to,
        file,
        format=format.value if format else None,
        mode=mode.value,
        evolve=evolve,
        delimiter=delimiter,
        encoding=encoding,
    )
    if as_json:
        print_json(v)
        return
    typer.echo(f"uploaded {file.name} to {to}: version {v.version}, {v.rows:,} rows ({size(v.bytes)})")


@app.command("export")
@handle_errors
def export(
    project: str = ProjectArg,
    name: str = NameArg,
    file: Path = ExportFileArg,
    format: ExportFormat | None = ExportFormatOpt,
    version: int | None = VersionOpt,
) -> None:
    """Download a version as CSV, Parquet or NDJSON."""
    fmt = format.value if format else {".csv": "csv", ".json": "json", ".ndjson": "json"}.get(file.suffix, "parquet")
    out = client().datasets.export(project, name, file, version=version, format=fmt)
    which = "the latest version" if version is None else f"version {version}"
    typer.echo(f"exported {which} of {name} to {out} ({fmt}, {size(out.stat().st_size)})")


@app.command("delete")
@handle_errors
def delete(
    project: str = ProjectArg,
    name: str = NameArg,
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm: every version is deleted."),
) -> None:
    """Delete a dataset with every version."""
    if not yes:
        typer.echo(f"error: deleting {name} removes every version of it; pass --yes to confirm", err=True)
        raise typer.Exit(EXIT_ERROR)
    client().datasets.delete(project, name)
    typer.echo(f"deleted dataset {name}")


# -- contracts --------------------------------------------------------------------------------


@contract_app.command("set")
@handle_errors
def contract_set(
    project: str = ProjectArg,
    name: str = NameArg,
    file: Path = ContractFileArg,
) -> None:
    """Attach a contract (replacing any other); every later write must pass it."""
    client().datasets.set_contract(project, name, file.read_text())
    typer.echo(f"contract set on {name}; `selfserve dataset check {project} {name}` checks the current data")


@contract_app.command("show")
@handle_errors
def contract_show(project: str = ProjectArg, name: str = NameArg, as_json: bool = JsonOpt) -> None:
    """Print a dataset's contract."""
    text = client().datasets.get_contract(project, name)
    if as_json:
        print_json({"contract": text})
        return
    typer.echo(text.rstrip("\n"))


@contract_app.command("remove")
@handle_errors
def contract_remove(project: str = ProjectArg, name: str = NameArg) -> None:
    """Remove a dataset's contract: later writes are no longer checked."""
    client().datasets.remove_contract(project, name)
    typer.echo(f"removed the contract of {name}")


@app.command("check")
@handle_errors
def check(
    project: str = ProjectArg, name: str = NameArg, version: int | None = VersionOpt, as_json: bool = JsonOpt
) -> None:
    """Check a version (default the latest) against the dataset's contract; exits 1 if a check fails."""
    report = client().datasets.check(project, name, version=version)
    which = "the latest version" if version is None else f"version {version}"
    if as_json:
        print_json(report)
    elif report.passed:
        typer.echo(f"{which} of {name} passes its contract")
    if report.passed:
        return
    n = len(report.failures)
    typer.echo(f"error: {which} of {name} fails {n} contract check{'' if n == 1 else 's'}", err=True)
    if not as_json:
        for f in report.failures:
            typer.echo(f"- {f.message}", err=True)
            for sample in f.samples[:3]:
                typer.echo(f"    e.g. {_cell(sample)}", err=True)
    raise typer.Exit(EXIT_ERROR)


# -- jobs ---------------------------------------------------------------------------------------


@app.command("jobs")
@handle_errors
def jobs(project: str = ProjectArg, as_json: bool = JsonOpt) -> None:
    """The project's recent ingest and transform jobs, newest first."""
    found = client().jobs.list(project)
    if as_json:
        print_json(found)
        return
    print_table([_job_row(j) for j in found], JOB_COLUMNS)


@app.command("job")
@handle_errors
def job(
    project: str = ProjectArg,
    job_id: int = typer.Argument(..., metavar="ID", help="The job's id, from `dataset jobs`."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job to end, showing its progress."),
    timeout: float = TimeoutOpt,
    as_json: bool = JsonOpt,
) -> None:
    """One job: its state, progress and result (with --wait: once it has ended)."""
    c = client()
    j = c.jobs.get(project, job_id)
    if wait:
        j = wait_for_job(c, project, j, timeout=timeout, progress=not as_json)
    if as_json:
        print_json(j)
        return
    print_record(_job_row(j), [*JOB_COLUMNS, "created_by", "started_at", "params", "result"])
