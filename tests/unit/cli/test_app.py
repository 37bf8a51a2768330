from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from selfserve.cli import NOUNS, app

# What `selfserve --help` must not pay for: the SDK's HTTP and schema stack, the server, the store, the engines.
HEAVY = [
    "httpx",
    "pydantic",
    "pydantic_settings",
    "sqlalchemy",
    "fastapi",
    "uvicorn",
    "alembic",
    "prefect",
    "mlflow",
    "selfserve.client",
    "selfserve.schemas",
    "selfserve.settings",
    "selfserve.server",
    "selfserve.store",
]


def test_importing_the_cli_loads_nothing_heavy() -> None:
    code = "import json, sys, selfserve.cli; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout))
    assert [m for m in HEAVY if m in loaded] == []


def test_help_lists_every_command() -> None:
    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0, r.output
    listed = {line.split()[0] for line in r.stdout.split("Commands:", 1)[1].splitlines() if line.strip()}
    for name in ["login", "logout", "whoami", "password", *(n for _, n in NOUNS)]:
        assert name in listed, name


@pytest.mark.parametrize("noun", [n for _, n in NOUNS])
def test_every_noun_has_help(noun: str) -> None:
    r = CliRunner().invoke(app, [noun, "--help"])
    assert r.exit_code == 0, r.output
    assert f"Usage: selfserve {noun}" in r.stdout
