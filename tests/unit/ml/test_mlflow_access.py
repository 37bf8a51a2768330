"""MLflow under platform identity, against an in-memory MLflow admin API (the integration suite runs the real one):
a workspace and roles per project, each member's own account holding exactly their role's grants, a member's
own credentials from ``GET /projects/<p>/mlflow``, the runs' service account, and faults of the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from selfserve.errors import Conflict, NotFound, ServiceUnavailable
from selfserve.ml import identity
from selfserve.ml.access import run_env
from selfserve.ml.provisioner import mlflow_permissions, role_permissions
from selfserve.pipelines.launch import child_env
from selfserve.settings import get_settings
from selfserve.store.tables import AuditEvent, MlflowIdentity, Principal
from tests.fake_mlflow import FakeMLflow, models_platform
from tests.support import Platform


@pytest.fixture
def on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[tuple[Platform, FakeMLflow]]:
    """Models on, on SQLite and (with SELFSERVE_TEST_POSTGRES_URL) PostgreSQL: the provisioner writes
    accounts through its own session while the request's is open."""
    with models_platform(tmp_path, monkeypatch, db_url) as found:
        yield found


def test_role_permissions_follow_the_role_matrix() -> None:
    assert role_permissions(get_settings()) == {
        "owner": {"experiment": "MANAGE", "registered_model": "MANAGE", "workspace": "USE"},
        "scientist": {"experiment": "EDIT", "registered_model": "EDIT", "workspace": "USE"},
        "service": {"experiment": "EDIT", "registered_model": "EDIT", "workspace": "USE"},
        "engineer": {"experiment": "EDIT", "registered_model": "EDIT", "workspace": "USE"},
        "viewer": {"experiment": "READ", "registered_model": "READ"},
    }
    assert mlflow_permissions(["dataset:read", "flow:run"]) == {}
    assert mlflow_permissions(["model:write"]) == {"registered_model": "EDIT", "workspace": "USE"}
    assert "MANAGE" not in {
        v for k, v in mlflow_permissions(["member:write", "experiment:write"]).items() if k == "workspace"
    }


def test_a_new_project_has_a_workspace_with_its_owner_and_service_account(on: tuple[Platform, FakeMLflow]) -> None:
    platform, fake = on
    alice = platform.user("alice")
    shown = alice.projects.create("churn")
    assert {s.provisioner: s.status for s in shown.provisioning}["models"] == "ready"
    assert "churn" in fake.workspaces
    for role, perms in role_permissions(get_settings()).items():
        assert fake.permissions("churn", role) == perms
    assert fake.roles_of("alice", "churn") == {"owner"}
    assert fake.roles_of("svc.churn", "churn") == {"service"}


def test_grants_follow_members(on: tuple[Platform, FakeMLflow]) -> None:
    platform, fake = on
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    platform.user("bob", admin_client=admin)
    platform.user("carol", admin_client=admin)
    alice.projects.create("churn")
    alice.projects.create("fraud")

    alice.members.add("churn", "bob", role="scientist")
    alice.members.add("churn", "carol", role="engineer")
    alice.members.add("fraud", "bob", role="viewer")
    assert fake.roles_of("bob", "churn") == {"scientist"} and fake.roles_of("bob", "fraud") == {"viewer"}
    assert fake.roles_of("carol", "churn") == {"engineer"}
    # As in MLflow, bob's own experiments give him MANAGE on them through a per-user role.
    fake.create_experiment("bob", "churn", "7")
    assert fake.roles_of("bob", "churn") == {"scientist", f"__user_{fake.user_id('bob')}__"}

    alice.members.set_role("churn", "bob", "viewer")
    assert fake.roles_of("bob", "churn") == {"viewer"}, "a viewer keeps no write grant of his own"
    alice.members.set_role("churn", "bob", "scientist")
    fake.create_experiment("bob", "churn", "8")
    alice.members.remove("churn", "bob")
    assert fake.roles_of("bob", "churn") == set(), "removed: nothing left in the workspace"
    assert fake.roles_of("bob", "fraud") == {"viewer"}, "other projects are untouched"
    assert fake.roles_of("alice", "churn") == {"owner"} and fake.roles_of("svc.churn", "churn") == {"service"}


