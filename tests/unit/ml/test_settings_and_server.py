"""Models settings and the MLflow server's configuration: derived secrets, artifacts, auth.ini, argv, env."""

from __future__ import annotations

import configparser
import stat
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from selfserve.ml import server, workspace_name
from selfserve.settings import Settings, get_settings


def test_models_are_on_by_default_on_their_own_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SELFSERVE_MODELS__ENABLED")
    s = Settings()
    assert s.models.enabled and s.models.mlflow_port == 8704 and s.models.mlflow_host == "127.0.0.1"
    assert s.mlflow_url == "http://127.0.0.1:8704" == s.mlflow_public_url
    assert s.mlflow_backend_store_uri == f"sqlite:///{s.home / 'mlflow' / 'mlflow.db'}"
    assert s.mlflow_auth_database_uri == f"sqlite:///{s.home / 'mlflow' / 'auth.db'}"


def test_the_admin_password_is_derived_stable_and_distinct() -> None:
    first, again = Settings(), Settings()
    password = first.mlflow_admin_password()
    assert password == again.mlflow_admin_password(), "stable across processes (restarts)"
    assert len(password) >= 12, "MLflow refuses shorter passwords"
    assert password not in (first.prefect_auth_string(), first.runner_key(), first.mlflow_server_secret_key())
    assert password not in first.resolved_secret_key()
    other = Settings(secret_key="another-key-entirely")  # type: ignore[arg-type]
    assert other.mlflow_admin_password() != password
    given = Settings(models={"mlflow_admin_password": "given-password-1234"})  # type: ignore[arg-type]
    assert given.mlflow_admin_password() == "given-password-1234"


def test_artifacts_follow_the_storage_root(tmp_path: Path) -> None:
    default = get_settings().home.resolve() / "storage" / "mlflow-artifacts"
    assert Settings().mlflow_artifacts_destination == str(default)
    local = Settings(storage={"url": f"file://{tmp_path}/store"})  # type: ignore[arg-type]
    assert local.mlflow_artifacts_destination == str(tmp_path / "store" / "mlflow-artifacts")
    s3 = Settings(storage={"url": "s3://bucket/prefix/"})  # type: ignore[arg-type]
    assert s3.mlflow_artifacts_destination == "s3://bucket/prefix/mlflow-artifacts"
    given = Settings(models={"artifacts_destination": "s3://other/arts"})  # type: ignore[arg-type]
    assert given.mlflow_artifacts_destination == "s3://other/arts"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mlflow_port", 70000),
        ("mlflow_port", -1),
        ("mlflow_url", "ftp://mlflow:21"),
        ("mlflow_url", "127.0.0.1:8704"),
        ("public_url", "not a url"),
        ("artifacts_destination", "gs://bucket/arts"),
        ("auth_cache_ttl_seconds", -5),
        ("auth_cache_ttl_seconds", 100000),
        ("request_timeout", 0),
    ],
)
def test_nonsense_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(models={field: value})  # type: ignore[arg-type]


def test_nonsense_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFSERVE_MODELS__ENABLED", "perhaps")
    with pytest.raises(ValidationError, match="enabled"):
        Settings()


def test_auth_ini_is_private_and_denies_by_default() -> None:
    s = get_settings()
    path = server.write_auth_config(s)
    assert path == s.home / "mlflow" / "auth.ini"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ini = configparser.ConfigParser()
    ini.read(path)
    assert dict(ini["mlflow"]) == {
        "default_permission": "NO_PERMISSIONS",
        "database_uri": f"sqlite:///{s.home / 'mlflow' / 'auth.db'}",
        "admin_username": server.ADMIN_USERNAME,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
        "auth_cache_ttl_seconds": "5",
    }
    assert s.mlflow_admin_password() not in path.read_text(), "the admin password comes from the environment only"
    path.chmod(0o644)
    server.write_auth_config(s)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "rewritten private at every start"


