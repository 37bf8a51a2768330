"""The project's share of MLflow: a workspace, one role per project role, and each member's account
holding exactly the role of their project role.

A role's MLflow permissions follow its actions in the role matrix (``config/selfserve.toml``):
``experiment:write`` gives EDIT on the workspace's experiments (``model:write``: on its registered
models), and with ``member:write`` (owners) MANAGE; ``experiment:read`` / ``model:read`` alone give
READ; any write also gives the workspace's USE, which lets a member create experiments and models.
No role gets the workspace's MANAGE: it administers MLflow users and roles. So the built-in roles
come out as owner: MANAGE, scientist and the service account: EDIT, engineer and viewer: READ.

MLflow also gives whoever creates an experiment or model MANAGE on it, through a per-user role in the
workspace. The platform's roles are the source of truth: a member who leaves, or whose role no longer
writes, loses those per-user grants too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update

from selfserve.errors import SelfServeError, ServiceUnavailable
from selfserve.ml import identity, workspace_name
from selfserve.ml.mlflow import MLflowAdmin
from selfserve.ml.server import ADMIN_USERNAME
from selfserve.policy.provisioning import Provisioner
from selfserve.settings import Settings
from selfserve.store import Store
from selfserve.store.tables import Membership, Principal, Project, ProvisionStep

log = logging.getLogger(__name__)
PROVISIONER_NAME = "models"
SYNTHETIC_ROLE_PREFIX = "__user_"
ARTIFACTS_DIR = "mlflow-artifacts"
WRITE_LEVELS = {"EDIT", "MANAGE"}


def mlflow_permissions(actions: Iterable[str]) -> dict[str, str]:
    """The MLflow permissions (resource type -> level, every resource ``*``) of a role's actions."""
    acts = set(actions)
    perms: dict[str, str] = {}
    for resource, noun in (("experiment", "experiment"), ("registered_model", "model")):
        if f"{noun}:write" in acts:
            perms[resource] = "MANAGE" if "member:write" in acts else "EDIT"
        elif f"{noun}:read" in acts:
            perms[resource] = "READ"
    if WRITE_LEVELS & set(perms.values()):
        perms["workspace"] = "USE"
    return perms


def role_permissions(settings: Settings) -> dict[str, dict[str, str]]:
    """Each project role that reaches MLflow at all, with its MLflow permissions."""
    found = {name: mlflow_permissions(role.actions) for name, role in settings.roles.items()}
    return {name: perms for name, perms in found.items() if perms}


def _writes(perms: dict[str, str] | None) -> bool:
    return bool(perms) and bool(WRITE_LEVELS & set((perms or {}).values()))


