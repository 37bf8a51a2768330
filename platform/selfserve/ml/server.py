"""``python -m selfserve.ml.server``: MLflow's tracking server under basic auth, configured from settings.

It writes the auth configuration (``<home>/mlflow/auth.ini``, 0600) and replaces itself with
``mlflow server``: one worker, job execution off, workspaces on, artifacts served through the server
(so users and runs never hold storage keys). Nobody but the platform knows the admin account: its
password comes from the environment, never from a file. ``selfserve up`` runs this as the ``mlflow``
service; compose runs the same command in the api image.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from selfserve.settings import Settings, get_settings, inherited_environ

# The platform's own account on the MLflow server. A '.' never appears in a user's name and service
# accounts are ``svc.<project>``, so no platform principal can ever hold this name.
ADMIN_USERNAME = "selfserve.admin"
AUTH_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"


def auth_config_path(settings: Settings) -> Path:
    return settings.home / "mlflow" / "auth.ini"


def auth_ini(settings: Settings) -> str:
    """MLflow's basic-auth configuration: nothing is allowed unless a role grants it."""
    return (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {settings.mlflow_auth_database_uri}\n"
        f"admin_username = {ADMIN_USERNAME}\n"
        f"authorization_function = {AUTH_FUNCTION}\n"
        "grant_default_workspace_access = false\n"
        f"auth_cache_ttl_seconds = {settings.models.auth_cache_ttl_seconds}\n"
    )


def write_auth_config(settings: Settings) -> Path:
    """Write ``auth.ini`` (0600, replaced whole) and return its path."""
    path = auth_config_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(auth_ini(settings))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def command(settings: Settings) -> list[str]:
    """The ``mlflow server`` command line."""
    models = settings.models
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        settings.mlflow_backend_store_uri,
        "--artifacts-destination",
        settings.mlflow_artifacts_destination,
        "--serve-artifacts",
        "--host",
        models.mlflow_host,
        "--port",
        str(models.mlflow_port),
        "--workers",
        "1",
        "--enable-workspaces",
    ]
    if models.allowed_hosts:
        argv += ["--allowed-hosts", models.allowed_hosts]
    return argv


def environment(settings: Settings) -> dict[str, str]:
    """The server's environment: the inherited one without the platform's settings or a workspace."""
    env = {k: v for k, v in inherited_environ().items() if not k.startswith(("SELFSERVE_", "MLFLOW_", "AWS_"))}
    env.update(
        {
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_config_path(settings)),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": settings.mlflow_server_secret_key(),
            "MLFLOW_AUTH_ADMIN_PASSWORD": settings.mlflow_admin_password(),
            # Jobs would start a worker pool per server: several hundred MiB more on two cores.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    storage = settings.storage
    if settings.mlflow_artifacts_destination.startswith("s3://"):
        if storage.s3_access_key_id is not None:
            env["AWS_ACCESS_KEY_ID"] = storage.s3_access_key_id.get_secret_value()
        if storage.s3_secret_access_key is not None:
            env["AWS_SECRET_ACCESS_KEY"] = storage.s3_secret_access_key.get_secret_value()
        if storage.s3_endpoint_url:
            env["MLFLOW_S3_ENDPOINT_URL"] = storage.s3_endpoint_url
        env["AWS_DEFAULT_REGION"] = storage.s3_region
    return env


def prepare(settings: Settings) -> None:
    """Create the directories the server writes to and its auth configuration."""
    for uri in (settings.mlflow_backend_store_uri, settings.mlflow_auth_database_uri):
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    dest = settings.mlflow_artifacts_destination
    if "://" not in dest or dest.startswith("file://"):
        Path(dest.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    write_auth_config(settings)


def main() -> None:
    settings = get_settings()
    prepare(settings)
    argv = command(settings)
    sys.stdout.flush()
    os.execve(argv[0], argv, environment(settings))


if __name__ == "__main__":
    main()