def test_the_admin_name_is_no_platform_principal_s() -> None:
    from selfserve.schemas import NAME_RULE

    assert not NAME_RULE.fullmatch(server.ADMIN_USERNAME), "a user could be named like the MLflow admin"
    assert not server.ADMIN_USERNAME.startswith("svc."), "a service account could be named like the MLflow admin"


def test_command_is_one_worker_with_basic_auth_and_workspaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFSERVE_MODELS__MLFLOW_PORT", "9704")
    get_settings.cache_clear()
    s = get_settings()
    argv = server.command(s)
    assert argv[:4] == [sys.executable, "-m", "mlflow", "server"]

    def opt(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert opt("--app-name") == "basic-auth"
    assert opt("--backend-store-uri") == s.mlflow_backend_store_uri
    assert opt("--artifacts-destination") == s.mlflow_artifacts_destination
    assert (opt("--host"), opt("--port"), opt("--workers")) == ("127.0.0.1", "9704", "1")
    assert "--serve-artifacts" in argv and "--enable-workspaces" in argv
    assert "--allowed-hosts" not in argv


def test_environment_holds_the_server_secrets_and_nothing_of_the_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFSERVE_SECRET_KEY", "platform-secret-key-123")
    monkeypatch.setenv("MLFLOW_WORKSPACE", "someone-elses")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "leaked")
    get_settings.cache_clear()
    s = get_settings()
    env = server.environment(s)
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(s.home / "mlflow" / "auth.ini")
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == s.mlflow_admin_password()
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == s.mlflow_server_secret_key()
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "MLFLOW_WORKSPACE" not in env and "MLFLOW_TRACKING_PASSWORD" not in env
    assert not [k for k in env if k.startswith("SELFSERVE_")]
    assert "platform-secret-key-123" not in env.values()
    assert not [k for k in env if k.startswith("AWS_")], "no S3 keys for local artifacts"


def test_s3_artifacts_get_the_storage_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "URL": "s3://bucket/platform",
        "S3_ENDPOINT_URL": "http://minio:9000",
        "S3_ACCESS_KEY_ID": "access",
        "S3_SECRET_ACCESS_KEY": "secret-key",
        "S3_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(f"SELFSERVE_STORAGE__{key}", value)
    get_settings.cache_clear()
    s = get_settings()
    env = server.environment(s)
    assert server.command(s)[server.command(s).index("--artifacts-destination") + 1] == (
        "s3://bucket/platform/mlflow-artifacts"
    )
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("access", "secret-key")
    assert (env["MLFLOW_S3_ENDPOINT_URL"], env["AWS_DEFAULT_REGION"]) == ("http://minio:9000", "eu-west-1")


def test_prepare_makes_the_directories(tmp_path: Path) -> None:
    s = get_settings()
    server.prepare(s)
    assert (s.home / "mlflow").is_dir() and Path(s.mlflow_artifacts_destination).is_dir()
    assert (s.home / "mlflow" / "auth.ini").is_file()


@pytest.mark.parametrize(
    ("project", "workspace"),
    [
        ("churn", "churn"),
        ("churn-2", "churn-2"),
        ("a", "0a"),
        ("churn-", "1churn"),
        ("x--", "2x"),
        ("default", "0default"),
        ("api", "0api"),
        ("workspaces", "0workspaces"),
        ("a" * 62 + "-", "1" + "a" * 62),
    ],
)
def test_workspace_names(project: str, workspace: str) -> None:
    from mlflow.store.workspace.abstract_store import WorkspaceNameValidator

    assert workspace_name(project) == workspace
    WorkspaceNameValidator.validate(workspace)


def test_workspace_names_never_collide() -> None:
    names = ["a", "b", "0a", "ab", "ab-", "ab--", "abc", "1ab", "default", "0default", "api", "x" * 63, "x" * 62 + "-"]
    valid = [n for n in names if n[0].isalpha()]  # only names a project can have
    assert len({workspace_name(n) for n in valid}) == len(valid)
