from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import typer

from selfserve.cli._common import (
    EXIT_ERROR,
    JsonOpt,
    client,
    handle_errors,
    output,
    parse_pairs,
    print_json,
    print_record,
    read_secret,
)

app = typer.Typer(
    help="Sources: the databases, files, S3 buckets, Redis, REST APIs and NATS streams that `ingest` reads. "
    "Secrets are encrypted at rest and never shown again.",
    no_args_is_help=True,
)
COLUMNS = ["name", "kind", "config", "secrets", "created_by", "created_at"]


class Kind(StrEnum):
    file = "file"
    s3 = "s3"
    postgres = "postgres"
    mysql = "mysql"
    sqlite = "sqlite"
    redis = "redis"
    rest = "rest"
    nats = "nats"


def setting_value(text: str) -> Any:
    """A ``--set`` or ``--option`` value: JSON when it is a list or an object, text otherwise (the server
    converts text to the setting's type, e.g. ``port=5433``)."""
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise typer.BadParameter(f"{text!r} is not valid JSON: {e.msg}") from None
    return text


def parse_settings(items: Sequence[str], what: str = "KEY") -> dict[str, Any]:
    return {k: setting_value(v) for k, v in parse_pairs(items, what).items()}


def _check_settings(items: list[str]) -> list[str]:
    # Checked while the command line is parsed, so that a malformed pair is a usage error (exit 2).
    parse_settings(items)
    return items


def _check_secrets(items: list[str]) -> list[str]:
    parse_pairs(items, "KEY")
    return items


KindOpt = typer.Option(..., "--kind", "-k", help="What the source is.")
SettingsOpt = typer.Option(
    [],
    "--set",
    metavar="KEY=VALUE",
    callback=_check_settings,
    help="Any other setting of the kind, e.g. --set host=db --set port=5433 (repeatable; JSON for lists and objects).",
)
SecretsOpt = typer.Option(
    [],
    "--secret",
    metavar="KEY=VALUE",
    callback=_check_secrets,
    help="A secret setting (repeatable; JSON for objects). It shows in your shell history: prefer --secret-stdin.",
)
SecretStdinOpt = typer.Option(
    [],
    "--secret-stdin",
    metavar="KEY",
    help="Read secret KEY from stdin (repeatable: one line each, after the --password-stdin line).",
)


@app.command("add")
@handle_errors
def add(
    project: str = typer.Argument(..., help="The project."),
    name: str = typer.Argument(..., help="The source's name: a-z, 0-9 and '-'."),
    kind: Kind = KindOpt,
    url: str | None = typer.Option(
        None, "--url", help="Where it is, e.g. postgresql://user@host:5432/db (a password in it becomes a secret)."
    ),
    user: str | None = typer.Option(None, "--user", help="The user name to connect as."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password (a secret) from stdin."),
    settings: list[str] = SettingsOpt,
    secrets: list[str] = SecretsOpt,
    secret_stdin: list[str] = SecretStdinOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Add a source to a project; `source test` then checks that it answers."""
    config: dict[str, Any] = {k: v for k, v in {"url": url, "user": user}.items() if v is not None}
    config.update(parse_settings(settings))
    secret_values = parse_pairs(secrets, "KEY")
    stdin_keys = (["password"] if password_stdin else []) + list(secret_stdin)
    for key in stdin_keys:
        value = read_secret(key, True)
        if not value:
            raise typer.BadParameter(f"no value for secret {key!r} on stdin")
        secret_values[key] = value
    # A secret that is a JSON object (e.g. a REST source's secret_headers) cannot travel in `secrets`
    # (text only); sent with the settings, the server moves it to the encrypted secrets all the same.
    for key, value in list(secret_values.items()):
        if value[:1] == "{":
            config[key] = setting_value(value)
            del secret_values[key]
    s = client().sources.add(project, name, kind.value, config, secrets=secret_values)
    if as_json:
        print_json(s)
        return
    stored = f"; secrets stored encrypted: {', '.join(s.secrets)}" if s.secrets else ""
    typer.echo(f"added {s.kind} source {s.name} to {project}{stored}")


@app.command("list")
@handle_errors
def list_(project: str = typer.Argument(..., help="The project."), as_json: bool = JsonOpt) -> None:
    """A project's sources (the names of their secrets, never the values)."""
    output(client().sources.list(project), as_json, COLUMNS)


@app.command("show")
@handle_errors
def show(project: str, name: str, as_json: bool = JsonOpt) -> None:
    """One source's settings and the names of its secrets."""
    s = client().sources.get(project, name)
    if as_json:
        print_json(s)
        return
    print_record(s, ["name", "kind", "secrets", "created_by", "created_at", "updated_at"])
    typer.echo("config:")
    for key, value in s.config.items():
        typer.echo(f"  {key} = {json.dumps(value) if isinstance(value, list | dict) else value}")


@app.command("test")
@handle_errors
def test(project: str, name: str, as_json: bool = JsonOpt) -> None:
    """Check that a source answers with its settings and credentials; exits 1 if it does not."""
    result = client().sources.test(project, name)
    if as_json:
        print_json(result)
    elif result.ok:
        typer.echo(f"ok: {result.message}")
    if not result.ok:
        typer.echo(f"error: {result.message}", err=True)
        raise typer.Exit(EXIT_ERROR)


@app.command("remove")
@handle_errors
def remove(project: str, name: str) -> None:
    """Remove a source and its secrets (datasets loaded from it stay)."""
    client().sources.remove(project, name)
    typer.echo(f"removed source {name}")
