"""``selfserve``'s public API: a sorted ``__all__`` that is exactly what it should be, and a light import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import selfserve

EXPECTED = [
    "Client",
    "Conflict",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "SelfServeError",
    "ServiceUnavailable",
    "Unauthenticated",
    "__version__",
]
HEAVY = [
    "fastapi",
    "sqlalchemy",
    "prefect",
    "mlflow",
    "streamlit",
    "httpx",
    "starlette",
    "uvicorn",
    "alembic",
    "polars",
    "duckdb",
    "pyarrow",
    "pandas",
    "deltalake",
    "bentoml",
    "evidently",
]


def test_all_is_sorted_and_exact() -> None:
    assert selfserve.__all__ == sorted(selfserve.__all__)
    assert selfserve.__all__ == EXPECTED


def test_every_exported_name_resolves() -> None:
    from selfserve import errors
    from selfserve.client import Client

    for name in selfserve.__all__:
        assert getattr(selfserve, name) is not None, name
    assert selfserve.Client is Client
    assert selfserve.NotFound is errors.NotFound
    assert issubclass(selfserve.NotFound, selfserve.SelfServeError)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="Nope"):
        selfserve.Nope  # type: ignore[attr-defined]  # noqa: B018


def test_import_is_light() -> None:
    code = f"import json, sys; import selfserve; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == []


def test_errors_import_is_light() -> None:
    """``from selfserve import NotFound`` (e.g. in a CLI's except clause) loads no client or server."""
    code = (
        "import json, sys; from selfserve import NotFound, SelfServeError; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == []
