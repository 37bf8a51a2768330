"""Source connectors: one per kind, chosen by the source's ``kind``, all reading into Arrow batches.

    build("postgres", config, secrets, settings).read(ReadRequest(table="public.events"))

Kinds: file, s3, postgres, mysql, sqlite, redis, rest, nats. Each has a pydantic config model
(:func:`config_model`, unknown keys refused) whose secret keys are listed in :data:`SECRET_FIELDS`;
:func:`split_secrets` validates what a user sent and splits it into the config to store in clear and
the secrets to store encrypted (a password written inside a URL moves to the secrets).

Connectors never write to a source (SQL sessions are read-only, Redis commands are read commands,
REST is GET only; a NATS durable consumer's position is the one state a read moves). Every error is
an :class:`~selfserve.errors.InvalidInput` (bad config, table, query, credentials or content) or a
:class:`~selfserve.errors.ServiceUnavailable` (source unreachable), with the secrets masked.

Driver imports (psycopg, pymysql, redis, nats, boto3, httpx) happen inside the connectors, so
importing this package stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from selfserve.data.connectors._common import SourceConfig, unwrap_secrets, validation_message
from selfserve.data.connectors._file import FileConfig, FileConnector, read_upload
from selfserve.data.connectors._formats import FORMATS, FormatOptions
from selfserve.data.connectors._mysql import MySQLConfig, MySQLConnector
from selfserve.data.connectors._nats import NatsConfig, NatsConnector
from selfserve.data.connectors._postgres import PostgresConfig, PostgresConnector
from selfserve.data.connectors._redis import RedisConfig, RedisConnector, RedisReadOptions
from selfserve.data.connectors._rest import (
    CursorPagination,
    NoPagination,
    OffsetPagination,
    PagePagination,
    RestConfig,
    RestConnector,
)
from selfserve.data.connectors._s3 import S3Config, S3Connector
from selfserve.data.connectors._sqlite import SQLiteConfig, SQLiteConnector
from selfserve.data.connectors.base import Connector, ReadRequest
from selfserve.errors import InvalidInput
from selfserve.settings import Settings, get_settings

__all__ = [
    "FORMATS",
    "KINDS",
    "SECRET_FIELDS",
    "Connector",
    "CursorPagination",
    "FileConfig",
    "FormatOptions",
    "MySQLConfig",
    "NatsConfig",
    "NoPagination",
    "OffsetPagination",
    "PagePagination",
    "PostgresConfig",
    "ReadRequest",
    "RedisConfig",
    "RedisReadOptions",
    "RestConfig",
    "S3Config",
    "SQLiteConfig",
    "SourceConfig",
    "build",
    "config_model",
    "read_upload",
    "split_secrets",
]

KINDS: dict[str, type[Connector]] = {
    cls.kind: cls
    for cls in (
        FileConnector,
        S3Connector,
        PostgresConnector,
        MySQLConnector,
        SQLiteConnector,
        RedisConnector,
        RestConnector,
        NatsConnector,
    )
}

_MODELS: dict[str, type[SourceConfig]] = {
    "file": FileConfig,
    "s3": S3Config,
    "postgres": PostgresConfig,
    "mysql": MySQLConfig,
    "sqlite": SQLiteConfig,
    "redis": RedisConfig,
    "rest": RestConfig,
    "nats": NatsConfig,
}

#: The config keys of each kind that hold secrets: stored encrypted, never returned, always masked.
SECRET_FIELDS: dict[str, frozenset[str]] = {kind: model.secret_fields for kind, model in _MODELS.items()}


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidInput(f"unknown source kind {str(kind)[:40]!r}: use one of {', '.join(sorted(KINDS))}")
    return kind


def config_model(kind: str) -> type[SourceConfig]:
    """The pydantic model of a kind's settings, secrets included (unknown keys are refused).

    Raises:
        InvalidInput: unknown kind (the message lists the kinds).
    """
    return _MODELS[_check_kind(kind)]


def split_secrets(kind: str, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate a source's settings as a user sent them and split them into (config, secrets).

    A password written inside a ``url`` (``postgresql://u:pw@h/db``) is moved to the secrets and
    removed from the URL. Defaults are filled in; unset optional values are left out.

    Args:
        kind: The source kind.
        values: Config and secrets together, e.g. an API request's ``config``.

    Returns:
        The config to store in clear and the secrets to encrypt (plain values, no ``SecretStr``).

    Raises:
        InvalidInput: unknown kind or invalid settings; the message never repeats the values.
    """
    model = config_model(kind)
    try:
        parsed = model.model_validate(dict(values))
    except ValidationError as exc:
        raise InvalidInput(validation_message(f"{kind} source", exc)) from None
    data = unwrap_secrets(parsed.model_dump(mode="python", exclude_none=True))
    secrets = {k: data.pop(k) for k in list(data) if k in model.secret_fields}
    secrets = {k: v for k, v in secrets.items() if v not in ({}, "", None)}
    return data, secrets


def build(
    kind: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> Connector:
    """The connector for a source.

    Args:
        kind: One of :data:`KINDS`.
        config: The stored (non-secret) settings.
        secrets: The decrypted secrets.
        settings: The platform settings (file roots, URL policy); default :func:`get_settings`.

    Raises:
        InvalidInput: unknown kind (the message lists the kinds) or invalid settings.
    """
    cls = KINDS[_check_kind(kind)]
    return cls(dict(config), dict(secrets or {}), settings or get_settings())
