"""``selfserve predict`` and ``selfserve feedback``: predictions through a route, and labels for them later."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from selfserve.cli._common import JsonOpt, client, handle_errors, print_json

ProjectArg = typer.Argument(..., help="The project.")
RouteArg = typer.Argument(..., help="The route, from `route list`.")
FileOpt = typer.Option(
    None, "--file", "-f", dir_okay=False, help="Read the input JSON from this file instead ('-' for stdin)."
)
RequestIdOpt = typer.Option(
    ..., "--request-id", metavar="ID", help="The request id a prediction answered with; repeat with --label for more."
)
LabelOpt = typer.Option(
    ...,
    "--label",
    metavar="LABEL",
    help='The true outcome: JSON when it parses (1, true, "yes"), else the text itself.',
)
Row = dict[str, Any]


def parse_rows(text: str, where: str) -> list[Row]:
    """``{"rows": [...]}``, a list of rows, or one row (an object without "rows") -> the rows."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise typer.BadParameter(f"{where} is not JSON: {e}") from None
    if isinstance(data, dict) and "rows" in data:
        data = data["rows"]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise typer.BadParameter(f'{where} must be {{"rows": [{{...}}, ...]}}, a list of rows, or one row {{...}}')
    return data


def read_rows(rows: str | None, file: Path | None) -> list[Row]:
    """The rows of the command line, from ROWS or --file (``-`` for stdin)."""
    if rows is not None and file is not None:
        raise typer.BadParameter("give the rows as ROWS or with --file, not both")
    if rows is not None:
        return parse_rows(rows, "ROWS")
    if file is None:
        raise typer.BadParameter("no rows: give them as ROWS or with --file")
    if str(file) == "-":
        return parse_rows(sys.stdin.read(), "stdin")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise typer.BadParameter(f"cannot read {file}: {e}") from None
    return parse_rows(text, str(file))


def parse_label(value: str) -> Any:
    """A label as JSON when it parses as a JSON scalar (``1``, ``true``, ``"yes"``), else the text itself."""
    try:
        label = json.loads(value)
    except ValueError:
        return value
    if isinstance(label, list | dict):
        raise typer.BadParameter(f"label {value!r} is not a number, true/false, null or a string")
    return label


@handle_errors
def predict(
    project: str = ProjectArg,
    route: str = RouteArg,
    rows: str | None = typer.Argument(
        None,
        metavar="ROWS",
        help='The input as JSON: {"rows": [{...}, ...]}, a list of rows, or one row {"age": 42, ...}.',
    ),
    file: Path | None = FileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Predict with a route: send rows, print the predictions and the request id (for `feedback`).

    Exits 3 when the deployment that would answer is not ready or not answering.
    """
    answer = client().routes.predict(project, route, read_rows(rows, file))
    if as_json:
        print_json(answer)
        return
    from selfserve.cli.dataset import print_rows

    typer.echo(
        f"request {answer.request_id}: route {answer.route}, answered by {answer.target} "
        f"(model {answer.model} version {answer.model_version})"
    )
    print_rows([{"row": i, "prediction": p} for i, p in enumerate(answer.predictions)], ["row", "prediction"])


@handle_errors
def feedback(
    project: str = ProjectArg,
    route: str = RouteArg,
    request_ids: list[str] = RequestIdOpt,
    labels: list[str] = LabelOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Label earlier predictions by request id; the labels land in the dataset feedback-<route>."""
    if len(request_ids) != len(labels):
        raise typer.BadParameter(f"{len(request_ids)} --request-id for {len(labels)} --label: give one label each")
    given = {rid: parse_label(label) for rid, label in zip(request_ids, labels, strict=True)}
    if len(given) != len(request_ids):
        raise typer.BadParameter("each --request-id may be given once")
    result = client().routes.feedback(project, route, given)
    if as_json:
        print_json(result)
        return
    typer.echo(
        f"accepted {result.accepted} label{'' if result.accepted == 1 else 's'} for route {route}: "
        f"written to dataset {result.dataset} with the prediction log's next flush"
    )


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
    app.command("feedback")(feedback)
