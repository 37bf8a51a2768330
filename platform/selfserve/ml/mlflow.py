"""The platform's client of the MLflow server's admin REST API, holding the admin account.

Only the platform's own processes use it: users and runs get their own MLflow accounts, never this
one. Plain REST over httpx keeps ``mlflow`` (slow to import, heavy) out of the API process. Paths and
bodies are MLflow 3's (``mlflow/server/auth/routes.py`` and ``client.py``, and the workspace
handlers of ``mlflow/server/handlers.py``).
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from selfserve.errors import ServiceUnavailable
from selfserve.ml.server import ADMIN_USERNAME
from selfserve.settings import Settings

WORKSPACE_HEADER = "X-MLflow-Workspace"
USERS = "/api/2.0/mlflow/users"
ROLES = "/api/3.0/mlflow/roles"
USER_ROLES = "/api/3.0/mlflow/users/roles/list"
WORKSPACES = "/api/3.0/mlflow/workspaces"
# MLflow's errors can carry the failed SQL statement and its parameters (a password hash, say):
# the platform keeps only the sentence before them.
_SQL_DETAIL = re.compile(r"\s*(Error: \(|\[SQL:|\(Background on this error).*", re.DOTALL)


class MLflowError(ServiceUnavailable):
    """MLflow answered a call of the platform in a way it did not expect."""

    def __init__(self, method: str, path: str, status: int, error_code: str | None, message: str = "") -> None:
        shown = f": {error_code}" if error_code else ""
        if message:
            shown += f" ({message})"
        super().__init__(f"the model registry refused {method} {path}: HTTP {status}{shown}")
        self.method, self.path, self.status, self.error_code = method, path, status, error_code


class MLflowAdmin:
    """A thin synchronous client of MLflow's admin API (users, roles, workspaces).

    Args:
        url: The MLflow server's URL.
        password: The admin account's password.
        username: The admin account.
        timeout: Seconds one call may take.
        transport: An httpx transport (tests pass a mock).
    """

    def __init__(
        self,
        url: str,
        password: str,
        *,
        username: str = ADMIN_USERNAME,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, auth=(username, password), timeout=timeout, transport=transport)

    @classmethod
    def from_settings(cls, settings: Settings) -> MLflowAdmin:
        return cls(settings.mlflow_url, settings.mlflow_admin_password(), timeout=settings.models.request_timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MLflowAdmin:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        workspace: str | None = None,
        missing_ok: bool = False,
        exists_ok: bool = False,
    ) -> Any:
        """One call; a refused connection is tried once more (the server may be restarting).

        Returns:
            The JSON body (``{}`` when empty), or None for a missing (``missing_ok``) or already
            existing (``exists_ok``) target.

        Raises:
            ServiceUnavailable: MLflow is not reachable.
            MLflowError: any other answer than success (and the tolerated ones).
        """
        headers = {WORKSPACE_HEADER: workspace} if workspace else None
        for attempt in range(2):
            try:
                r = self._http.request(method, path, json=json, params=params, headers=headers)
                break
            except httpx.HTTPError as e:
                if attempt == 0 and isinstance(e, httpx.ConnectError):
                    time.sleep(0.5)
                    continue
                raise ServiceUnavailable(
                    f"the model registry is not reachable at {self.url} ({type(e).__name__}); "
                    "is the platform's MLflow server running?"
                ) from None
        if r.status_code < 300:
            return r.json() if r.content else {}
        code, message = _error_of(r)
        if missing_ok and (r.status_code == 404 or code == "RESOURCE_DOES_NOT_EXIST"):
            return None
        if exists_ok and code == "RESOURCE_ALREADY_EXISTS":
            return None
        raise MLflowError(method, path, r.status_code, code, message)

    _call = request

    # -- health ---------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """Whether the server answers its (unauthenticated) health check."""
        try:
            return self._http.get("/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    # -- workspaces -----------------------------------------------------------------------------

    def get_workspace(self, name: str) -> dict[str, Any] | None:
        found = self.request("GET", f"{WORKSPACES}/{name}", missing_ok=True)
        return None if found is None else dict(found["workspace"])

    def create_workspace(self, name: str, description: str | None = None) -> bool:
        """Create workspace ``name``; False if it exists already."""
        body: dict[str, Any] = {"name": name}
        if description:
            body["description"] = description
        return self.request("POST", WORKSPACES, json=body, exists_ok=True) is not None

    def delete_workspace(self, name: str) -> bool:
        """Delete workspace ``name`` with everything in it (experiments, runs, models, its roles).

        Returns:
            False if it did not exist.
        """
        # The default mode (RESTRICT) refuses a workspace that still holds anything, with a 500.
        return self.request("DELETE", f"{WORKSPACES}/{name}", params={"mode": "CASCADE"}, missing_ok=True) is not None

    # -- users ----------------------------------------------------------------------------------

    def get_user(self, username: str) -> dict[str, Any] | None:
        found = self.request("GET", f"{USERS}/get", params={"username": username}, missing_ok=True)
        return None if found is None else dict(found["user"])

    def create_user(self, username: str, password: str) -> dict[str, Any] | None:
        """Create a user (never an admin); None if the name is taken."""
        body = {"username": username, "password": password}
        found = self.request("POST", f"{USERS}/create", json=body, exists_ok=True)
        return None if found is None else dict(found["user"])

    def update_password(self, username: str, password: str) -> None:
        self.request("PATCH", f"{USERS}/update-password", json={"username": username, "password": password})

    def delete_user(self, username: str) -> bool:
        """Delete a user and their assignments; False if there was none."""
        return self.request("DELETE", f"{USERS}/delete", json={"username": username}, missing_ok=True) is not None

    def list_users(self) -> list[dict[str, Any]]:
        """Every user, each with the roles assigned to them (``roles``)."""
        return list(self.request("GET", f"{USERS}/list")["users"])

    # -- roles ----------------------------------------------------------------------------------

    def create_role(self, workspace: str, name: str, description: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"workspace": workspace, "name": name}
        if description:
            body["description"] = description
        return dict(self.request("POST", f"{ROLES}/create", json=body)["role"])

    def list_roles(self, workspace: str) -> list[dict[str, Any]]:
        """The workspace's roles, each with its ``permissions``."""
        return list(self.request("GET", f"{ROLES}/list", params={"workspace": workspace})["roles"])

    def delete_role(self, role_id: int) -> bool:
        """Delete a role with its permissions and assignments; False if there was none."""
        return self.request("DELETE", f"{ROLES}/delete", json={"role_id": role_id}, missing_ok=True) is not None

    def add_role_permission(
        self, role_id: int, resource_type: str, resource_pattern: str, permission: str
    ) -> dict[str, Any]:
        """Grant ``permission`` on the ``resource_type`` resources matching ``resource_pattern`` (``*``: all)."""
        body = {
            "role_id": role_id,
            "resource_type": resource_type,
            "resource_pattern": resource_pattern,
            "permission": permission,
        }
        return dict(self.request("POST", f"{ROLES}/permissions/add", json=body)["role_permission"])

    def update_role_permission(self, role_permission_id: int, permission: str) -> None:
        body = {"role_permission_id": role_permission_id, "permission": permission}
        self.request("PATCH", f"{ROLES}/permissions/update", json=body)

    def remove_role_permission(self, role_permission_id: int) -> None:
        self.request(
            "DELETE", f"{ROLES}/permissions/remove", json={"role_permission_id": role_permission_id}, missing_ok=True
        )

    def assign_role(self, username: str, role_id: int) -> None:
        """Give ``username`` the role (nothing happens if they hold it)."""
        self.request("POST", f"{ROLES}/assign", json={"username": username, "role_id": role_id}, exists_ok=True)

    def unassign_role(self, username: str, role_id: int) -> None:
        """Take the role from ``username`` (nothing happens if they do not hold it)."""
        self.request("DELETE", f"{ROLES}/unassign", json={"username": username, "role_id": role_id}, missing_ok=True)

    def list_user_roles(self, username: str) -> list[dict[str, Any]]:
        """Every role ``username`` holds, in every workspace (their own per-user role included)."""
        return list(self.request("GET", USER_ROLES, params={"username": username})["roles"])

    def list_role_users(self, role_id: int) -> list[dict[str, Any]]:
        """The role's assignments (``user_id``)."""
        return list(self.request("GET", f"{ROLES}/users/list", params={"role_id": str(role_id)})["assignments"])


def _error_of(r: httpx.Response) -> tuple[str | None, str]:
    try:
        body = r.json()
    except ValueError:
        return None, ""
    if not isinstance(body, dict):
        return None, ""
    code = body.get("error_code")
    message = _SQL_DETAIL.sub("", str(body.get("message") or ""))[:200]
    return (str(code) if code else None), message
