"""The authorization matrix, generated from the app's own route list.

Every ``/api/v1`` route is called by every kind of caller (each project role, a non-member, a
platform admin, a project-scoped token, no token), against the caller's own project and a foreign
one. The status each call must get is derived from the action and scope the route declares
(``openapi_extra=action(...)``) and the roles in the settings (``config/selfserve.toml``):

- no token: 401, except on public routes;
- ``platform`` routes: admins only (403 for everyone else, scoped tokens included);
- ``project`` routes: 404 for a non-member or a token scoped to another project, 403 for a
  member whose role lacks the action, otherwise allowed;
- ``self`` routes: allowed;
- ``runner`` routes (the launchers' routes and the runs' Prefect proxy): 401 for every user
  token, since they take the platform's runner key or a run's token;
- allowed: anything but 401, 403, 404 and 5xx (and, for the pipeline and model routes only, a
  503: see ``pipelines_off``).

Two tables name what the declarations cannot say: the routes a project-scoped token may not use
(``SCOPED_TOKEN_REFUSED``: 403) and the self-service routes that act for a project named in the
body (``ACTS_FOR_BODY_PROJECT``: judged as project routes on that project).

Every mutating call (POST, PUT, PATCH, DELETE) by a known principal must leave an audit record:
a refusal under the route's action, a success under a verb of the action's noun (member:write is
recorded as member:add; see ``RECORDED_UNDER``). A POST declared as a read (a query, a check)
records nothing when it succeeds; a call without a token names no principal to record.

A new route is covered without editing this file only if it reuses known path parameters and body
models; otherwise the fill-in tables below raise, so a new route can never silently pass.
"""

from __future__ import annotations

import io
import itertools
import json
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel
from sqlalchemy import delete, func, select

from selfserve import schemas
from selfserve.policy import identity, projects, tokens
from selfserve.policy.authz import Caller
from selfserve.schemas import data, models, monitoring, pipelines, serving
from selfserve.server import API_PREFIX, create_app
from selfserve.server.deps import ACTION_KEY, SCOPE_KEY
from selfserve.server.routes import runner
from selfserve.settings import Settings, get_settings
from selfserve.store import Store
from selfserve.store.tables import (
    AuditEvent,
    FlowDeployment,
    Membership,
    Monitor,
    Principal,
    Project,
    QuotaRequest,
    ServingDeployment,
)
from tests.support import Platform, free_port

# Who may call what is decided by authorize(), not by the database: SQLite only (see tests/conftest.py).
STORE_INDEPENDENT = True

PASSWORD = "matrix-password-0123"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
SCOPES = {"project", "platform", "self", "public", "runner"}
ALLOWED = "allowed"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    route: APIRoute

    @property
    def extra(self) -> dict[str, Any]:
        return self.route.openapi_extra or {}

    @property
    def action(self) -> str | None:
        return self.extra.get(ACTION_KEY)

    @property
    def scope(self) -> str | None:
        return self.extra.get(SCOPE_KEY)

    @property
    def path_params(self) -> list[str]:
        return [p.name for p in self.route.dependant.path_params]

    @property
    def body_model(self) -> type[BaseModel] | None:
        body = self.route.body_field
        return body.field_info.annotation if body is not None else None  # type: ignore[return-value]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def api_routes(app: Any) -> list[Route]:
    """Every (method, path) the app serves under /api/v1, as FastAPI's own OpenAPI generator walks them."""
    found = []
    for ctx in iter_route_contexts(app.routes):
        route = ctx.original_route
        if not isinstance(route, APIRoute) or not (ctx.path or "").startswith(API_PREFIX + "/"):
            continue
        found += [Route(m, ctx.path, route) for m in sorted(ctx.methods or ())]
    return found


def _listing_app() -> Any:
    # Only the route table is read: the store never connects and the home directory is never written.
    home = Path(tempfile.gettempdir()) / "selfserve-route-listing-unused"
    return create_app(Settings(home=home), Store("sqlite://"))


ROUTES = api_routes(_listing_app())


# -- callers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Who:
    """A kind of caller, with its role in the own and in the foreign project."""

    key: str
    user: str | None
    own_role: str | None = None
    foreign_role: str | None = None
    admin: bool = False
    scoped_to_foreign: bool = False


