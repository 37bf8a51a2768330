"""The connector registry: kinds, config models, secret splitting, the public names."""

from __future__ import annotations

import subprocess
import sys

import pytest

import selfserve.data.connectors as connectors
from selfserve.data.connectors import KINDS, SECRET_FIELDS, build, config_model, split_secrets
from selfserve.data.connectors.base import Connector
from selfserve.errors import InvalidInput

EXPECTED_KINDS = {"file", "s3", "postgres", "mysql", "sqlite", "redis", "rest", "nats"}


def test_public_names() -> None:
    assert connectors.__all__ == sorted(connectors.__all__, key=lambda n: (not n.isupper(), n))
    assert set(connectors.__all__) == {
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
    }
    for name in connectors.__all__:
        assert hasattr(connectors, name), name


def test_kinds() -> None:
    assert set(KINDS) == EXPECTED_KINDS == set(SECRET_FIELDS)
    for kind, cls in KINDS.items():
        assert issubclass(cls, Connector) and cls.kind == kind
        assert config_model(kind).model_config.get("extra") == "forbid"


def test_secret_fields() -> None:
    assert SECRET_FIELDS["postgres"] == {"password"}
    assert SECRET_FIELDS["mysql"] == {"password"}
    assert SECRET_FIELDS["redis"] == {"password"}
    assert SECRET_FIELDS["s3"] == {"access_key_id", "secret_access_key"}
    assert SECRET_FIELDS["rest"] == {"token", "secret_headers", "secret_params"}
    assert SECRET_FIELDS["nats"] == {"user", "password", "token"}
    assert SECRET_FIELDS["file"] == SECRET_FIELDS["sqlite"] == frozenset()


def test_unknown_kind_lists_the_kinds() -> None:
    with pytest.raises(InvalidInput, match="unknown source kind 'oracle': use one of file, mysql, nats, postgres"):
        build("oracle", {}, {})
    with pytest.raises(InvalidInput, match="unknown source kind"):
        config_model("oracle")


def test_split_moves_url_password_to_secrets() -> None:
    config, secrets = split_secrets("postgres", {"url": "postgresql://ann:p%40ss@db.example:5433/sales"})
    assert config["url"] == "postgresql://ann@db.example:5433/sales"
    assert secrets == {"password": "p@ss"}
    config, secrets = split_secrets("mysql", {"host": "db", "user": "u", "password": "pw", "database": "d"})
    assert "password" not in config and secrets == {"password": "pw"}
    config, secrets = split_secrets("redis", {"url": "redis://:hunter22@cache:6379/2"})
    assert config["url"] == "redis://cache:6379/2" and secrets == {"password": "hunter22"}
    config, secrets = split_secrets("nats", {"url": "nats://bob:pw123@mq:4222", "stream": "s", "durable": "d"})
    assert config["url"] == "nats://mq:4222" and secrets == {"user": "bob", "password": "pw123"}


def test_split_rest_secrets() -> None:
    config, secrets = split_secrets(
        "rest",
        {
            "url": "https://api.example/items",
            "token": "tok-123",
            "secret_headers": {"X-Api-Key": "k-456"},
            "pagination": {"type": "page", "page_size": 50},
        },
    )
    assert secrets == {"token": "tok-123", "secret_headers": {"X-Api-Key": "k-456"}}
    assert config["pagination"]["page_size"] == 50 and "token" not in config
    assert "secret_params" not in secrets


def test_validation_messages_never_repeat_values() -> None:
    with pytest.raises(InvalidInput) as err:
        split_secrets("postgres", {"host": "h", "password": "hunter2-secret", "port": "not-a-port-hunter2"})
    assert "hunter2" not in err.value.message
    assert "port" in err.value.message
    with pytest.raises(InvalidInput, match="Extra inputs are not permitted"):
        split_secrets("s3", {"bucket": "abc", "key": "k", "acl": "public"})
    with pytest.raises(InvalidInput, match="give both access_key_id and secret_access_key"):
        split_secrets("s3", {"bucket": "abc", "key": "k", "access_key_id": "AKIA"})
    with pytest.raises(InvalidInput, match="pagination"):
        split_secrets("rest", {"url": "https://x.example", "pagination": {"type": "scroll"}})


def test_build_validates_and_masks() -> None:
    with pytest.raises(InvalidInput) as err:
        build("postgres", {"url": "mysql://x"}, {"password": "pw-999"})
    assert "postgresql://" in err.value.message and "pw-999" not in err.value.message


def test_importing_the_registry_loads_no_driver() -> None:
    code = (
        "import sys, selfserve.data.connectors; "
        "print(sorted(m for m in ('psycopg', 'pymysql', 'redis', 'nats', 'boto3', 'botocore', 'httpx') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
