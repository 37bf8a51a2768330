"""One sub-client per noun of the API."""

from __future__ import annotations

from typing import Any

from selfserve import schemas
from selfserve.client._base import SubClient


class TokensClient(SubClient):
    def list(self) -> list[schemas.TokenPublic]:
        return self._many(schemas.TokenPublic, self._call("tokens.list"))

    def create(
        self, name: str = "api", *, expires: str | None = None, project: str | None = None
    ) -> schemas.TokenCreated:
        body = {"name": name, "expires": expires, "project": project}
        return self._one(schemas.TokenCreated, self._call("tokens.create", json=body))

    def revoke(self, token_id: int) -> None:
        self._call("tokens.revoke", token_id=token_id)


class UsersClient(SubClient):
    def list(self) -> list[schemas.UserPublic]:
        return self._many(schemas.UserPublic, self._call("users.list"))

    def create(self, name: str, *, password: str | None = None, is_admin: bool = False) -> schemas.UserCreated:
        body = {"name": name, "password": password, "is_admin": is_admin}
        return self._one(schemas.UserCreated, self._call("users.create", json=body))

    def disable(self, name: str) -> schemas.UserPublic:
        return self._one(schemas.UserPublic, self._call("users.disable", name=name))

    def enable(self, name: str) -> schemas.UserPublic:
        return self._one(schemas.UserPublic, self._call("users.enable", name=name))

    def reset_password(self, name: str, password: str | None = None) -> schemas.UserCreated:
        data = self._call("users.reset_password", name=name, json={"password": password})
        return self._one(schemas.UserCreated, data)


class ProjectsClient(SubClient):
    def list(self) -> list[schemas.ProjectPublic]:
        return self._many(schemas.ProjectPublic, self._call("projects.list"))

    def create(self, name: str, *, description: str = "") -> schemas.ProjectPublic:
        data = self._call("projects.create", json={"name": name, "description": description})
        return self._one(schemas.ProjectPublic, data)

    def get(self, name: str) -> schemas.ProjectPublic:
        return self._one(schemas.ProjectPublic, self._call("projects.get", project=name))

    def update(self, name: str, *, description: str) -> schemas.ProjectPublic:
        data = self._call("projects.update", project=name, json={"description": description})
        return self._one(schemas.ProjectPublic, data)

    def delete(self, name: str) -> None:
        self._call("projects.delete", project=name)

    def provision(self, name: str) -> schemas.ProjectPublic:
        return self._one(schemas.ProjectPublic, self._call("projects.provision", project=name))


class MembersClient(SubClient):
    def list(self, project: str) -> list[schemas.MemberPublic]:
        return self._many(schemas.MemberPublic, self._call("members.list", project=project))

    def add(self, project: str, user: str, role: str) -> schemas.MemberPublic:
        data = self._call("members.add", project=project, json={"user": user, "role": role})
        return self._one(schemas.MemberPublic, data)

    def set_role(self, project: str, user: str, role: str) -> schemas.MemberPublic:
        data = self._call("members.set_role", project=project, user=user, json={"role": role})
        return self._one(schemas.MemberPublic, data)

    def remove(self, project: str, user: str) -> None:
        self._call("members.remove", project=project, user=user)


class QuotasClient(SubClient):
    def get(self, project: str) -> schemas.QuotaPublic:
        return self._one(schemas.QuotaPublic, self._call("quotas.get", project=project))

    def set(self, project: str, limits: dict[str, Any]) -> schemas.QuotaPublic:
        return self._one(schemas.QuotaPublic, self._call("quotas.set", project=project, json={"limits": limits}))

    def usage(self, project: str) -> schemas.UsagePublic:
        return self._one(schemas.UsagePublic, self._call("quotas.usage", project=project))

    def request(self, project: str, limits: dict[str, Any], *, reason: str = "") -> schemas.QuotaRequestPublic:
        data = self._call("quotas.request", project=project, json={"limits": limits, "reason": reason})
        return self._one(schemas.QuotaRequestPublic, data)

    def requests(self, project: str | None = None, *, status: str | None = None) -> list[schemas.QuotaRequestPublic]:
        params = {"status": status} if status else None
        if project:
            data = self._call("quotas.project_requests", project=project, params=params)
        else:
            data = self._call("quotas.all_requests", params=params)
        return self._many(schemas.QuotaRequestPublic, data)

    def approve(self, request_id: int, *, note: str = "") -> schemas.QuotaRequestPublic:
        data = self._call("quotas.approve", request_id=request_id, json={"note": note})
        return self._one(schemas.QuotaRequestPublic, data)

    def deny(self, request_id: int, *, note: str = "") -> schemas.QuotaRequestPublic:
        data = self._call("quotas.deny", request_id=request_id, json={"note": note})
        return self._one(schemas.QuotaRequestPublic, data)


class AuditClient(SubClient):
    def list(
        self, project: str | None = None, *, user: str | None = None, since: str | None = None, limit: int = 200
    ) -> list[schemas.AuditEventPublic]:
        params: dict[str, Any] = {"limit": limit}
        if user:
            params["user"] = user
        if since:
            params["since"] = since
        if project:
            data = self._call("audit.project", project=project, params=params)
        else:
            data = self._call("audit.all", params=params)
        return self._many(schemas.AuditEventPublic, data)
