"""One settings tree for the whole platform.

Values come, strongest first, from init arguments, environment variables with the prefix
``SELFSERVE_`` (nested sections joined by ``__``), the TOML file named by
``SELFSERVE_CONFIG_FILE`` (default: ``config/selfserve.toml`` of the source tree), and the
defaults below. Everything else in the package reads settings through :func:`get_settings`;
nothing else reads the environment.
"""

from __future__ import annotations

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
    """A copy of this process's environment, for building a child process's (the one other read of it)."""
    return dict(os.environ)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once. Tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()


def get_client_settings(**overrides: Any) -> ClientSettings:
    return ClientSettings(**overrides)
