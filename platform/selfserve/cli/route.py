"""``selfserve route``: stable predict endpoints over deployments: canary, A/B, shadow, blue/green, rollback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from selfserve.cli._common import EXIT_ERROR, JsonOpt, client, handle_errors, print_json, print_record

if TYPE_CHECKING:
    from selfserve.schemas.serving import RoutePublic, RouteRevisionPublic, RouteSpec, TargetStats

app = typer.Typer(
    help="Routes: a stable predict endpoint over deployments; canary, A/B, shadow, blue/green, history, rollback.",
    no_args_is_help=True,
)
COLUMNS = ["name", "targets", "sticky_key", "shadow", "feature_view", "revision", "updated_at"]
SHOW_FIELDS = [
    "name",
    "targets",
    "sticky_key",
    "shadow",
    "feature_view",
    "revision",
    "predict_path",
    "created_by",
    "created_at",
    "updated_at",
]
HISTORY_COLUMNS = ["revision", "action", "targets", "options", "reason", "actor", "at"]
STATS_COLUMNS = ["target", "requests", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms"]
ProjectArg = typer.Argument(..., help="The project.")
NameArg = typer.Argument(..., help="The route, from `route list`.")
ReasonOpt = typer.Option("", "--reason", "-r", help="Why: kept in the route's history and the audit trail.")


def parse_to(items: list[str]) -> dict[str, int]:
    """``--to`` values -> ``{deployment: percent}``; a usage error when one is not NAME or NAME=PERCENT."""
    from selfserve.client._serving import parse_targets
    from selfserve.errors import InvalidInput

    try:
        return parse_targets(items)
    except InvalidInput as e:
        raise typer.BadParameter(e.message) from None


def _check_to(items: list[str]) -> list[str]:
    parse_to(items)
    return items


ToOpt = typer.Option(
    ...,
    "--to",
    "-t",
    metavar="DEPLOYMENT[=PERCENT]",
    callback=_check_to,
    help="A target and its share of traffic; repeat for a split (weights add up to 100). One bare name takes it all.",
)
StickyOpt = typer.Option(
    None, "--sticky-key", metavar="COLUMN", help="A/B: rows with the same value of this input always reach one target."
)
ShadowOpt = typer.Option(
    None, "--shadow", metavar="DEPLOYMENT", help="Also send a copy of every request here; its answers are only logged."
)
FeatureViewOpt = typer.Option(
    None, "--feature-view", metavar="VIEW", help="Fill each row's missing inputs from this feature view, by its key."
)


def targets_text(spec: RouteSpec) -> str:
    """``clf-v7 90%, clf-v8 10%``."""
    return ", ".join(f"{name} {weight}%" for name, weight in spec.targets.items())


def _spec_row(spec: RouteSpec) -> dict[str, Any]:
    return {
        "targets": targets_text(spec),
        "sticky_key": spec.sticky_key,
        "shadow": spec.shadow,
        "feature_view": spec.feature_view,
    }


def _row(r: RoutePublic) -> dict[str, Any]:
    return {**r.model_dump(), **_spec_row(r.spec)}


def options_text(spec: RouteSpec) -> str:
    """``sticky key customer_id, shadow clf-v9``: what the spec sets besides its targets."""
    given = (("sticky key", spec.sticky_key), ("shadow", spec.shadow), ("feature view", spec.feature_view))
    return ", ".join(f"{label} {value}" for label, value in given if value)


def _revision_row(h: RouteRevisionPublic) -> dict[str, Any]:
    return {
        **h.model_dump(),
        "targets": targets_text(h.spec),
        "options": options_text(h.spec) or None,
        "reason": h.reason or None,
    }


def _stats_row(t: TargetStats) -> dict[str, Any]:
    from selfserve.cli.experiment import number

    return {
        "target": f"{t.target} (shadow)" if t.shadow else t.target,
        "requests": f"{t.requests:,}",
        "errors": f"{t.errors:,}",
        "error_rate": f"{t.errors / t.requests:.1%}" if t.requests else None,
        "p50_ms": number(t.p50_ms),
        "p95_ms": number(t.p95_ms),
        "p99_ms": number(t.p99_ms),
    }


def _report(r: RoutePublic, as_json: bool, done: str) -> None:
    if as_json:
        print_json(r)
        return
    options = options_text(r.spec)
    more = f"; {options}" if options else ""
    typer.echo(f"{done} route {r.name} (revision {r.revision}): {targets_text(r.spec)}{more}")


@app.command("list")
@handle_errors
def list_(project: str = ProjectArg, as_json: bool = JsonOpt) -> None:
    """The project's routes and where each sends traffic."""
    from selfserve.cli.dataset import print_rows

    found = client().routes.list(project)
    if as_json:
        print_json(found)
        return
    print_rows([_row(r) for r in found], COLUMNS, keep=("name",))