CALLERS = [
    Who("owner", "owner", own_role="owner"),
    Who("engineer", "engineer", own_role="engineer"),
    Who("scientist", "scientist", own_role="scientist"),
    Who("viewer", "viewer", own_role="viewer"),
    Who("non-member", "outsider"),
    Who("admin", "admin", admin=True),
    # Owner of both projects, through a token limited to the foreign one: only the scope keeps
    # it out of the own project.
    Who("scoped-token", "scoped", own_role="owner", foreign_role="owner", scoped_to_foreign=True),
    Who("no-token", None),
]
# Users the world needs besides the callers: the foreign project's creator, a member every
# members/{user} route targets, a user to add, and a user the users/{name} routes act on.
EXTRA_USERS = ["stranger", "target", "newcomer", "zed"]

# Routes a project-scoped token may not use even where its role would allow them: minting or
# changing credentials, creating projects and granting data access reach beyond the one project.
SCOPED_TOKEN_REFUSED = {
    "POST /api/v1/tokens",
    "POST /api/v1/auth/password",
    "POST /api/v1/projects",
    "POST /api/v1/projects/{project}/product-requests/{request_id}/{decision}",
}
# Self-service routes whose project is named in the body rather than the path: the caller must
# hold the action in that project. Here the body names the own or the foreign project in turn.
ACTS_FOR_BODY_PROJECT = {
    "POST /api/v1/products/{project}/{name}/requests": "for_project",
}


def expected(route: Route, who: Who, which: str | None) -> int | str:
    """The status ``who`` must get from ``route`` on the ``which`` project, from the declarations alone."""
    assert route.action, f"{route} declares no action: add openapi_extra=action(...)"
    assert route.scope in SCOPES, f"{route} declares scope {route.scope!r}, not one of {sorted(SCOPES)}"
    if route.scope == "public":
        return ALLOWED
    if who.user is None or route.scope == "runner":
        return 401
    refused_to_scoped = who.scoped_to_foreign and str(route) in SCOPED_TOKEN_REFUSED
    if route.scope == "platform":
        return ALLOWED if who.admin and not who.scoped_to_foreign else 403
    if route.scope == "self" and str(route) not in ACTS_FOR_BODY_PROJECT:
        return 403 if refused_to_scoped else ALLOWED
    if who.scoped_to_foreign and which != "foreign":
        return 404
    if who.admin:
        return ALLOWED
    role = who.own_role if which == "own" else who.foreign_role
    if role is None:
        return 404
    if route.action not in get_settings().roles[role].actions:
        return 403
    return 403 if refused_to_scoped else ALLOWED


def matches(status: int, want: int | str) -> bool:
    if want == ALLOWED:
        return status not in (401, 403, 404) and status < 500
    return status == want


# Routes that need an engine the unit suite does not run: Prefect (flows, runs), MLflow (experiments,
# models, the caller's own ``mlflow`` account; ``/runs/compare`` is under ``/runs``) and the serving
# runtime with its BentoML processes (deployments; a route's predict).
ENGINE_ROUTES = tuple(
    f"{API_PREFIX}/projects/{{project}}/{noun}"
    for noun in ("flows", "runs", "experiments", "models", "mlflow", "deployments", "routes/{name}/predict", "monitors")
)
# Data-plane calls whose record is the prediction log (``predictions-<route>``, ``feedback-<route>``),
# not the audit trail: a success writes no audit record (a refusal does, as everywhere).
LOGGED_ELSEWHERE = {"route:invoke"}


def pipelines_off(route: Route, resp: httpx.Response) -> bool:
    """A pipeline, model or serving route that answered 503 because its engine is off.

    The unit suite runs without a Prefect or MLflow server (``SELFSERVE_PIPELINES__ENABLED=false``
    and ``SELFSERVE_MODELS__ENABLED=false`` in ``tests/conftest.py``), so a route that needs one
    answers 503 once the caller is authorized; that 503 proves the authorization passed. Only the
    routes under a project's ``/flows``, ``/runs``, ``/experiments``, ``/models``, ``/mlflow`` and
    ``/deployments`` and a route's predict (no BentoML process answers), only ``service_unavailable``:
    a 503 anywhere else is a failure.
    """
    pipeline_route = route.path.startswith(ENGINE_ROUTES)
    if not pipeline_route or resp.status_code != 503:
        return False
    return bool(resp.json().get("error", {}).get("code") == "service_unavailable")


# Changes recorded under another noun than the action that allows them: work that runs as a
# background job (ingest, transform) is recorded as job:<kind>.
RECORDED_UNDER = {"dataset:write": {"job"}}


