"""What every CLI command shares: the error boundary, output as tables or JSON, the client."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from selfserve.client import Client

F = TypeVar("F", bound=Callable[..., Any])

JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")

# Exit codes: 1 for any platform error, 2 for usage errors (Typer's own), 3 when unreachable.
EXIT_ERROR = 1
EXIT_UNAVAILABLE = 3

# Clients opened by the running command; the error boundary closes them when the command ends.
_opened: list[Client] = []


def handle_errors(fn: F) -> F:
    """The CLI's one error boundary: a SelfServeError becomes its message on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from selfserve.errors import SelfServeError, ServiceUnavailable

        try:
            return fn(*args, **kwargs)
        except SelfServeError as e:
            typer.echo(f"error: {e.message}", err=True)
            raise typer.Exit(EXIT_UNAVAILABLE if isinstance(e, ServiceUnavailable) else EXIT_ERROR) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        finally:
            while _opened:
                _opened.pop().close()

    return wrapper  # type: ignore[return-value]


def client() -> Client:
    from selfserve.client import Client

    c = Client()
    _opened.append(c)
    return c


def _plain(value: Any, *, json_mode: bool = True) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json" if json_mode else "python")
    if isinstance(value, list | tuple):
        return [_plain(v, json_mode=json_mode) for v in value]
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(_plain(value), indent=2, default=str))


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if hasattr(v, "strftime"):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cell(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_cell(x) for x in v)
    return str(v)


def print_table(rows: Iterable[Any], columns: Sequence[str], *, title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        table.add_column(c)
    count = 0
    for row in rows:
        data = _plain(row, json_mode=False)
        table.add_row(*(_cell(data.get(c) if isinstance(data, dict) else getattr(row, c, None)) for c in columns))
        count += 1
    if count == 0:
        typer.echo("(none)")
        return
    Console(width=max(100, Console().width)).print(table)


def output(value: Any, as_json: bool, columns: Sequence[str], *, title: str | None = None) -> None:
    if as_json:
        print_json(value)
    elif isinstance(value, list):
        print_table(value, columns, title=title)
    else:
        print_record(value, columns)


def print_record(value: Any, fields: Sequence[str] | None = None) -> None:
    data = _plain(value, json_mode=False)
    keys = fields or list(data)
    width = max(len(k) for k in keys)
    for k in keys:
        typer.echo(f"{k.ljust(width)}  {_cell(data.get(k))}")


def parse_pairs(items: Sequence[str], what: str) -> dict[str, str]:
    """``["storage=20GB", "runs=4"]`` -> dict; a clear usage error otherwise."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise typer.BadParameter(f"{item!r} is not {what}=VALUE")
        out[key.strip()] = value.strip()
    return out


def read_secret(prompt: str, from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt(prompt, hide_input=True)
