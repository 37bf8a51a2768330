from __future__ import annotations

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, print_json, print_table

app = typer.Typer(
    help="Accounted usage of a project: storage, runs, deployments, CPU-seconds, predictions.", no_args_is_help=True
)


@app.command("show")
@handle_errors
def show(project: str, as_json: bool = JsonOpt) -> None:
    """Every counter accounted for a project."""
    u = client().quotas.usage(project)
    if as_json:
        print_json(u)
        return
    rows = [{"resource": i.resource, "amount": i.shown, "updated_at": i.updated_at} for i in u.items]
    print_table(rows, ["resource", "amount", "updated_at"], title=f"usage of {u.project}")
