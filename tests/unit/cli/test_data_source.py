from __future__ import annotations

import json

import pytest

from tests.unit.cli.conftest import PASSWORD, Cli

SECRET = "pg-s3cret-Value"


@pytest.fixture
def alice(cli: Cli) -> Cli:
    """Alice, logged in, owns project ``churn``."""
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    return cli


def test_add_show_list_remove_a_postgres_source(alice: Cli) -> None:
    # Port 1 refuses connections: the source is stored now and tested later.
    url = "postgresql://reader@127.0.0.1:1/shop"
    r = alice.ok(
        "source", "add", "churn", "shop", "--kind", "postgres", "--url", url, "--password-stdin", input=SECRET + "\n"
    )
    assert r.stdout.strip() == "added postgres source shop to churn; secrets stored encrypted: password"

    shown = alice.json("source", "show", "churn", "shop")
    assert shown["kind"] == "postgres" and shown["secrets"] == ["password"]
    assert shown["config"]["url"] == url and shown["config"]["port"] == 5432
    assert "url = postgresql://reader@127.0.0.1:1/shop" in alice.ok("source", "show", "churn", "shop").stdout

    table = alice.ok("source", "list", "churn").stdout
    assert "shop" in table and "postgres" in table and "password" in table
    assert [s["name"] for s in alice.json("source", "list", "churn")] == ["shop"]

    # The test reaches nothing: exit 1 with the connector's message, never the password.
    r = alice.fails("source", "test", "churn", "shop")
    assert "cannot reach PostgreSQL at 127.0.0.1:1" in r.stderr
    r = alice.fails("source", "test", "churn", "shop", "--json")
    assert json.loads(r.stdout)["ok"] is False

    for args in (("source", "list", "churn", "--json"), ("source", "show", "churn", "shop", "--json")):
        assert SECRET not in alice.ok(*args).stdout

    assert alice.ok("source", "remove", "churn", "shop").stdout.strip() == "removed source shop"
    assert "source 'shop' not found in project 'churn'" in alice.fails("source", "show", "churn", "shop").stderr
    assert alice.ok("source", "list", "churn").stdout.strip() == "(none)"


def test_generic_settings_and_secrets(alice: Cli) -> None:
    alice.ok(
        "source",
        "add",
        "churn",
        "warehouse",
        "--kind",
        "mysql",
        "--set",
        "host=127.0.0.1",
        "--set",
        "port=1",
        "--set",
        "database=shop",
        "--user",
        "reader",
        "--secret-stdin",
        "password",
        input="from-stdin\n",
    )
    shown = alice.json("source", "show", "churn", "warehouse")
    assert shown["config"] | {"host": "127.0.0.1", "port": 1, "database": "shop", "user": "reader"} == shown["config"]
    assert shown["secrets"] == ["password"]

    # JSON values for lists and objects; --secret takes the value from the command line.
    alice.ok(
        "source",
        "add",
        "churn",
        "events",
        "--kind",
        "nats",
        "--url",
        "nats://127.0.0.1:1",
        "--set",
        "stream=EVENTS",
        "--set",
        "durable=selfserve",
        "--set",
        'fields=["id", "amount"]',
        "--secret",
        "token=abc123",
    )
    events = alice.json("source", "show", "churn", "events")
    assert events["config"]["fields"] == ["id", "amount"] and events["secrets"] == ["token"]
    assert "abc123" not in alice.ok("source", "show", "churn", "events").stdout

    # A secret that is an object, from stdin: stored encrypted like the others.
    alice.ok(
        "source",
        "add",
        "churn",
        "api",
        "--kind",
        "rest",
        "--url",
        "http://127.0.0.1:1/items",
        "--secret-stdin",
        "secret_headers",
        input='{"X-Api-Key": "k-123"}\n',
    )
    api = alice.json("source", "show", "churn", "api")
    assert api["secrets"] == ["secret_headers"] and "secret_headers" not in api["config"]
    assert "k-123" not in alice.ok("source", "list", "churn", "--json").stdout


def test_source_errors(alice: Cli) -> None:
    add = ("source", "add", "churn")
    # Usage errors: exit 2 before anything is sent.
    alice.fails(*add, "db", "--kind", "oracle", code=2)
    alice.fails(*add, "db", "--kind", "postgres", "--set", "no-equals-sign", code=2)
    alice.fails(*add, "db", "--kind", "rest", "--set", "params={not json", code=2)
    alice.fails(*add, "db", "--kind", "postgres", "--url", "postgresql://u@h/db", "--password-stdin", input="", code=2)

    # The server's refusals: exit 1 with its message.
    r = alice.fails(*add, "db", "--kind", "postgres", "--url", "postgresql://u@h/db", "--secret", "token=x")
    assert "unknown secret(s) for a postgres source: token" in r.stderr
    r = alice.fails(*add, "db", "--kind", "postgres", "--set", "host=h", "--url", "postgresql://u@h/db")
    assert "give a url, or a host" in r.stderr
    r = alice.fails(*add, "Bad_Name", "--kind", "postgres", "--url", "postgresql://u@h/db")
    assert "Bad_Name" in r.stderr
    alice.ok(*add, "db", "--kind", "postgres", "--url", "postgresql://u@h/db")
    assert "already exists" in alice.fails(*add, "db", "--kind", "postgres", "--url", "postgresql://u@h/db").stderr
    assert "not found" in alice.fails("source", "list", "nope").stderr
    assert "not found" in alice.fails("source", "remove", "churn", "nope").stderr


def test_viewers_read_sources_but_cannot_add_them(alice: Cli) -> None:
    alice.add_user("victor")
    alice.ok("member", "add", "churn", "victor", "--role", "viewer")
    alice.ok("source", "add", "churn", "db", "--kind", "postgres", "--url", "postgresql://u@h/db")
    alice.login("victor", PASSWORD)
    assert [s["name"] for s in alice.json("source", "list", "churn")] == ["db"]
    r = alice.fails("source", "add", "churn", "db2", "--kind", "postgres", "--url", "postgresql://u@h/db")
    assert "may not source:write" in r.stderr
    assert "may not source:write" in alice.fails("source", "remove", "churn", "db").stderr
