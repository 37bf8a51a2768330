"""One settings tree for the whole platform.

Values come, strongest first, from init arguments, environment variables with the prefix
``SELFSERVE_`` (nested sections joined by ``__``), the TOML file named by
``SELFSERVE_CONFIG_FILE`` (default: ``config/selfserve.toml`` of the source tree), and the
defaults below. Everything else in the package reads settings through :func:`get_settings`;
nothing else reads the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SOURCE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_FILE = SOURCE_ROOT / "config" / "selfserve.toml"
PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "secret", "placeholder"}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``"30s"``, ``"15m"``, ``"12h"``, ``"30d"``, ``"2w"`` (or a plain number of seconds).

    Raises:
        ValueError: the text is not a duration.
    """
    if isinstance(text, int | float):
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use a number and s, m, h, d or w, e.g. 30d)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(text: str | int | float) -> int:
    """Bytes in ``"10GB"``, ``"512MiB"``, ``"1000"``.

    Raises:
        ValueError: the text is not a size.
    """
    if isinstance(text, int | float):
        return int(text)
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (use a number and B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "B").upper()])


class ServerSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Address the API and console listen on.")
    api_port: int = Field(8700, ge=0, le=65535, description="Port of the control-plane API.")
    console_port: int = Field(8701, ge=0, le=65535, description="Port of the Streamlit console.")
    public_url: str | None = Field(None, description="URL users reach the API at; default http://host:api_port.")
    max_body_bytes: int = Field(10 * 2**20, gt=0, description="Largest JSON request body accepted.")
    threads: int = Field(
        4, ge=1, le=64, description="Worker threads for blocking request work; few threads contend less for the GIL."
    )


class DatabaseSettings(BaseModel):
    url: str | None = Field(
        None, description="SQLAlchemy URL of the metadata DB; default a SQLite file under the home directory."
    )
    echo: bool = Field(False, description="Log every SQL statement.")


class StorageSettings(BaseModel):
    url: str | None = Field(
        None, description="Storage root: a local directory or s3://bucket[/prefix]; default <home>/storage."
    )
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint for MinIO or another S3 server.")
    s3_access_key_id: SecretStr | None = Field(None, description="S3 access key id.")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key.")
    s3_region: str = Field("us-east-1", description="S3 region.")


class DataSettings(BaseModel):
    file_roots: list[Path] = Field(
        default_factory=list,
        description="Server directories that `file` and `sqlite` sources may read (admin-set); none by default.",
    )
    allow_private_urls: bool = Field(
        True,
        description="Let URL-based sources (rest, file URLs) reach loopback and private addresses. "
        "Embedded single-machine default: true; set false on shared hosts.",
    )
    max_upload_bytes: int = Field(1 << 30, gt=0, description="Largest file upload accepted.")
    max_preview_rows: int = Field(1000, gt=0, description="Most rows a preview or query returns.")
    default_batch_rows: int = Field(50_000, gt=0, description="Rows per chunk when ingesting.")
    query_timeout: float = Field(
        300.0, gt=0, description="Seconds a SQL query or SQL transform may run before it is stopped."
    )
    transform_timeout: float = Field(
        3600.0, gt=0, description="Seconds a Polars transform's child process may run before it is killed."
    )


class ConsoleSettings(BaseModel):
    app_path: Path = Field(
        SOURCE_ROOT / "services" / "console" / "app.py", description="The Streamlit console's entry script."
    )


class PipelinesSettings(BaseModel):
    enabled: bool = Field(True, description="Run flows with Prefect; off, pipeline routes answer 503.")
    prefect_port: int = Field(8702, ge=0, le=65535, description="Port of the embedded Prefect server (127.0.0.1 only).")
    worker_port: int = Field(8703, ge=0, le=65535, description="Port of the platform's worker (health, run nudges).")
    worker_host: str = Field("127.0.0.1", description="Address the worker's port binds to.")
    worker_url: str | None = Field(
        None, description="How the API reaches the worker to nudge it when a run is created; default 127.0.0.1."
    )
    prefect_url: str | None = Field(
        None, description="Prefect API URL (ends in /api); default the embedded server on prefect_port."
    )
    prefect_auth: SecretStr | None = Field(
        None, description="Prefect's auth string (user:password); default derived from the secret key."
    )
    runner_api_url: str | None = Field(
        None, description="URL runs use to reach the API; default the API's own address."
    )
    worker_query_seconds: float = Field(1.0, gt=0, description="How often the worker asks Prefect for due runs.")
    heartbeat_seconds: float = Field(5.0, gt=0, description="How often a run's launcher reports it is alive.")
    lost_after: float = Field(
        30.0, gt=0, description="Seconds without a heartbeat after which a running run is marked crashed."
    )
    max_run_time: str = Field("24h", description="Longest a run may take when its deployment sets no timeout.")
    check_timeout: float = Field(120.0, gt=0, description="Seconds the import check of deployed code may take.")
    max_code_bytes: int = Field(20 * 2**20, gt=0, description="Largest flow code upload (zipped).")
    flows_dir: Path = Field(SOURCE_ROOT / "flows", description="The built-in flows.")
    uv: str = Field("uv", description="The uv executable that builds environments for --requirements.")
    env_build_timeout: float = Field(600.0, gt=0, description="Seconds an environment build may take.")

    @field_validator("max_run_time")
    @classmethod
    def _duration(cls, v: str) -> str:
        if parse_duration(v) <= 0:
            raise ValueError(f"must be longer than zero: {v!r}")
        return v