def noun(action: str | None) -> str:
    return (action or "").split(":")[0]


def is_read(route: Route) -> bool:
    return (route.action or "").endswith((":read", ":read-all", ":search"))


def varies_by_project(route: Route) -> bool:
    return route.scope == "project" or str(route) in ACTS_FOR_BODY_PROJECT


# -- the world each call runs in ---------------------------------------------------------------


@cache
def _password_hash() -> str:
    return identity.hash_password(PASSWORD)


CSV = b"id,amount\n1,9.5\n2,3.25\n"
CONTRACT = "columns:\n  id: {type: integer}\n"
FLOW = "nightly"
RUN_ID = "6f1c1a52-8d0e-4f55-9a55-0d6c2b8e3f10"  # a flow run Prefect would know
MLFLOW_RUN_ID = "0f3a9c1e5b7d4e2a8c6b1d0e9f8a7b6c"  # an MLflow run
DEPLOYMENT, ROUTE = "dep", "score"


@cache
def _flow_code() -> bytes:
    """A zip of a small good flow, as ``selfserve flow deploy`` uploads it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(
            "hello.py", "from prefect import flow\n\n\n@flow\ndef hello(name: str = 'x') -> str:\n    return name\n"
        )
    return buf.getvalue()


def needs(route: Route) -> set[str]:
    """What must exist in the projects before ``route`` is called, read from its path."""
    path = route.path
    found = set()
    if "/datasets/" in path or "/products/" in path or "/product-requests" in path or path.endswith(("/query",)):
        found.add("dataset")
    if "/sources/" in path or path.endswith("/ingest"):
        found.add("source")
    if "/jobs/" in path:
        found.add("job")
    if "/products/" in path or "/product-requests" in path or path.endswith("/publish"):
        found.add("product")
    if "/flows/{name}" in path:
        found.add("flow")
    if "/deployments/{name}" in path or path.endswith("/routes"):
        found.add("deployment")
    if "/routes/{name}" in path:
        found |= {"deployment", "route"}
    if "/features" in path:
        found.add("dataset")
    if path.endswith("/monitors"):
        found |= {"deployment", "route", "dataset"}
    if "/monitors/{name}" in path or "/alerts/" in path:
        found |= {"deployment", "route", "monitor"}
    if "/features/{name}" in path:
        found.add("feature")
    return found


@dataclass
class Case:
    """The projects and objects one call works on, made fresh so that calls cannot affect each other."""

    n: int
    own: str
    foreign: str
    market: str = ""  # a third project whose published dataset anyone may ask for
    quota_request: int = 0
    ids: dict[tuple[str, str], int] = field(default_factory=dict)  # (own|foreign, kind) -> id

    def project(self, which: str | None) -> str:
        return self.own if which == "own" else self.foreign


@dataclass
class Credentials:
    """How ``who`` calls: a token (none for no-token), and the name and password it logs in with."""

    token: str | None
    username: str
    password: str
    other_token_id: int  # a second token of the same principal, for the token routes to act on


class World:
    """Users that live as long as the platform; projects, tokens and objects made for each call."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.store = platform.store
        self.counter = itertools.count(1)
        with self.store.begin() as s:
            for name in [w.user for w in CALLERS if w.user and w.user != "admin"] + EXTRA_USERS:
                s.add(Principal(name=name, kind="user", password_hash=_password_hash()))
        self.http = httpx.Client(base_url="http://selfserve.test", transport=platform.transport)
        self.admin_token = self._token("admin")[1]

    def close(self) -> None:
        self.idle()
        self.http.close()

    def _caller(self, s: Any, name: str) -> Caller:
        p = s.scalar(select(Principal).where(Principal.name == name))
        return Caller(id=p.id, name=p.name, kind=p.kind, is_admin=p.is_admin, token_id=0)

    def _token(self, user: str, project: str | None = None) -> tuple[int, str]:
        with self.store.begin() as s:
            scope = s.scalar(select(Project).where(Project.name == project)) if project else None
            row, plaintext = tokens.issue(s, self._caller(s, user).id, name="matrix", project=scope)
            return row.id, plaintext

    def _project(self, s: Any, name: str, creator: str, members: dict[str, str]) -> Project:
        body = schemas.ProjectCreate(name=name)
        projects.create(s, self._caller(s, creator), body, self.platform.app.state.provisioners)
        proj = s.scalar(select(Project).where(Project.name == name))
        for user, role in members.items():
            s.add(Membership(project_id=proj.id, principal_id=self._caller(s, user).id, role=role))
        s.commit()
        return proj

    def _admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """Set-up through the API as the admin, so the objects are made as users make them."""
        resp = self.http.request(
            method, f"/api/v1{path}", headers={"Authorization": f"Bearer {self.admin_token}"}, **kwargs
        )
        assert resp.status_code < 300, f"set-up {method} {path}: {resp.status_code} {resp.text[:300]}"
        return resp.json()

    def case(self, route: Route) -> Case:
        n = next(self.counter)
        case = Case(n, f"own-{n}", f"foreign-{n}")
        with self.store.session() as s:
            own_members = {w.user: w.own_role for w in CALLERS if w.own_role and w.user and w.user != "owner"}
            own = self._project(s, case.own, "owner", {**own_members, "target": "viewer"})
            self._project(s, case.foreign, "stranger", {"scoped": "owner", "target": "viewer"})
            req = QuotaRequest(project_id=own.id, requested_by="owner", changes={"runs": 3.0}, reason="matrix")
            s.add(req)
            s.commit()
            case.quota_request = req.id
        wanted = needs(route)
        for which in ("own", "foreign"):
            p = case.project(which)
            if "flow" in wanted:
                self._flow(p)
            if "deployment" in wanted:
                self._deployment(p)
            if "route" in wanted:
                self._admin("POST", f"/projects/{p}/routes", json={"name": ROUTE, "targets": {DEPLOYMENT: 100}})
            if "dataset" in wanted:
                self._admin("POST", f"/projects/{p}/datasets/sales/upload", files={"file": ("sales.csv", CSV)})
                self._admin("PUT", f"/projects/{p}/datasets/sales/contract", json={"contract": CONTRACT})
            if "feature" in wanted:
                self._admin("POST", f"/projects/{p}/features", json={"name": "sales", "dataset": "sales", "key": "id"})
            if "monitor" in wanted:
                self._monitor(p)
                run = {"status": "drift", "drift_share": 1.0, "columns": {"age": {"drifted": True}}, "html": "<p>r</p>"}
                self._admin("POST", f"/projects/{p}/monitors/{ROUTE}/runs", json=run)
                alerts = self._admin("GET", f"/projects/{p}/alerts")
                case.ids[(which, "alert")] = alerts[0]["id"]
            if "source" in wanted:
                self._admin(
                    "POST",
                    f"/projects/{p}/sources",
                    json={"name": "src", "kind": "file", "config": {"path": "sales.csv"}},
                )
            if "job" in wanted:
                job = self._admin("POST", f"/projects/{p}/transforms", json={"to": "derived", "sql": "SELECT 1 AS x"})
                case.ids[(which, "job")] = job["id"]
        if "product" in wanted:
            case.market = f"market-{n}"
            with self.store.session() as s:
                self._project(s, case.market, "stranger", {})
            self._admin("POST", f"/projects/{case.market}/datasets/sales/upload", files={"file": ("sales.csv", CSV)})
            self._admin("POST", f"/projects/{case.market}/datasets/sales/publish", json={})
            for which in ("own", "foreign"):
                p = case.project(which)
                self._admin("POST", f"/projects/{p}/datasets/sales/publish", json={})
                asked = self._admin("POST", f"/products/{p}/sales/requests", json={"for_project": case.market})
                case.ids[(which, "access")] = asked["id"]
        return case

    def _flow(self, project: str) -> None:
        """A flow deployment as if deployed to Prefect, which the unit suite does not run (so no API call can)."""
        with self.store.begin() as s:
            proj = s.scalar(select(Project).where(Project.name == project))
            s.add(
                FlowDeployment(
                    project_id=proj.id,
                    name=FLOW,
                    kind="builtin",
                    flow_name="selfserve-transform",
                    entrypoint="transform.py:transform",
                    code_sha="0" * 64,
                    prefect_id=str(uuid.uuid4()),
                    parameters={},
                    created_by="owner",
                )
            )

    def _deployment(self, project: str) -> None:
        """A deployment as the serving runtime leaves it once ready, on a port where nothing listens (no
        BentoML in the unit suite): a predict reaches the gateway's forwarding and gets a 503."""
        with self.store.begin() as s:
            proj = s.scalar(select(Project).where(Project.name == project))
            s.add(
                ServingDeployment(
                    project_id=proj.id,
                    name=DEPLOYMENT,
                    model="clf",
                    version=1,
                    model_ref="clf@1",
                    artifact=f"serving/{project}/clf/1/model.skops",
                    signature=[{"name": "age", "type": "long"}],
                    state="ready",
                    port=free_port(),
                    created_by="owner",
                )
            )

    def _monitor(self, project: str) -> None:
        """A monitor as ``monitor create`` leaves it (its schedule is a Prefect deployment, which this suite lacks)."""
        with self.store.begin() as s:
            proj = s.scalar(select(Project).where(Project.name == project))
            s.add(
                Monitor(
                    project_id=proj.id,
                    route=ROUTE,
                    reference_dataset="sales",
                    reference_version=0,
                    window_seconds=3600,
                    drift_share=0.3,
                    created_by="owner",
                )
            )

    def credentials(self, who: Who, case: Case) -> Credentials:
        holder = who.user or "owner"
        scope = case.foreign if who.scoped_to_foreign else None
        _, plaintext = self._token(holder, scope)
        other_id, _ = self._token(holder, scope)
        password = self.platform.admin_password if holder == "admin" else PASSWORD
        return Credentials(plaintext if who.user else None, holder, password, other_id)

    def idle(self) -> None:
        """Let background jobs the calls started finish, so they never outlive their project."""
        jobs = getattr(self.platform.app.state, "jobs", None)
        if jobs is not None:
            assert jobs.wait_idle(60), "background jobs did not finish"

    def reset(self) -> None:
        """Drop every project (and, by cascade, everything in it)."""
        self.idle()
        with self.store.begin() as s:
            s.execute(delete(Project))

    def last_audit_id(self) -> int:
        with self.store.session() as s:
            return s.scalar(select(func.coalesce(func.max(AuditEvent.id), 0))) or 0

    def audit_since(self, after: int) -> list[AuditEvent]:
        with self.store.session() as s:
            return list(s.scalars(select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id)))


