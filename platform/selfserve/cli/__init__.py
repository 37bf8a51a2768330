"""The ``selfserve`` command: one Typer module per noun. Commands call the SDK only, and import
heavy modules inside the function so that ``selfserve --help`` starts fast."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="selfserve",
    help="Self-service data and ML platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: Rich-rendered help costs ~0.18 s of start-up (it imports markdown-it).
    rich_markup_mode=None,
)

# Modules whose commands sit at the top level (``selfserve up``, ``selfserve login``): each has
# ``register(app)``.
TOP_LEVEL = ["runtime", "auth", "ingest", "transform", "train", "predict"]

# (module, command name) for nouns with sub-commands (``selfserve project create``); order is --help's.
NOUNS = [
    ("user", "user"),
    ("token", "token"),
    ("project", "project"),
    ("member", "member"),
    ("quota", "quota"),
    ("usage", "usage"),
    ("audit", "audit"),
    ("source", "source"),
    ("dataset", "dataset"),
    ("product", "product"),
    ("flow", "flow"),
    ("run", "run"),
    ("mlflow", "mlflow"),
    ("experiment", "experiment"),
    ("model", "model"),
    ("deployment", "deployment"),
    ("route", "route"),
    ("feature", "feature"),
    ("monitor", "monitor"),
    ("alert", "alert"),
]


def _register() -> None:
    for module in TOP_LEVEL:
        importlib.import_module(f"selfserve.cli.{module}").register(app)
    for module, name in NOUNS:
        mod = importlib.import_module(f"selfserve.cli.{module}")
        app.add_typer(mod.app, name=name)


_register()


def main() -> None:
    app(prog_name="selfserve")
