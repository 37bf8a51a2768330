"""An in-memory stand-in for the MLflow server's admin API (users, roles, workspaces), for unit tests.

It answers the paths and bodies :class:`selfserve.ml.mlflow.MLflowAdmin` sends with the statuses and
``error_code``s MLflow 3.17 gives (measured against a real server; the integration suite runs one),
including creators' per-user ``__user_<id>__`` roles, which :meth:`FakeMLflow.create_experiment`
makes as MLflow does when a user creates an experiment.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from selfserve.ml.mlflow import MLflowAdmin
from selfserve.ml.server import ADMIN_USERNAME
from selfserve.settings import get_settings
from tests.support import Platform, make_platform


@dataclass
class FakeMLflow:
    admin_password: str
    down: bool = False
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # username -> {id, password}
    workspaces: set[str] = field(default_factory=set)
    roles: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> {id, name, workspace, permissions}
    assignments: set[tuple[int, int]] = field(default_factory=set)  # (user id, role id)
    requests: list[httpx.Request] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.users[ADMIN_USERNAME] = {"id": next(self._ids), "password": self.admin_password}

    def admin(self, url: str = "http://mlflow.test") -> MLflowAdmin:
        return MLflowAdmin(url, self.admin_password, transport=httpx.MockTransport(self.handle))

    # -- what tests look at -----------------------------------------------------------------------

    def user_id(self, username: str) -> int:
        return int(self.users[username]["id"])

    def roles_of(self, username: str, workspace: str) -> set[str]:
        uid = self.user_id(username)
        held = [r for rid, r in self.roles.items() if (uid, rid) in self.assignments]
        return {r["name"] for r in held if r["workspace"] == workspace}

    def role(self, workspace: str, name: str) -> dict[str, Any]:
        return next(r for r in self.roles.values() if r["workspace"] == workspace and r["name"] == name)

    def permissions(self, workspace: str, name: str) -> dict[str, str]:
        return {p["resource_type"]: p["permission"] for p in self.role(workspace, name)["permissions"]}

    def create_experiment(self, username: str, workspace: str, experiment_id: str) -> None:
        """What MLflow does when ``username`` creates an experiment: MANAGE on it through a per-user role."""
        uid = self.user_id(username)
        name = f"__user_{uid}__"
        role = next((r for r in self.roles.values() if r["workspace"] == workspace and r["name"] == name), None)
        if role is None:
            role = self._new_role(workspace, name)
        role["permissions"].append(self._perm(role["id"], "experiment", experiment_id, "MANAGE"))
        self.assignments.add((uid, role["id"]))

    # -- the API ----------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        self.requests.append(request)
        path = request.url.path
        if path == "/health":
            return httpx.Response(200, text="OK")
        if not self._is_admin(request):
            return httpx.Response(401, text="You are not authenticated.")
        body = json.loads(request.content) if request.content else {}
        params = dict(request.url.params)
        route = (request.method, path)
        if path.startswith("/api/3.0/mlflow/workspaces"):
            return self._workspaces(request.method, path.removeprefix("/api/3.0/mlflow/workspaces").strip("/"), body)
        handlers = {
            ("POST", "/api/2.0/mlflow/users/create"): self._create_user,
            ("GET", "/api/2.0/mlflow/users/get"): self._get_user,
            ("GET", "/api/2.0/mlflow/users/list"): self._list_users,
            ("PATCH", "/api/2.0/mlflow/users/update-password"): self._update_password,
            ("DELETE", "/api/2.0/mlflow/users/delete"): self._delete_user,
            ("POST", "/api/3.0/mlflow/roles/create"): self._create_role,
            ("GET", "/api/3.0/mlflow/roles/list"): self._list_roles,
            ("DELETE", "/api/3.0/mlflow/roles/delete"): self._delete_role,
            ("POST", "/api/3.0/mlflow/roles/permissions/add"): self._add_permission,
            ("PATCH", "/api/3.0/mlflow/roles/permissions/update"): self._update_permission,
            ("DELETE", "/api/3.0/mlflow/roles/permissions/remove"): self._remove_permission,
            ("POST", "/api/3.0/mlflow/roles/assign"): self._assign,
            ("DELETE", "/api/3.0/mlflow/roles/unassign"): self._unassign,
            ("GET", "/api/3.0/mlflow/users/roles/list"): self._user_roles,
        }
        handler = handlers.get(route)
        if handler is None:
            return httpx.Response(404, text="not found")
        return handler({**params, **body})

    def _is_admin(self, request: httpx.Request) -> bool:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        return user == ADMIN_USERNAME and password == self.admin_password

    @staticmethod
    def _error(status: int, code: str, message: str) -> httpx.Response:
        return httpx.Response(status, json={"error_code": code, "message": message})

    def _workspaces(self, method: str, name: str, body: dict[str, Any]) -> httpx.Response:
        if method == "POST" and not name:
            if body["name"] in self.workspaces:
                # MLflow's message carries the failed SQL statement and its parameters.
                return self._error(400, "RESOURCE_ALREADY_EXISTS", "exists. Error: (IntegrityError) [SQL: INSERT]")
            self.workspaces.add(body["name"])
            return httpx.Response(201, json={"workspace": {"name": body["name"]}})
        if name not in self.workspaces:
            return self._error(404, "RESOURCE_DOES_NOT_EXIST", f"Workspace '{name}' not found")
        if method == "GET":
            return httpx.Response(200, json={"workspace": {"name": name}})
        if method == "DELETE":
            self.workspaces.discard(name)
            for rid in [rid for rid, r in self.roles.items() if r["workspace"] == name]:
                self._drop_role(rid)
            return httpx.Response(204)
        return httpx.Response(405)

    def _user_json(self, username: str, with_roles: bool = False) -> dict[str, Any]:
        u = self.users[username]
        out: dict[str, Any] = {"id": u["id"], "username": username, "is_admin": username == ADMIN_USERNAME}
        if with_roles:
            out["roles"] = [r for rid, r in self.roles.items() if (u["id"], rid) in self.assignments]
        return out

    def _create_user(self, p: dict[str, Any]) -> httpx.Response:
        if len(p.get("password") or "") < 12:
            return self._error(400, "INVALID_PARAMETER_VALUE", "Password must be at least 12 characters.")
        if p["username"] in self.users:
            leak = "User exists. Error: (IntegrityError) [parameters: ('x', 'scrypt:hash')]"
            return self._error(400, "RESOURCE_ALREADY_EXISTS", leak)
        self.users[p["username"]] = {"id": next(self._ids), "password": p["password"]}
        return httpx.Response(200, json={"user": self._user_json(p["username"])})

    def _get_user(self, p: dict[str, Any]) -> httpx.Response:
        if p["username"] not in self.users:
            return self._error(404, "RESOURCE_DOES_NOT_EXIST", "User not found")
        return httpx.Response(200, json={"user": self._user_json(p["username"])})

    def _list_users(self, p: dict[str, Any]) -> httpx.Response:
        return httpx.Response(200, json={"users": [self._user_json(u, with_roles=True) for u in self.users]})

    def _update_password(self, p: dict[str, Any]) -> httpx.Response:
        if p["username"] not in self.users:
            return self._error(404, "RESOURCE_DOES_NOT_EXIST", "User not found")
        if len(p.get("password") or "") < 12:
            return self._error(400, "INVALID_PARAMETER_VALUE", "Password must be at least 12 characters.")
        self.users[p["username"]]["password"] = p["password"]
        return httpx.Response(200, json={})

    def _delete_user(self, p: dict[str, Any]) -> httpx.Response:
        user = self.users.pop(p["username"], None)
        if user is None:
            return self._error(404, "RESOURCE_DOES_NOT_EXIST", "User not found")
        for rid in [rid for rid, r in self.roles.items() if r["name"] == f"__user_{user['id']}__"]:
            self._drop_role(rid)
        self.assignments = {(u, r) for u, r in self.assignments if u != user["id"]}
        return httpx.Response(200, json={})

    def _new_role(self, workspace: str, name: str) -> dict[str, Any]:
        role = {"id": next(self._ids), "name": name, "workspace": workspace, "description": None, "permissions": []}
        self.roles[role["id"]] = role
        return role

    def _perm(self, role_id: int, rtype: str, pattern: str, level: str) -> dict[str, Any]:
        return {
            "id": next(self._ids),
            "role_id": role_id,
            "resource_type": rtype,
            "resource_pattern": pattern,
            "permission": level,
        }

    def _drop_role(self, rid: int) -> None:
        self.roles.pop(rid, None)
        self.assignments = {(u, r) for u, r in self.assignments if r != rid}

    def _create_role(self, p: dict[str, Any]) -> httpx.Response:
        if any(r["workspace"] == p["workspace"] and r["name"] == p["name"] for r in self.roles.values()):
            return self._error(400, "RESOURCE_ALREADY_EXISTS", "Role exists")
        return httpx.Response(200, json={"role": self._new_role(p["workspace"], p["name"])})

    def _list_roles(self, p: dict[str, Any]) -> httpx.Response:
        return httpx.Response(200, json={"roles": [r for r in self.roles.values() if r["workspace"] == p["workspace"]]})

    def _delete_role(self, p: dict[str, Any]) -> httpx.Response:
        if p["role_id"] not in self.roles:
            return self._error(404, "RESOURCE_DOES_NOT_EXIST", "Role not found")
        self._drop_role(p["role_id"])
        return httpx.Response(200, json={})

    def _add_permission(self, p: dict[str, Any]) -> httpx.Response:
        role = self.roles[p["role_id"]]
        if any(
            x["resource_type"] == p["resource_type"] and x["resource_pattern"] == p["resource_pattern"]
            for x in role["permissions"]
        ):
            return self._error(400, "RESOURCE_ALREADY_EXISTS", "Role permission exists")
        perm = self._perm(role["id"], p["resource_type"], p["resource_pattern"], p["permission"])
        role["permissions"].append(perm)
        return httpx.Response(200, json={"role_permission": perm})

    def _find_perm(self, perm_id: int) -> dict[str, Any] | None:
        return next((x for r in self.roles.values() for x in r["permissions"] if x["id"] == perm_id), None)

    def _update_permission(self, p: dict[str, Any]) -> httpx.Response:
        perm = self._find_perm(p["role_permission_id"])
        if perm is None:
            return self._error(404, "RESOURCE_DOES_NOT_EXIST", "Role permission not found")
        perm["permission"] = p["permission"]
        return httpx.Response(200, json={"role_permission": perm})

    def _remove_permission(self, p: dict[str, Any]) -> httpx.Response:
        perm = self._find_perm(p["role_permission_id"])
        if perm is None:
            return self._error(404, "RESOURCE_DOES_NOT_EXIST", "Role permission not found")
        self.roles[perm["role_id"]]["permissions"].remove(perm)
        return httpx.Response(200, json={})

    def _assign(self, p: dict[str, Any]) -> httpx.Response:
        if p["username"] not in self.users or p["role_id"] not in self.roles:
            return self._error(404, "RESOURCE_DOES_NOT_EXIST", "not found")
        key = (self.user_id(p["username"]), p["role_id"])
        if key in self.assignments:
            return self._error(400, "RESOURCE_ALREADY_EXISTS", "assignment exists")
        self.assignments.add(key)
        return httpx.Response(200, json={"assignment": {"id": 1, "user_id": key[0], "role_id": key[1]}})

    def _unassign(self, p: dict[str, Any]) -> httpx.Response:
        key = (self.user_id(p["username"]), p["role_id"])
        if key not in self.assignments:
            return self._error(404, "RESOURCE_DOES_NOT_EXIST", "assignment not found")
        self.assignments.discard(key)
        return httpx.Response(200, json={})

    def _user_roles(self, p: dict[str, Any]) -> httpx.Response:
        if p["username"] not in self.users:
            return self._error(404, "RESOURCE_DOES_NOT_EXIST", "User not found")
        return httpx.Response(200, json={"roles": self._user_json(p["username"], with_roles=True)["roles"]})


@contextlib.contextmanager
def models_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str | None = None
) -> Iterator[tuple[Platform, FakeMLflow]]:
    """An in-process control plane with models on, its MLflow a :class:`FakeMLflow` (metadata DB: ``db_url``,
    default a SQLite file)."""
    monkeypatch.setenv("SELFSERVE_MODELS__ENABLED", "true")
    monkeypatch.setenv("SELFSERVE_MODELS__MLFLOW_URL", "http://mlflow.test")
    get_settings.cache_clear()
    fake = FakeMLflow(admin_password=get_settings().mlflow_admin_password())
    monkeypatch.setattr(MLflowAdmin, "from_settings", classmethod(lambda cls, s: fake.admin(s.mlflow_url)))
    platform = make_platform(tmp_path / "home", db_url or f"sqlite:///{tmp_path / 'meta.db'}")
    try:
        yield platform, fake
    finally:
        platform.close()
