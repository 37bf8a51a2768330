"""Property-based tests of the served OpenAPI: whatever schemathesis sends, the API never answers 5xx.

A live uvicorn server on a fresh SQLite platform; every operation is fuzzed as an admin (with
the project and user path parameters pointing at a seeded project and member, so the calls reach
past the 404s) and once with no token. Bounded and derandomized: the same cases on every run.

No Prefect or MLflow server runs here, so pipelines and models are off: a pipeline or model route
that gets past validation and authorization answers 503 ``service_unavailable``, the one 5xx allowed
(and only on those routes; ``tests/integration/pipelines`` and ``tests/integration/ml`` fuzz nothing
but run them against the real engines).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from selfserve.server import create_app
from selfserve.settings import Settings, get_settings
from selfserve.store import Store
from tests.support import LiveServer, Platform, make_platform, postgres_database

pytestmark = pytest.mark.integration

EXAMPLES = 25
METHODS = {"get", "post", "put", "patch", "delete"}
PROJECT, MEMBER = "demo", "alice"
SEEDED = {"project": PROJECT, "user": MEMBER}


class Target:
    """The live API, with a way to mint admin tokens and to put the seeded state back."""

    def __init__(self, platform: Platform, server: LiveServer) -> None:
        self.platform = platform
        self.url = server.url
        self.http = httpx.Client(base_url=server.url, timeout=30)

    def fresh_admin_token(self) -> str:
        """A new admin token for each case: a fuzzed logout or password reset cannot lock the run out."""
        from sqlalchemy import select

        from selfserve.policy import tokens
        from selfserve.store.tables import Principal

        with self.platform.store.begin() as s:
            admin_id = s.scalar(select(Principal.id).where(Principal.name == "admin"))
            assert admin_id is not None
            _, plaintext = tokens.issue(s, admin_id, name="fuzz", expires="1h")
        return plaintext

    def ensure_seeded(self) -> None:
        """A project with a member, put back if a fuzzed call deleted or changed them."""
        from sqlalchemy import select

        from selfserve.store.tables import Membership, Principal, Project

        headers = {"Authorization": f"Bearer {self.fresh_admin_token()}"}
        with self.platform.store.session() as s:
            has_project = s.scalar(select(Project.id).where(Project.name == PROJECT)) is not None
            has_user = s.scalar(select(Principal.id).where(Principal.name == MEMBER)) is not None
            is_member = (
                has_project
                and s.scalar(
                    select(Membership.id)
                    .join(Project)
                    .join(Principal, Membership.principal_id == Principal.id)
                    .where(Project.name == PROJECT, Principal.name == MEMBER)
                )
                is not None
            )
        if not has_project:
            made = self.http.post("/api/v1/projects", json={"name": PROJECT}, headers=headers)
            assert made.status_code == 201, made.text
        if not has_user:
            made = self.http.post("/api/v1/users", json={"name": MEMBER}, headers=headers)
            assert made.status_code == 201, made.text
        if not is_member:
            body = {"user": MEMBER, "role": "viewer"}
            added = self.http.post(f"/api/v1/projects/{PROJECT}/members", json=body, headers=headers)
            assert added.status_code == 201, added.text

    def close(self) -> None:
        jobs = getattr(self.platform.app.state, "jobs", None)
        if jobs is not None:  # fuzzed ingests and transforms run on: let them end before the DB goes
            jobs.wait_idle(60)
        self.http.close()


PG_ENV = "SELFSERVE_TEST_POSTGRES_URL"
BACKENDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=[pytest.mark.postgres, pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} is not set")],
    ),
]


@pytest.fixture(scope="module", params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    # Module-scoped, so the per-test isolation of conftest does not apply yet: do the same here.
    tmp = tmp_path_factory.mktemp("schemathesis")
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("SELFSERVE_") and key not in ("SELFSERVE_CONFIG_FILE", PG_ENV):
                mp.delenv(key)
        mp.setenv("SELFSERVE_HOME", str(tmp / "home"))
        mp.setenv("SELFSERVE_CONFIG_DIR", str(tmp / "config"))
        mp.setenv("SELFSERVE_PIPELINES__ENABLED", "false")
        mp.setenv("SELFSERVE_MODELS__ENABLED", "false")
        get_settings.cache_clear()
        with contextlib.ExitStack() as stack:
            if request.param == "sqlite":
                url = f"sqlite:///{tmp / 'meta.db'}"
            else:
                url = stack.enter_context(postgres_database(os.environ[PG_ENV]))
            platform = make_platform(tmp / "home", url)
            stack.callback(platform.close)
            server = stack.enter_context(LiveServer(platform.app))
            t = Target(platform, server)
            stack.callback(t.close)
            t.ensure_seeded()
            yield t
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def api_schema(target: Target) -> Any:
    return schemathesis.openapi.from_url(f"{target.url}/api/v1/openapi.json")


FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _operations() -> list[str]:
    """Every operation of the app's OpenAPI, as "METHOD /path", read when the tests are collected."""
    home = Path(tempfile.gettempdir()) / "selfserve-route-listing-unused"
    spec = create_app(Settings(home=home), Store("sqlite://")).openapi()
    return [f"{m.upper()} {p}" for p, item in spec["paths"].items() for m in item if m in METHODS]


