"""The SDK's paths, declared once in ``_routes.py``, match the server's OpenAPI in both directions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from selfserve.client._routes import ROUTES
from selfserve.server import API_PREFIX, create_app
from selfserve.settings import Settings
from selfserve.store import Store

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def operations(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str]]:
    home = tmp_path_factory.mktemp("home")
    app = create_app(Settings(home=home), Store("sqlite://"))
    spec: dict[str, Any] = app.openapi()
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS and path.startswith(API_PREFIX + "/")
    }


@pytest.mark.parametrize(("name", "route"), sorted(ROUTES.items()), ids=sorted(ROUTES))
def test_sdk_route_exists_in_the_openapi(operations: set[tuple[str, str]], name: str, route: tuple[str, str]) -> None:
    method, path = route
    assert (method, path) in operations, f"SDK route {name} = {method} {path} is not served"


def test_every_api_operation_is_reachable_from_the_sdk(operations: set[tuple[str, str]]) -> None:
    missing = operations - set(ROUTES.values())
    assert not missing, f"operations the SDK cannot reach (add them to client/_routes.py): {sorted(missing)}"


def test_routes_are_declared_once() -> None:
    values = list(ROUTES.values())
    assert len(values) == len(set(values)), "two SDK names for one operation"
    assert all(re.fullmatch(r"[a-z_]+(\.[a-z_]+)?", name) for name in ROUTES)


def test_sdk_builds_urls_only_from_routes() -> None:
    """No hand-written API path anywhere else in the SDK's source."""
    src = Path(__import__("selfserve.client", fromlist=["x"]).__file__).parent
    for path in src.glob("*.py"):
        if path.name == "_routes.py":
            continue
        assert "/api/v1" not in path.read_text(), f"{path.name} writes an API path itself"