# -- filling a request in -------------------------------------------------------------------

Fill = Callable[[Route, Case, str | None, Credentials], Any]


def _project_param(route: Route, case: Case, which: str | None, cred: Credentials) -> str:
    return case.market if str(route) in ACTS_FOR_BODY_PROJECT else case.project(which)


def _name_param(route: Route, case: Case, which: str | None, cred: Credentials) -> str:
    if route.path.startswith("/api/v1/users/"):
        return "zed"
    if "/sources/" in route.path:
        return "src"
    if "/flows/" in route.path:
        return FLOW
    if "/deployments/" in route.path:
        return DEPLOYMENT
    if "/routes/" in route.path or "/monitors/" in route.path:
        return ROUTE
    return "sales"


def _request_id_param(route: Route, case: Case, which: str | None, cred: Credentials) -> str:
    if "/product-requests/" in route.path:
        return str(case.ids[(which or "own", "access")])
    return str(case.quota_request)


PATH_VALUES: dict[str, Fill] = {
    "project": _project_param,
    "user": lambda r, c, which, cred: "target",
    "name": _name_param,
    "token_id": lambda r, c, which, cred: str(cred.other_token_id),
    "request_id": _request_id_param,
    "job_id": lambda r, c, which, cred: str(c.ids[(which or "own", "job")]),
    "decision": lambda r, c, which, cred: "grant",
    "run_id": lambda r, c, which, cred: RUN_ID,
    "flow_run_id": lambda r, c, which, cred: RUN_ID,
    "path": lambda r, c, which, cred: f"flow_runs/{RUN_ID}",
    "version": lambda r, c, which, cred: "1",
    "key": lambda r, c, which, cred: "1",
    "alert_id": lambda r, c, which, cred: str(c.ids[(which or "own", "alert")]),
}