OPERATIONS = _operations()


def _strategy(api_schema: Any, label: str) -> Any:
    op = api_schema.find_operation_by_label(label)
    assert op is not None, f"{label} is not in the served OpenAPI"
    modes = [op.as_strategy(GenerationMode.POSITIVE)]
    # An operation with nothing to get wrong has no negative cases.
    with contextlib.suppress(Exception):
        modes.append(op.as_strategy(GenerationMode.NEGATIVE))
    return st.one_of(modes)


# Routes that need Prefect (flows, runs) or MLflow (experiments, models, the caller's own account at
# mlflow; runs/compare is under runs).
PIPELINE_PREFIXES = tuple(
    f"/api/v1/projects/{{project}}/{noun}" for noun in ("flows", "runs", "experiments", "models", "mlflow")
)


def _pipelines_off(case: Any, response: Any) -> bool:
    """A pipeline or model route's 503 for want of Prefect or MLflow (see the module docstring); any other 5xx
    is a failure."""
    if response.status_code != 503 or not case.operation.path.startswith(PIPELINE_PREFIXES):
        return False
    try:
        return bool(response.json()["error"]["code"] == "service_unavailable")
    except (ValueError, KeyError, TypeError):
        return False


def _check(case: Any, response: Any, *, authenticated: bool) -> None:
    # Without a token every pipeline route must answer 401 before it finds pipelines off.
    if not (authenticated and _pipelines_off(case, response)):
        case.validate_response(response, checks=[not_a_server_error])


def _aim_at_seeded(case: Any) -> None:
    """Point path parameters at the seeded objects, so most calls reach the code behind the 404s."""
    params = case.path_parameters or {}
    for key, value in SEEDED.items():
        if key in params:
            params[key] = value
    if "name" in params and case.path.startswith("/api/v1/users/"):
        params["name"] = MEMBER


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_server_error_as_admin(api_schema: Any, target: Target, label: str) -> None:
    @FUZZ
    @given(case=_strategy(api_schema, label))
    def fuzz(case: Any) -> None:
        _aim_at_seeded(case)
        target.ensure_seeded()
        response = case.call(headers={"Authorization": f"Bearer {target.fresh_admin_token()}"})
        _check(case, response, authenticated=True)

    fuzz()


@pytest.mark.store_independent  # refused before any query but the token lookup, which the admin cases cover
@pytest.mark.parametrize("label", OPERATIONS)
def test_no_server_error_without_a_token(api_schema: Any, target: Target, label: str) -> None:
    @FUZZ
    @given(case=_strategy(api_schema, label))
    def fuzz(case: Any) -> None:
        response = case.call()
        _check(case, response, authenticated=False)
        public = case.path in ("/api/v1/health", "/api/v1/auth/login")
        assert public or response.status_code >= 400, f"{label} answered {response.status_code} without a token"

    fuzz()


def test_every_operation_is_fuzzed(api_schema: Any, target: Target) -> None:
    """The schema the fuzzer reads is the app's: nothing is left out for being unparseable."""
    ops = [r.ok() for r in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in ops} == set(OPERATIONS)