def test_a_member_gets_their_own_credentials(on: tuple[Platform, FakeMLflow]) -> None:
    platform, fake = on
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    bob = platform.user("bob", admin_client=admin)
    alice.projects.create("churn")
    alice.members.add("churn", "bob", role="viewer")

    env = bob.mlflow.env("churn")
    assert (env.tracking_uri, env.workspace, env.username) == ("http://mlflow.test", "churn", "bob")
    assert fake.users["bob"]["password"] == env.password and len(env.password) >= 40
    assert env.environment() == {
        "MLFLOW_TRACKING_URI": "http://mlflow.test",
        "MLFLOW_TRACKING_USERNAME": "bob",
        "MLFLOW_TRACKING_PASSWORD": env.password,
        "MLFLOW_WORKSPACE": "churn",
    }
    assert env.password not in repr(env)
    assert bob.mlflow.env("churn") == env, "the same account every time"
    assert fake.roles_of("bob", "churn") == {"viewer"}
    assert alice.mlflow.env("churn").password != env.password

    # A non-member cannot learn the project exists; an admin who is not a member gets the owner's grants.
    carol = platform.user("carol", admin_client=admin)
    with pytest.raises(NotFound):
        carol.mlflow.env("churn")
    assert "carol" not in fake.users
    admin.mlflow.env("churn")
    assert fake.roles_of("admin", "churn") == {"owner"}
    alice.members.add("churn", "carol", role="viewer")
    assert fake.roles_of("admin", "churn") == set(), "the next member change takes an admin's grants back"

    with platform.store.session() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "mlflow:account-create")))
    # Members' accounts come with their membership; only the admin's was made by asking.
    assert [(e.principal, e.target) for e in events] == [("admin", "admin")]
    assert not [e for e in events if env.password in str(e.detail)]


def test_models_off_answer_503_after_authorization(sqlite_platform: Platform) -> None:
    admin = sqlite_platform.admin()
    alice = sqlite_platform.user("alice", admin_client=admin)
    carol = sqlite_platform.user("carol", admin_client=admin)
    alice.projects.create("churn")
    with pytest.raises(ServiceUnavailable, match="models are not enabled"):
        alice.mlflow.env("churn")
    with pytest.raises(NotFound):
        carol.mlflow.env("churn")


def test_deleting_a_project_removes_its_workspace_service_account_and_artifacts(
    on: tuple[Platform, FakeMLflow],
) -> None:
    platform, fake = on
    alice = platform.user("alice")
    alice.projects.create("churn")
    alice.projects.create("fraud")
    artifacts = Path(get_settings().mlflow_artifacts_destination) / "workspaces"
    for ws in ("churn", "fraud"):
        (artifacts / ws / "1").mkdir(parents=True)
        (artifacts / ws / "1" / "model.pkl").write_bytes(b"x")
    alice.projects.delete("churn")
    assert "churn" not in fake.workspaces and "svc.churn" not in fake.users
    assert not (artifacts / "churn").exists()
    assert (artifacts / "fraud" / "1" / "model.pkl").exists() and "fraud" in fake.workspaces
    alice.projects.create("churn")  # the same name again starts clean
    assert fake.roles_of("svc.churn", "churn") == {"service"}


def test_a_leftover_account_of_the_same_name_is_replaced(on: tuple[Platform, FakeMLflow]) -> None:
    platform, fake = on
    alice = platform.user("alice")
    with fake.admin() as mlflow:
        mlflow.create_workspace("other")
        role = mlflow.create_role("other", "spy")
        mlflow.create_user("svc.churn", "leftover-password-123")
        mlflow.assign_role("svc.churn", role["id"])
    alice.projects.create("churn")
    assert fake.roles_of("svc.churn", "other") == set(), "the new account holds nothing of the old"
    assert fake.users["svc.churn"]["password"] != "leftover-password-123"


def test_drifted_roles_are_repaired(on: tuple[Platform, FakeMLflow]) -> None:
    platform, fake = on
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    platform.user("bob", admin_client=admin)
    alice.projects.create("churn")
    viewer = fake.role("churn", "viewer")
    viewer["permissions"][0]["permission"] = "MANAGE"
    viewer["permissions"].append(
        {
            "id": 999,
            "role_id": viewer["id"],
            "resource_type": "workspace",
            "resource_pattern": "*",
            "permission": "MANAGE",
        }
    )
    with fake.admin() as mlflow:
        mlflow.assign_role("alice", viewer["id"])
    alice.members.add("churn", "bob", role="viewer")
    assert fake.permissions("churn", "viewer") == {"experiment": "READ", "registered_model": "READ"}
    assert fake.roles_of("alice", "churn") == {"owner"}