BODIES: dict[type[BaseModel], Fill] = {
    schemas.LoginRequest: lambda r, c, w, cred: {"username": cred.username, "password": cred.password},
    schemas.PasswordChange: lambda r, c, w, cred: {"current_password": cred.password, "new_password": cred.password},
    schemas.TokenCreate: lambda r, c, w, cred: {"name": "made-by-matrix"},
    schemas.UserCreate: lambda r, c, w, cred: {"name": f"made-{c.n}"},
    schemas.PasswordReset: lambda r, c, w, cred: {},
    schemas.ProjectCreate: lambda r, c, w, cred: {"name": f"made-{c.n}"},
    schemas.ProjectUpdate: lambda r, c, w, cred: {"description": "changed by the matrix"},
    schemas.MemberAdd: lambda r, c, w, cred: {"user": "newcomer", "role": "viewer"},
    schemas.MemberUpdate: lambda r, c, w, cred: {"role": "viewer"},
    schemas.QuotaSet: lambda r, c, w, cred: {"limits": {"runs": 3}},
    schemas.QuotaRequestCreate: lambda r, c, w, cred: {"limits": {"runs": 3}, "reason": "more runs"},
    schemas.QuotaDecision: lambda r, c, w, cred: {"note": "decided by the matrix"},
    data.SourceCreate: lambda r, c, w, cred: {"name": f"made-{c.n}", "kind": "file", "config": {"path": "a.csv"}},
    data.ContractSet: lambda r, c, w, cred: {"contract": CONTRACT},
    data.QueryRequest: lambda r, c, w, cred: {"sql": "SELECT count(*) AS n FROM sales"},
    data.IngestRequest: lambda r, c, w, cred: {"source": "src", "to": "ingested", "table": "sales.csv"},
    data.TransformRequest: lambda r, c, w, cred: {"to": "derived", "sql": "SELECT 1 AS x"},
    data.ProductPublish: lambda r, c, w, cred: {"description": "published by the matrix"},
    data.AccessRequestCreate: lambda r, c, w, cred: {"for_project": c.project(w)},
    pipelines.RunRequest: lambda r, c, w, cred: {"parameters": {}},
    pipelines.BuiltinDeploy: lambda r, c, w, cred: {
        "flow": "transform",
        "name": f"made-{c.n}",
        "parameters": {"to": "derived", "sql": "SELECT 1 AS a"},
    },
    models.CompareRequest: lambda r, c, w, cred: {"run_ids": [MLFLOW_RUN_ID, MLFLOW_RUN_ID[::-1]]},
    models.PromoteRequest: lambda r, c, w, cred: {"version": 1, "reason": "promoted by the matrix"},
    models.RollbackRequest: lambda r, c, w, cred: {"reason": "rolled back by the matrix"},
    monitoring.MonitorCreate: lambda r, c, w, cred: {"route": ROUTE, "reference": "sales@0"},
    monitoring.MonitorRunRecord: lambda r, c, w, cred: {"status": "no_data", "rows_reference": 2},
    serving.FeatureViewCreate: lambda r, c, w, cred: {"name": f"made-{c.n}", "dataset": "sales", "key": "id"},
    serving.DeploymentCreate: lambda r, c, w, cred: {"name": f"made-{c.n}", "model": "clf@champion"},
    serving.RouteCreate: lambda r, c, w, cred: {"name": f"made-{c.n}", "targets": {DEPLOYMENT: 100}},
    serving.RouteSpec: lambda r, c, w, cred: {"targets": {DEPLOYMENT: 100}},
    serving.RouteSwitch: lambda r, c, w, cred: {"to": DEPLOYMENT},
    serving.RouteRollback: lambda r, c, w, cred: {"reason": "rolled back by the matrix"},
    serving.PredictRequest: lambda r, c, w, cred: {"rows": [{"age": 1}]},
    serving.FeedbackRequest: lambda r, c, w, cred: {"labels": [{"request_id": "r1", "label": 1}]},
    runner.Heartbeat: lambda r, c, w, cred: {"cpu_seconds": 1.0, "rss_bytes": 1024},
    runner.Finish: lambda r, c, w, cred: {"exit_code": 0},
}
# Multipart bodies (file uploads), by route.
FORMS: dict[str, Fill] = {
    "POST /api/v1/projects/{project}/datasets/{name}/upload": lambda r, c, w, cred: {"file": ("more.csv", CSV)},
    "POST /api/v1/projects/{project}/flows/code": lambda r, c, w, cred: {
        "code": ("code.zip", _flow_code()),
        "spec": (None, json.dumps({"name": f"made-{c.n}", "entrypoint": "hello.py:hello"})),
    },
}

