"""Top-level commands of the embedded platform: ``up``, ``status``, ``down``, ``demo``."""

from __future__ import annotations

import typer

from selfserve.cli._common import JsonOpt, handle_errors, print_json, print_table


@handle_errors
def up(
    api_port: int | None = typer.Option(None, "--api-port", help="Port of the API (setting server.api_port)."),
    console_port: int | None = typer.Option(
        None, "--console-port", help="Port of the console (setting server.console_port)."
    ),
    no_demo: bool = typer.Option(False, "--no-demo", help="Do not create the demo content."),
    # A first start creates Prefect's and MLflow's databases side by side: over a minute on two busy cores.
    timeout: float = typer.Option(180.0, "--timeout", min=1, help="Seconds the services may take to become healthy."),
) -> None:
    """Start the platform on this machine (API and console) and wait until it is healthy."""
    from selfserve import runtime
    from selfserve.errors import SelfServeError

    settings = runtime.configure(api_port=api_port, console_port=console_port)
    result = runtime.up(settings, timeout=timeout, progress=lambda line: typer.echo(f"  {line}"))
    typer.echo(f"selfserve is up ({result.seconds:.1f} s):")
    width = max(len(s.name) for s in result.services)
    for s in result.services:
        typer.echo(f"  {s.name.ljust(width)}  {s.url}")
    if result.admin:
        name, password = result.admin
        typer.echo(f"  admin user      {name}")
        typer.echo(f"  admin password  {password}")
        typer.echo(f"  (the password is shown once; also saved 0600 in {result.credentials_file})")
        try:
            url = runtime.login_admin(settings, name, password)
            typer.echo(f"the CLI is logged in as {name} at {url}")
        except SelfServeError as e:
            typer.echo(f"warning: could not log the CLI in as {name}: {e.message}", err=True)
    if not no_demo:
        _seed(settings.api_url, during_up=True)
    typer.echo("`selfserve status` shows health and memory; `selfserve down` stops everything.")


def _seed(url: str | None, *, during_up: bool = False) -> None:
    from selfserve.client import Client
    from selfserve.errors import SelfServeError, Unauthenticated
    from selfserve.runtime.demo import demo

    try:
        with Client(url=url) as c:
            for item in demo(c):
                typer.echo(f"demo: {item}")
    except Unauthenticated as e:
        if not during_up:
            raise
        typer.echo(f"demo skipped: {e.message} (log in with `selfserve login`, then run `selfserve demo`)", err=True)
    except SelfServeError as e:
        if not during_up:
            raise
        typer.echo(f"warning: demo seeding failed: {e.message}; retry with `selfserve demo`", err=True)


def _uptime(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


@handle_errors
def status(as_json: bool = JsonOpt) -> None:
    """Each service's state, health, memory and uptime. Exits 1 unless every service is healthy."""
    from selfserve import runtime

    report = runtime.status()
    if as_json:
        print_json(report.to_dict())
    elif not report.services:
        typer.echo("selfserve is not running (start it with `selfserve up`)")
    else:
        rows = [
            {
                "service": s.name,
                "state": s.state,
                "pid": s.pid,
                "url": s.url,
                "health": s.health,
                "rss_mib": f"{s.rss_mib:.0f}" if s.state != "stopped" else None,
                "uptime": _uptime(s.uptime_seconds),
            }
            for s in report.services
        ]
        print_table(rows, ["service", "state", "pid", "url", "health", "rss_mib", "uptime"])
        typer.echo(f"total resident memory: {report.total_rss_bytes / 2**20:.0f} MiB")
    if not report.healthy:
        raise typer.Exit(1)


@handle_errors
def down(
    timeout: float = typer.Option(15.0, "--timeout", min=0, help="Seconds to wait after SIGTERM before SIGKILL."),
) -> None:
    """Stop every service of the platform. Fine to run when nothing runs."""
    from selfserve import runtime

    result = runtime.down(timeout=timeout)
    if not result.running:
        typer.echo("selfserve is not running")
        return
    typer.echo("stopped " + ", ".join(f"{s.name} (pid {s.pid})" for s in result.stopped))


@handle_errors
def demo() -> None:
    """Create the demo content on the running platform, as the saved login (idempotent)."""
    _seed(None)


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("status")(status)
    app.command("down")(down)
    app.command("demo")(demo)