def test_a_down_server_fails_the_step_and_provision_catches_up(on: tuple[Platform, FakeMLflow]) -> None:
    platform, fake = on
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    platform.user("bob", admin_client=admin)
    alice.projects.create("churn")
    alice.members.add("churn", "bob", role="scientist")

    fake.down = True
    with pytest.raises(ServiceUnavailable) as e:
        alice.members.remove("churn", "bob")
    assert "selfserve project provision churn" in e.value.message
    shown = alice.projects.get("churn")
    assert shown.status == "failed" and {s.provisioner: s.status for s in shown.provisioning}["models"] == "failed"
    assert [m.user for m in alice.members.list("churn")] == ["alice", "svc.churn"], "the removal itself holds"
    with pytest.raises(ServiceUnavailable, match="not reachable"):
        alice.mlflow.env("churn")

    fake.down = False
    assert fake.roles_of("bob", "churn") == {"scientist"}
    shown = alice.projects.provision("churn")
    assert shown.status == "ready"
    assert fake.roles_of("bob", "churn") == set(), "provisioning again revokes what the removal could not"


def test_a_project_made_while_mlflow_was_down_is_provisioned_later(on: tuple[Platform, FakeMLflow]) -> None:
    platform, fake = on
    alice = platform.user("alice")
    fake.down = True
    shown = alice.projects.create("churn")
    assert shown.status == "failed"
    fake.down = False
    assert alice.projects.provision("churn").status == "ready"
    assert fake.roles_of("alice", "churn") == {"owner"} and fake.roles_of("svc.churn", "churn") == {"service"}


def test_a_disabled_user_is_shut_out_of_mlflow(on: tuple[Platform, FakeMLflow]) -> None:
    platform, fake = on
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    alice.projects.create("churn")
    password = alice.mlflow.env("churn").password
    admin.users.disable("alice")
    assert fake.users["alice"]["password"] != password
    admin.users.enable("alice")
    assert fake.users["alice"]["password"] == password


def test_runs_get_the_service_account(on: tuple[Platform, FakeMLflow], tmp_path: Path) -> None:
    platform, fake = on
    alice = platform.user("alice")
    alice.projects.create("churn")
    settings = get_settings()
    with platform.store.session() as s:
        svc = s.scalar(select(Principal).where(Principal.name == "svc.churn"))
        assert svc is not None
        found = run_env(s, settings, "churn", svc)
    assert found is not None
    assert found == {
        "tracking_uri": "http://mlflow.test",
        "workspace": "churn",
        "username": "svc.churn",
        "password": fake.users["svc.churn"]["password"],
    }
    ctx = {"api_url": "http://api", "token": "t", "project": "churn", "storage_prefix": "projects/churn"}
    env = child_env({**ctx, "mlflow": found}, "run-1", tmp_path)
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.test" and env["MLFLOW_WORKSPACE"] == "churn"
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == ("svc.churn", found["password"])
    assert "MLFLOW_TRACKING_URI" not in child_env({**ctx, "mlflow": None}, "run-1", tmp_path)

    # An account lost with a failed provisioning is made at the run's start.
    with platform.store.begin() as s:
        s.execute(MlflowIdentity.__table__.delete())
    with platform.store.session() as s:
        svc = s.scalar(select(Principal).where(Principal.name == "svc.churn"))
        assert svc is not None
        again = run_env(s, settings, "churn", svc)
        s.commit()
    assert again is not None and again["password"] == fake.users["svc.churn"]["password"] != found["password"]
    assert fake.roles_of("svc.churn", "churn") == {"service"}
    fake.down = True
    with platform.store.session() as s:
        s.execute(MlflowIdentity.__table__.delete())
        svc = s.scalar(select(Principal).where(Principal.name == "svc.churn"))
        assert svc is not None
        assert run_env(s, settings, "churn", svc) is None, "a run must not fail because MLflow is down"


def test_two_requests_making_one_account_do_not_clash(
    on: tuple[Platform, FakeMLflow], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, fake = on
    alice = platform.user("alice")
    alice.projects.create("churn")
    password = fake.users["alice"]["password"]
    # As if another request made alice's account between this one's look-up and its insert.
    monkeypatch.setattr(identity, "find", lambda session, principal_id: None)
    with pytest.raises(Conflict, match="being made right now"):
        alice.mlflow.env("churn")
    assert fake.users["alice"]["password"] == password, "the account made first is left as it is"