_SAMPLE = (
    Case(
        1,
        "own-1",
        "foreign-1",
        "market-1",
        1,
        {(w, k): 1 for w in ("own", "foreign") for k in ("job", "access", "alert")},
    ),
    Credentials("ss_x", "owner", PASSWORD, 1),
)


def fill(route: Route, case: Case, which: str | None, cred: Credentials) -> tuple[str, dict[str, Any]]:
    """The path and the body keyword (json= or files=) of a valid call of ``route``."""
    missing = [p for p in route.path_params if p not in PATH_VALUES]
    assert not missing, f"{route}: no value for path parameter(s) {missing}; add them to PATH_VALUES"
    template = route.path.replace("{path:path}", "{path}")  # Starlette's converter is no format spec
    path = template.format(**{p: PATH_VALUES[p](route, case, which, cred) for p in route.path_params})
    if str(route) in FORMS:
        return path, {"files": FORMS[str(route)](route, case, which, cred)}
    model = route.body_model
    if model is None:
        return path, {}
    assert model in BODIES, f"{route}: no example body for {model.__name__}; add one to BODIES or FORMS"
    return path, {"json": BODIES[model](route, case, which, cred)}


# -- tests ------------------------------------------------------------------------------------


def test_routes_are_found() -> None:
    assert len(ROUTES) >= 30
    assert {"GET /api/v1/health", "POST /api/v1/projects", "DELETE /api/v1/projects/{project}"} <= {
        str(r) for r in ROUTES
    }


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_route_declares_its_action_and_scope(route: Route) -> None:
    assert route.action, f"{route} declares no {ACTION_KEY}; add openapi_extra=action(...)"
    assert route.scope in SCOPES, f"{route}: {SCOPE_KEY} is {route.scope!r}, not one of {sorted(SCOPES)}"
    assert ":" in route.action or route.scope == "public", f"{route}: action {route.action!r} is not noun:verb"
    if route.scope == "project":
        assert "project" in route.path_params, f"{route}: scope 'project' but no {{project}} in the path"


