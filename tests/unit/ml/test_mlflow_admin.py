"""The admin client of MLflow's REST API: idempotent calls, and errors that name the call, never a secret."""

from __future__ import annotations

import httpx
import pytest

from selfserve.errors import ServiceUnavailable
from selfserve.ml.mlflow import MLflowAdmin, MLflowError
from tests.fake_mlflow import FakeMLflow

PASSWORD = "admin-password-0123456789"


@pytest.fixture
def fake() -> FakeMLflow:
    return FakeMLflow(admin_password=PASSWORD)


def test_workspaces_users_and_roles_are_idempotent(fake: FakeMLflow) -> None:
    with fake.admin() as admin:
        assert admin.healthy()
        assert admin.create_workspace("churn") is True
        assert admin.create_workspace("churn") is False
        assert admin.get_workspace("churn") == {"name": "churn"}
        user = admin.create_user("alice", "alice-password-123")
        assert user is not None and user["username"] == "alice"
        assert admin.create_user("alice", "alice-password-123") is None, "a taken name is no error"
        role = admin.create_role("churn", "scientist")
        admin.add_role_permission(role["id"], "experiment", "*", "EDIT")
        admin.assign_role("alice", role["id"])
        admin.assign_role("alice", role["id"])
        assert [r["name"] for r in admin.list_user_roles("alice")] == ["scientist"]
        admin.unassign_role("alice", role["id"])
        admin.unassign_role("alice", role["id"])
        assert admin.delete_workspace("churn") is True
        assert admin.delete_workspace("churn") is False
        assert admin.get_workspace("churn") is None
        assert admin.delete_user("alice") is True and admin.delete_user("alice") is False
    deleted = [r for r in fake.requests if r.method == "DELETE" and r.url.path.endswith("/workspaces/churn")]
    assert deleted and all(r.url.params["mode"] == "CASCADE" for r in deleted), "RESTRICT refuses a full workspace"


def test_the_workspace_travels_in_its_header(fake: FakeMLflow) -> None:
    with fake.admin() as admin:
        admin.request("GET", "/api/2.0/mlflow/users/list", workspace="churn")
    assert fake.requests[-1].headers["x-mlflow-workspace"] == "churn"


def test_an_unreachable_server_is_unavailable_without_secrets(fake: FakeMLflow) -> None:
    fake.down = True
    with fake.admin() as admin:
        with pytest.raises(ServiceUnavailable) as e:
            admin.create_user("alice", "alice-password-123")
        assert not admin.healthy()
    assert type(e.value) is ServiceUnavailable
    assert "the model registry is not reachable at http://mlflow.test" in e.value.message
    assert PASSWORD not in e.value.message and "alice-password-123" not in e.value.message


def test_a_refusal_names_method_path_and_status_never_a_secret(fake: FakeMLflow) -> None:
    with fake.admin() as admin:
        admin.create_user("alice", "alice-password-123")
        with pytest.raises(MLflowError) as e:
            admin.update_password("alice", "short")
        err = e.value
        assert isinstance(err, ServiceUnavailable) and err.status_code == 503
        assert (err.method, err.path, err.status, err.error_code) == (
            "PATCH",
            "/api/2.0/mlflow/users/update-password",
            400,
            "INVALID_PARAMETER_VALUE",
        )
        assert "PATCH /api/2.0/mlflow/users/update-password: HTTP 400" in err.message
        assert "short" not in err.message.replace("shorter", "")
        # MLflow's own message may quote the failed SQL with its parameters (a password hash): cut.
        with pytest.raises(MLflowError) as e:
            admin.request("POST", "/api/2.0/mlflow/users/create", json={"username": "alice", "password": "x" * 20})
        assert "scrypt" not in e.value.message and "parameters" not in e.value.message
        assert "x" * 20 not in e.value.message


def test_a_wrong_admin_password_is_a_refusal(fake: FakeMLflow) -> None:
    admin = MLflowAdmin("http://mlflow.test", "wrong", transport=httpx.MockTransport(fake.handle))
    with admin, pytest.raises(MLflowError, match="HTTP 401") as e:
        admin.list_users()
    assert "wrong" not in e.value.message