class MLflowProvisioner(Provisioner):
    """Workspace, roles and members' grants of each project on the platform's MLflow server."""

    name = PROVISIONER_NAME

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self._store = store
        self._admin: MLflowAdmin | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.database_url, echo=self.settings.database.echo)
        return self._store

    @property
    def admin(self) -> MLflowAdmin:
        if self._admin is None:
            self._admin = MLflowAdmin.from_settings(self.settings)
        return self._admin

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()

    # -- the workspace and its roles -------------------------------------------------------------

    def ensure_roles(self, project: str) -> dict[str, dict[str, Any]]:
        """Make the project's workspace and its roles, with exactly their permissions (idempotent).

        Returns:
            The platform's roles in the workspace by name (MLflow's role records).
        """
        ws = workspace_name(project)
        self.admin.create_workspace(ws, f"selfserve project {project}")
        wanted = role_permissions(self.settings)
        existing = {r["name"]: r for r in self.admin.list_roles(ws)}
        roles = {}
        for name, perms in wanted.items():
            role = existing.get(name) or self.admin.create_role(ws, name, f"members with project role {name!r}")
            have = {p["resource_type"]: p for p in role.get("permissions", []) if p["resource_pattern"] == "*"}
            for rtype, level in perms.items():
                if rtype not in have:
                    self.admin.add_role_permission(role["id"], rtype, "*", level)
                elif have[rtype]["permission"] != level:
                    self.admin.update_role_permission(have[rtype]["id"], level)
            for p in role.get("permissions", []):
                if p["resource_pattern"] != "*" or p["resource_type"] not in perms:
                    self.admin.remove_role_permission(p["id"])
            roles[name] = role
        return roles

    def grant(self, project: str, username: str, role: str | None) -> None:
        """Give ``username`` exactly ``role`` in the project's workspace (None: no role there)."""
        ws = workspace_name(project)
        roles = self.ensure_roles(project)
        target = roles.get(role or "")
        held = [r for r in self.admin.list_user_roles(username) if r.get("workspace") == ws]
        wanted = role_permissions(self.settings).get(role or "")
        for r in held:
            synthetic = str(r["name"]).startswith(SYNTHETIC_ROLE_PREFIX)
            if synthetic and not _writes(wanted):
                self.admin.delete_role(r["id"])
            elif not synthetic and (target is None or r["id"] != target["id"]):
                self.admin.unassign_role(username, r["id"])
        if target is not None and all(r["id"] != target["id"] for r in held):
            self.admin.assign_role(username, target["id"])

    def sync_members(self, project: str, members: dict[str, str]) -> None:
        """Every member's account holds exactly the role of their project role; nobody else holds any."""
        ws = workspace_name(project)
        roles = self.ensure_roles(project)
        perms = role_permissions(self.settings)
        users = self.admin.list_users()
        on_server = {u["username"] for u in users}
        wanted: dict[str, str] = {}
        with self.store.begin() as session:
            for name, role in members.items():
                principal = session.scalar(select(Principal).where(Principal.name == name))
                if principal is None or principal.disabled:
                    continue
                known = identity.mlflow_username(principal) in on_server
                row, _ = identity.ensure(session, self.admin, principal, on_server=known)
                wanted[row.username] = role
        for user in users:
            username = user["username"]
            if username == ADMIN_USERNAME:
                continue
            member_role = wanted.get(username)
            for r in user.get("roles") or []:
                if r.get("workspace") != ws:
                    continue
                if str(r["name"]).startswith(SYNTHETIC_ROLE_PREFIX):
                    if not _writes(perms.get(member_role or "")):
                        self.admin.delete_role(r["id"])
                elif member_role is None or roles.get(member_role, {}).get("id") != r["id"]:
                    self.admin.unassign_role(username, r["id"])
        held = {(u["username"], r["id"]) for u in users for r in u.get("roles") or [] if r.get("workspace") == ws}
        for username, role in wanted.items():
            target = roles.get(role)
            if target is not None and (username, target["id"]) not in held:
                self.admin.assign_role(username, target["id"])

    def _members(self, project: str) -> dict[str, str]:
        with self.store.session() as session:
            proj = session.scalar(select(Project).where(Project.name == project))
            if proj is None:
                return {}
            rows = session.execute(
                select(Principal.name, Membership.role)
                .join(Membership, Membership.principal_id == Principal.id)
                .where(Membership.project_id == proj.id)
            )
            return {name: role for name, role in rows}

    # -- Provisioner -----------------------------------------------------------------------------

    def provision(self, project: str) -> None:
        self.sync_members(project, self._members(project))

    def on_members_changed(self, project: str, members: dict[str, str]) -> None:
        try:
            self.sync_members(project, members)
        except SelfServeError as e:
            # The member change is committed; `project provision` runs this step again.
            self._mark_failed(project, e)
            raise ServiceUnavailable(
                f"the members of project {project!r} changed, but the model registry's grants could not follow: "
                f"{e.message}; `selfserve project provision {project}` retries"
            ) from None

    def deprovision(self, project: str) -> None:
        ws = workspace_name(project)
        # CASCADE: the experiments, runs, models and the workspace's roles and grants go with it.
        self.admin.delete_workspace(ws)
        from selfserve.policy.projects import service_account_name

        self.admin.delete_user(service_account_name(project))
        if self.settings.models.artifacts_destination is None:
            # Artifacts live in the platform's storage; MLflow keeps a workspace's under workspaces/<ws>.
            from selfserve.data.objectstore import from_settings, safe_key

            from_settings(self.settings).delete_prefix(safe_key(ARTIFACTS_DIR, "workspaces", ws))

    def _mark_failed(self, project: str, error: SelfServeError) -> None:
        try:
            with self.store.begin() as session:
                proj_id = select(Project.id).where(Project.name == project).scalar_subquery()
                session.execute(
                    update(ProvisionStep)
                    .where(ProvisionStep.project_id == proj_id, ProvisionStep.provisioner == self.name)
                    .values(status="failed", error=f"{type(error).__name__}: {error.message}"[:2000])
                )
                session.execute(update(Project).where(Project.name == project).values(status="failed"))
        except Exception:  # the step's state is a hint; the error itself is what the caller sees
            log.exception("could not record the failed models step of project %s", project)