class ModelsSettings(BaseModel):
    enabled: bool = Field(True, description="Track experiments and models with MLflow; off, model routes answer 503.")
    mlflow_port: int = Field(8704, ge=0, le=65535, description="Port of the embedded MLflow server.")
    mlflow_host: str = Field(
        "127.0.0.1", description="Address the MLflow server binds: 127.0.0.1 embedded; 0.0.0.0 in a container."
    )
    mlflow_url: str | None = Field(
        None, description="URL the platform reaches MLflow at; default the embedded server on mlflow_port."
    )
    public_url: str | None = Field(
        None, description="Tracking URI handed to users and runs (MLFLOW_TRACKING_URI); default mlflow_url."
    )
    mlflow_admin_password: SecretStr | None = Field(
        None,
        description="Password of MLflow's admin account, held by the platform only; default derived from the "
        "secret key. Set at the server's first start only (later changes need MLflow's update-password).",
    )
    server_secret_key: SecretStr | None = Field(
        None, description="Flask session key of the MLflow server; default derived from the secret key."
    )
    backend_store_uri: str | None = Field(
        None, description="MLflow's tracking and registry database; default sqlite:///<home>/mlflow/mlflow.db."
    )
    auth_database_uri: str | None = Field(
        None, description="MLflow's users-and-grants database; default sqlite:///<home>/mlflow/auth.db."
    )
    artifacts_destination: str | None = Field(
        None,
        description="Where MLflow keeps artifacts; default <storage root>/mlflow-artifacts "
        "(a directory, or s3://bucket/prefix/mlflow-artifacts with the storage's S3 keys and endpoint).",
    )
    allowed_hosts: str | None = Field(
        None, description="MLflow's --allowed-hosts (Host headers it answers); default localhost and private IPs."
    )
    auth_cache_ttl_seconds: int = Field(
        5,
        ge=0,
        le=300,
        description="Seconds MLflow caches a checked password (0: off). Grants are read on every request; "
        "password changes and deleted users take effect at once on the one worker.",
    )
    request_timeout: float = Field(30.0, gt=0, description="Seconds one call of the platform to MLflow may take.")

    @field_validator("mlflow_url", "public_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"must be an http(s) URL: {v!r}")
        return v

    @field_validator("artifacts_destination")
    @classmethod
    def _artifacts(cls, v: str | None) -> str | None:
        if v is not None and "://" in v and not v.startswith(("s3://", "file://")):
            raise ValueError(f"must be a directory or an s3:// URI: {v!r}")
        return v


class ServingSettings(BaseModel):
    enabled: bool = Field(True, description="Serve models with BentoML; off, serving routes answer 503.")
    runtime_port: int = Field(8705, ge=0, le=65535, description="Port of the serving runtime (health, logs, nudges).")
    runtime_host: str = Field("127.0.0.1", description="Address the serving runtime's port binds to.")
    runtime_url: str | None = Field(
        None, description="How the API reaches the serving runtime; default 127.0.0.1 on runtime_port."
    )
    deployment_host: str = Field(
        "127.0.0.1", description="Address each deployment's BentoML server binds to (a free port is picked)."
    )
    deployment_url_host: str | None = Field(
        None, description="Host the gateway uses to reach deployments; default deployment_host (127.0.0.1 for 0.0.0.0)."
    )
    workers: int = Field(1, ge=1, le=16, description="BentoML worker processes per deployment.")
    poll_seconds: float = Field(0.5, gt=0, description="How often the runtime compares deployments with processes.")
    health_seconds: float = Field(2.0, gt=0, description="How often the runtime checks a ready deployment.")
    ready_timeout: float = Field(180.0, gt=0, description="Seconds a deployment may take to become ready.")
    restart_backoff_max: float = Field(30.0, gt=0, description="Longest wait before restarting a crashed deployment.")
    predict_timeout: float = Field(30.0, gt=0, description="Seconds the gateway waits for a deployment's answer.")
    max_rows: int = Field(1000, ge=1, description="Most rows one predict request may carry.")
    log_flush_seconds: float = Field(5.0, gt=0, description="How often buffered predictions are written to the log.")
    log_flush_rows: int = Field(10000, ge=1, description="Buffered predictions that start a write at once.")
    online_store: Literal["auto", "sqlite", "redis"] = Field(
        "auto", description="Where feature views live: Redis when redis_url is set (auto), else SQLite under home."
    )
    redis_url: str | None = Field(None, description="Redis for the online store, e.g. redis://127.0.0.1:6379/0.")


class MonitoringSettings(BaseModel):
    webhook_allowlist: list[str] = Field(
        default_factory=list,
        description="Hosts or networks (e.g. hooks.internal, 10.1.0.0/16) webhooks may reach although not public.",
    )
    webhook_allow_private: bool = Field(
        False, description="Let webhooks reach loopback, private and link-local addresses (single-user machines)."
    )
    webhook_timeout: float = Field(5.0, gt=0, description="Seconds a webhook POST may take.")
    max_rows: int = Field(100_000, ge=1, le=1_000_000, description="Most logged rows of a window one run reads.")
    max_report_bytes: int = Field(50 * 2**20, gt=0, description="Largest HTML report a monitor run may store.")


class SecuritySettings(BaseModel):
    session_ttl: str = Field("12h", description="Lifetime of tokens issued at login.")
    max_token_ttl: str = Field("365d", description="Longest lifetime an API token may ask for.")
    login_slow_after: int = Field(3, ge=1, description="Failed logins after which each next try must wait.")
    login_lock_after: int = Field(10, ge=2, description="Failed logins after which the account is locked.")
    login_lock_minutes: float = Field(15, gt=0, description="How long a locked account stays locked.")

    @field_validator("session_ttl", "max_token_ttl")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class PlatformSettings(BaseModel):
    max_projects_per_user: int = Field(20, ge=0, description="Projects one user may own (admins: unlimited).")
    admin_username: str = Field("admin", description="Name of the first platform admin, created at first start.")
    admin_password: SecretStr | None = Field(
        None, description="First admin's password; generated (and shown once) when not set."
    )


class RoleSettings(BaseModel):
    description: str = Field("", description="What the role is for.")
    actions: list[str] = Field(default_factory=list, description="Actions members with this role may take.")


class Settings(BaseSettings):
    """The platform's settings."""

    model_config = SettingsConfigDict(
        env_prefix="SELFSERVE_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    mode: Literal["embedded", "compose"] = Field("embedded", description="How the platform runs.")
    home: Path = Field(
        Path.home() / ".selfserve", description="Directory for the embedded platform's state, logs and data."
    )
    secret_key: SecretStr = Field(
        SecretStr(""),
        description="Key for encrypting secrets at rest. Embedded mode generates one under home if unset.",
    )
    server: ServerSettings = Field(default_factory=ServerSettings)  # type: ignore[arg-type]
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)  # type: ignore[arg-type]
    security: SecuritySettings = Field(default_factory=SecuritySettings)  # type: ignore[arg-type]
    storage: StorageSettings = Field(default_factory=StorageSettings)  # type: ignore[arg-type]
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)  # type: ignore[arg-type]
    data: DataSettings = Field(default_factory=DataSettings)  # type: ignore[arg-type]
    platform: PlatformSettings = Field(default_factory=PlatformSettings)  # type: ignore[arg-type]
    pipelines: PipelinesSettings = Field(default_factory=PipelinesSettings)  # type: ignore[arg-type]
    models: ModelsSettings = Field(default_factory=ModelsSettings)  # type: ignore[arg-type]
    serving: ServingSettings = Field(default_factory=ServingSettings)  # type: ignore[arg-type]
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)  # type: ignore[arg-type]
    quotas: dict[str, str | int | float] = Field(
        default_factory=dict, description="Quotas every new project starts with, by resource."
    )
    roles: dict[str, RoleSettings] = Field(default_factory=dict, description="Project roles and their actions.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = Path(os.environ.get("SELFSERVE_CONFIG_FILE", DEFAULT_CONFIG_FILE))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file if config_file.exists() else None)
        return (init_settings, env_settings, toml)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.home / 'selfserve.db'}"

    @property
    def api_url(self) -> str:
        return self.server.public_url or f"http://{self.server.host}:{self.server.api_port}"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def prefect_url(self) -> str:
        return self.pipelines.prefect_url or f"http://127.0.0.1:{self.pipelines.prefect_port}/api"

    @property
    def worker_url(self) -> str:
        return (self.pipelines.worker_url or f"http://127.0.0.1:{self.pipelines.worker_port}").rstrip("/")

    @property
    def serving_runtime_url(self) -> str:
        return (self.serving.runtime_url or f"http://127.0.0.1:{self.serving.runtime_port}").rstrip("/")

    @property
    def runner_api_url(self) -> str:
        if self.pipelines.runner_api_url:
            return self.pipelines.runner_api_url
        host = self.server.host if self.server.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.server.api_port}"

    def derived_secret(self, purpose: str) -> str:
        """A secret for one internal purpose, derived from the secret key (stable across restarts)."""
        key = self.resolved_secret_key().encode()
        return hmac.new(key, f"selfserve:{purpose}".encode(), hashlib.sha256).hexdigest()

    def prefect_auth_string(self) -> str:
        """Prefect's ``user:password``; held by the platform's own processes only."""
        if self.pipelines.prefect_auth is not None:
            return self.pipelines.prefect_auth.get_secret_value()
        return "selfserve:" + self.derived_secret("prefect")

    @property
    def mlflow_url(self) -> str:
        return (self.models.mlflow_url or f"http://127.0.0.1:{self.models.mlflow_port}").rstrip("/")

    @property
    def mlflow_public_url(self) -> str:
        """The tracking URI users and runs get."""
        return (self.models.public_url or self.mlflow_url).rstrip("/")

    def mlflow_admin_password(self) -> str:
        """The password of MLflow's admin account; held by the platform's own processes only."""
        if self.models.mlflow_admin_password is not None:
            return self.models.mlflow_admin_password.get_secret_value()
        return self.derived_secret("mlflow-admin")

    def mlflow_server_secret_key(self) -> str:
        """The MLflow server's Flask session key."""
        if self.models.server_secret_key is not None:
            return self.models.server_secret_key.get_secret_value()
        return self.derived_secret("mlflow-flask")

    @property
    def mlflow_backend_store_uri(self) -> str:
        return self.models.backend_store_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_auth_database_uri(self) -> str:
        return self.models.auth_database_uri or f"sqlite:///{self.home / 'mlflow' / 'auth.db'}"

    @property
    def mlflow_artifacts_destination(self) -> str:
        """Where MLflow keeps artifacts: next to the projects in the platform's storage root."""
        if self.models.artifacts_destination:
            return self.models.artifacts_destination
        root = self.storage.url or str(self.home / "storage")
        if root.startswith("s3://"):
            return root.rstrip("/") + "/mlflow-artifacts"
        return str(Path(root.removeprefix("file://")).expanduser().resolve() / "mlflow-artifacts")

    def runner_key(self) -> str:
        """The key launchers present to the API's runner endpoints."""
        return self.derived_secret("runner")

    def resolved_secret_key(self) -> str:
        """The encryption key: the configured one, or in embedded mode one generated under home.

        Raises:
            RuntimeError: outside embedded mode with no or a placeholder key.
        """
        key = self.secret_key.get_secret_value()
        if key.strip().lower() not in PLACEHOLDER_SECRETS:
            return key
        if self.mode != "embedded":
            raise RuntimeError("SELFSERVE_SECRET_KEY is unset or a placeholder; set a real secret to start.")
        path = self.home / "secret.key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip()


class ClientSettings(BaseSettings):
    """What the SDK and CLI need: where the API is, and which saved login to use."""

    model_config = SettingsConfigDict(env_prefix="SELFSERVE_", extra="ignore")

    url: str | None = Field(None, description="API URL; default the saved login's, then http://127.0.0.1:8700.")
    token: SecretStr | None = Field(None, description="API token; default the saved login's.")
    config_dir: Path = Field(
        Path.home() / ".config" / "selfserve", description="Where `selfserve login` saves credentials."
    )
    timeout: float = Field(60.0, gt=0, description="Seconds before an API call gives up.")


def inherited_environ() -> dict[str, str]:
    """A copy of this process's environment (the one other read of it): for building a child process's,
    and for a child the platform started to read what it was handed (a deployment's model file)."""
    return dict(os.environ)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once. Tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()


def get_client_settings(**overrides: Any) -> ClientSettings:
    return ClientSettings(**overrides)