def test_project_actions_are_known_to_the_roles_or_reserved_to_admins() -> None:
    """A typo in a declared action would make a route admin-only without anyone deciding so."""
    known = {a for spec in get_settings().roles.values() for a in spec.actions}
    admin_only = {"quota:set"}  # set limits: admins grant quotas, owners only request them
    for route in ROUTES:
        if route.scope == "project" or str(route) in ACTS_FOR_BODY_PROJECT:
            assert route.action in known | admin_only, f"{route}: action {route.action!r} is in no role"


def test_override_tables_name_real_routes() -> None:
    served = {str(r) for r in ROUTES}
    assert set(ACTS_FOR_BODY_PROJECT) <= served and set(FORMS) <= served
    assert served >= SCOPED_TOKEN_REFUSED
    assert set(RECORDED_UNDER) <= {r.action for r in ROUTES}


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_route_can_be_filled_with_valid_values(route: Route) -> None:
    case, cred = _SAMPLE
    path, body = fill(route, case, "own", cred)
    assert "{" not in path
    if "json" in body and route.body_model is not None:
        route.body_model.model_validate(body["json"])
    if str(route) in ACTS_FOR_BODY_PROJECT:
        assert body["json"][ACTS_FOR_BODY_PROJECT[str(route)]] == "own-1"


def _calls(route: Route) -> Iterator[tuple[Who, str | None]]:
    whiches: tuple[str | None, ...] = ("own", "foreign") if varies_by_project(route) else (None,)
    for who in CALLERS:
        for which in whiches:
            yield who, which


def _audit_problem(
    route: Route, which: str | None, case: Case, cred: Credentials, status: int, events: list[Any]
) -> str:
    """Why the audit trail lacks a record of this call, or '' when it has one."""
    project = case.project(which) if which else None
    mine = [e for e in events if e.principal == cred.username and (project is None or e.project == project)]
    if 200 <= status < 300:
        if is_read(route):
            return ""  # a read that happens to be a POST (a test, a check, a query) changes nothing
        if route.action in LOGGED_ELSEWHERE:
            return ""
        # A change is recorded under its own verb of the same noun (member:write -> member:add).
        nouns = {noun(route.action)} | RECORDED_UNDER.get(route.action or "", set())
        ok = [e for e in mine if e.outcome == "ok" and noun(e.action) in nouns]
    else:
        ok = [e for e in mine if e.action == route.action and e.outcome != "ok"]
    if ok:
        return ""
    seen = [(e.principal, e.action, e.project, e.outcome) for e in events]
    return f"no audit record of {route.action} by {cred.username} (project {project}); new records: {seen}"