@app.command("show")
@handle_errors
def show(project: str = ProjectArg, name: str = NameArg, as_json: bool = JsonOpt) -> None:
    """A route: its targets and weights, sticky key, shadow, feature view, and where to POST predictions."""
    r = client().routes.get(project, name)
    if as_json:
        print_json(r)
        return
    print_record(_row(r), SHOW_FIELDS)


@app.command("create")
@handle_errors
def create(
    project: str = ProjectArg,
    name: str = typer.Argument(..., help="The new route's name, e.g. score (40 characters at most)."),
    to: list[str] = ToOpt,
    sticky_key: str | None = StickyOpt,
    shadow: str | None = ShadowOpt,
    feature_view: str | None = FeatureViewOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a route over one or more deployments; predictions go to its predict endpoint."""
    r = client().routes.create(
        project, name, parse_to(to), sticky_key=sticky_key, shadow=shadow, feature_view=feature_view
    )
    _report(r, as_json, "created")
    if not as_json:
        typer.echo(f"predict with `selfserve predict {project} {r.name} ROWS`, or POST to {r.predict_path}")


@app.command("set")
@handle_errors
def set_(
    project: str = ProjectArg,
    name: str = NameArg,
    to: list[str] = ToOpt,
    sticky_key: str | None = StickyOpt,
    shadow: str | None = ShadowOpt,
    feature_view: str | None = FeatureViewOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Replace the route's spec: a canary (--to clf-v7=90 --to clf-v8=10), an A/B test, a shadow.

    The whole spec is replaced: a sticky key, shadow or feature view not given again is removed.
    `route rollback` returns to the spec before.
    """
    r = client().routes.set(
        project, name, parse_to(to), sticky_key=sticky_key, shadow=shadow, feature_view=feature_view
    )
    _report(r, as_json, "set")


@app.command("switch")
@handle_errors
def switch(
    project: str = ProjectArg,
    name: str = NameArg,
    to: str = typer.Option(..., "--to", "-t", metavar="DEPLOYMENT", help="The deployment that takes all traffic."),
    reason: str = ReasonOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Blue/green: send all traffic to one deployment at once (the sticky key, shadow and feature view stay)."""
    r = client().routes.switch(project, name, to, reason=reason)
    _report(r, as_json, "switched")


@app.command("rollback")
@handle_errors
def rollback(project: str = ProjectArg, name: str = NameArg, reason: str = ReasonOpt, as_json: bool = JsonOpt) -> None:
    """Return the route to the spec it had before the current one (recorded as a new revision)."""
    r = client().routes.rollback(project, name, reason=reason)
    _report(r, as_json, "rolled back")


@app.command("history")
@handle_errors
def history(project: str = ProjectArg, name: str = NameArg, as_json: bool = JsonOpt) -> None:
    """Every spec the route has had, newest first: who changed it, how and why."""
    from selfserve.cli.dataset import print_rows

    found = client().routes.history(project, name)
    if as_json:
        print_json(found)
        return
    print_rows([_revision_row(h) for h in found], HISTORY_COLUMNS, keep=("targets", "at"))


@app.command("stats")
@handle_errors
def stats(
    project: str = ProjectArg,
    name: str = NameArg,
    window: int = typer.Option(900, "--window", "-w", min=60, max=3600, help="Seconds of traffic to summarise."),
    as_json: bool = JsonOpt,
) -> None:
    """Requests, errors and latency (p50, p95, p99 in ms) per target over the last --window seconds."""
    from selfserve.cli.dataset import print_rows

    s = client().routes.stats(project, name, window=window)
    if as_json:
        print_json(s)
        return
    typer.echo(f"route {s.route}, last {s.window_seconds} s:")
    if not s.targets:
        typer.echo("(no requests)")
        return
    print_rows([_stats_row(t) for t in s.targets], STATS_COLUMNS, keep=("target",))


@app.command("delete")
@handle_errors
def delete(
    project: str = ProjectArg,
    name: str = NameArg,
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm: its predict endpoint stops answering."),
) -> None:
    """Delete a route; its deployments stay, and its prediction log stays as the dataset predictions-<route>."""
    if not yes:
        typer.echo(f"error: deleting {name} stops its predict endpoint; pass --yes to confirm", err=True)
        raise typer.Exit(EXIT_ERROR)
    client().routes.delete(project, name)
    typer.echo(f"deleted route {name}")