def _call_and_check(world: World, route: Route, who: Who, which: str | None, case: Case) -> list[str]:
    want = expected(route, who, which)
    cred = world.credentials(who, case)
    path, body = fill(route, case, which, cred)
    headers = {"Authorization": f"Bearer {cred.token}"} if cred.token else {}
    before = world.last_audit_id()
    resp = world.http.request(route.method, path, headers=headers, **body)
    label = f"{who.key:>12} on {which or '-':>7}: {route.method} {path}"
    problems = []
    if not (matches(resp.status_code, want) or (want == ALLOWED and pipelines_off(route, resp))):
        problems.append(f"{label} -> {resp.status_code}, want {want}: {resp.text[:300]}")
    elif resp.status_code >= 400:
        err = resp.json().get("error", {})
        if not (err.get("code") and err.get("message")):
            problems.append(f"{label} -> {resp.status_code} without a JSON error: {resp.text[:300]}")
    # The runner routes take the runner key or a run's token: a user's token names no principal there.
    if route.method in MUTATING and route.scope != "runner" and (cred.token or route.scope == "public"):
        world.idle()
        problem = _audit_problem(route, which, case, cred, resp.status_code, world.audit_since(before))
        if problem:
            problems.append(f"{label} -> {resp.status_code}: {problem}")
    return problems


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_route_answers_every_caller_as_declared(platform: Platform, route: Route) -> None:
    world = World(platform)
    failures: list[str] = []
    try:
        shared = None if route.method in MUTATING else world.case(route)  # reads cannot change the world
        for who, which in _calls(route):
            case = shared or world.case(route)
            failures += _call_and_check(world, route, who, which, case)
            if shared is None:
                world.reset()
    finally:
        world.close()
    assert not failures, f"{len(failures)} call(s) of {route} broke the matrix:\n" + "\n".join(failures)


def test_expected_statuses_follow_the_roles() -> None:
    """The oracle itself: a few spot checks, so a bug in ``expected`` cannot hide a bug in the server."""
    by = {str(r): r for r in ROUTES}
    who = {w.key: w for w in CALLERS}
    delete_project = by["DELETE /api/v1/projects/{project}"]
    assert expected(delete_project, who["owner"], "own") == ALLOWED
    assert expected(delete_project, who["engineer"], "own") == 403
    assert expected(delete_project, who["engineer"], "foreign") == 404
    assert expected(delete_project, who["non-member"], "own") == 404
    assert expected(delete_project, who["admin"], "foreign") == ALLOWED
    assert expected(delete_project, who["scoped-token"], "own") == 404
    assert expected(delete_project, who["scoped-token"], "foreign") == ALLOWED
    assert expected(delete_project, who["no-token"], "own") == 401
    assert expected(by["PUT /api/v1/projects/{project}/quotas"], who["owner"], "own") == 403
    assert expected(by["GET /api/v1/users"], who["scoped-token"], None) == 403
    assert expected(by["POST /api/v1/tokens"], who["scoped-token"], None) == 403
    assert expected(by["GET /api/v1/tokens"], who["scoped-token"], None) == ALLOWED
    assert expected(by["GET /api/v1/health"], who["no-token"], None) == ALLOWED
    assert not matches(500, ALLOWED) and not matches(404, ALLOWED) and matches(409, ALLOWED)
    for route in ("POST /api/v1/runner/runs/{flow_run_id}/start", "GET /api/v1/runner/prefect/{path:path}"):
        assert {expected(by[route], w, None) for w in CALLERS} == {401}
    off = httpx.Response(503, json={"error": {"code": "service_unavailable", "message": "off"}})
    assert pipelines_off(by["GET /api/v1/projects/{project}/runs"], off)
    assert pipelines_off(by["POST /api/v1/projects/{project}/models/{name}/promote"], off)
    assert pipelines_off(by["GET /api/v1/projects/{project}/mlflow"], off)
    assert not pipelines_off(by["GET /api/v1/projects/{project}/datasets"], off)
    assert not pipelines_off(by["POST /api/v1/runner/runs/{flow_run_id}/start"], off)


def test_a_route_without_an_action_fails_the_matrix() -> None:
    app = _listing_app()

    @app.get("/api/v1/undeclared")
    def undeclared() -> dict[str, str]:
        return {}

    route = next(r for r in api_routes(app) if r.path == "/api/v1/undeclared")
    with pytest.raises(AssertionError, match="declares no action"):
        expected(route, CALLERS[0], None)
    with pytest.raises(AssertionError, match="declares no"):
        test_route_declares_its_action_and_scope(route)
