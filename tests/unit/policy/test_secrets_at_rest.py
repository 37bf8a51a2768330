"""The metadata DB never holds a password or a token in plaintext: only argon2 and SHA-256 hashes."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import MetaData, inspect, select

from selfserve.errors import Unauthenticated
from tests.support import Platform


def _every_value(platform: Platform) -> list[tuple[str, str, str]]:
    """(table, column, value as text) for every cell of every table in the DB, whatever made it."""
    engine = platform.store.engine
    meta = MetaData()
    meta.reflect(engine)
    assert set(meta.tables) >= set(inspect(engine).get_table_names()) - {"sqlite_sequence"}
    cells = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                for column, value in row._mapping.items():
                    if value is None:
                        continue
                    if isinstance(value, bytes | bytearray | memoryview):
                        shown = bytes(value).decode("latin-1")
                    elif isinstance(value, dict | list):
                        shown = json.dumps(value)
                    else:
                        shown = str(value)
                    cells.append((table.name, str(column), shown))
    return cells


def _issue_secrets(platform: Platform) -> tuple[dict[str, str], list[str]]:
    """Drive the platform through every way a password or token is made; return them."""
    passwords: dict[str, str] = {"admin": platform.admin_password}
    tokens: list[str] = []
    admin = platform.admin()
    tokens.append(admin.token or "")
    passwords["alice"] = admin.users.create("alice").password or ""
    passwords["bob"] = "bob-chose-this-password"
    admin.users.create("bob", password=passwords["bob"])
    alice = platform.client()
    tokens.append(alice.login("alice", passwords["alice"], save=False).token)
    alice.projects.create("churn")
    tokens.append(alice.tokens.create("ci").token)
    tokens.append(alice.tokens.create("scoped", project="churn", expires="1d").token)
    gone = alice.tokens.create("gone")
    tokens.append(gone.token)
    alice.tokens.revoke(gone.id)
    passwords["alice"], old = "alice-new-password-12", passwords["alice"]
    alice.change_password(old, passwords["alice"])
    tokens.append(platform.client().login("alice", passwords["alice"], save=False).token)
    passwords["bob-reset"] = admin.users.reset_password("bob").password or ""
    passwords["carol"] = "carol-reset-to-this-1"
    admin.users.create("carol")
    admin.users.reset_password("carol", passwords["carol"])
    bob = platform.client()
    tokens.append(bob.login("bob", passwords["bob-reset"], save=False).token)
    # A failed login with a password in the user-name field must not keep it either.
    failed = platform.client()
    with pytest.raises(Unauthenticated):
        failed.login(passwords["bob"], passwords["bob"], save=False)
    # The old passwords count as secrets too.
    all_passwords = {**passwords, "alice-first": old}
    assert all(all_passwords.values()) and all(tokens)
    return all_passwords, tokens


def test_no_plaintext_password_or_token_in_any_column(platform: Platform) -> None:
    passwords, tokens = _issue_secrets(platform)
    cells = _every_value(platform)
    assert cells, "the DB was read"
    for secret in [*passwords.values(), *tokens]:
        # A token's first 10 characters are kept as its visible prefix; the rest must appear nowhere.
        needles = [secret] if not secret.startswith("ss_") else [secret, secret[10:]]
        for needle in needles:
            hits = [(t, c) for t, c, v in cells if needle in v]
            assert not hits, f"a secret is stored in plaintext in {hits}"


def test_passwords_are_argon2_and_tokens_sha256(platform: Platform) -> None:
    passwords, tokens = _issue_secrets(platform)
    hasher = PasswordHasher()
    with platform.store.engine.connect() as conn:
        meta = MetaData()
        meta.reflect(platform.store.engine, only=["principals", "tokens"])
        principals = {r.name: r for r in conn.execute(select(meta.tables["principals"]))}
        stored = list(conn.execute(select(meta.tables["tokens"])))
    current = {
        "admin": passwords["admin"],
        "alice": passwords["alice"],
        "bob": passwords["bob-reset"],
        "carol": passwords["carol"],
    }
    for name, password in current.items():
        h = principals[name].password_hash
        assert h.startswith("$argon2id$"), f"{name}: {h[:12]}"
        assert hasher.verify(h, password)
    for row in principals.values():
        if row.kind == "service":
            assert row.password_hash is None, "service accounts have no password"
    hashes = {r.token_hash for r in stored}
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)
    for token in tokens:
        assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert all(len(r.prefix) <= 10 for r in stored)


def test_the_api_never_returns_a_hash(platform: Platform) -> None:
    _issue_secrets(platform)
    admin = platform.admin()
    with platform.store.engine.connect() as conn:
        meta = MetaData()
        meta.reflect(platform.store.engine, only=["principals", "tokens"])
        hashes = [r.password_hash for r in conn.execute(select(meta.tables["principals"])) if r.password_hash]
        hashes += [r.token_hash for r in conn.execute(select(meta.tables["tokens"]))]
    bodies: list[Any] = [
        admin.users.list(),
        admin.tokens.list(),
        admin.whoami(),
        admin.audit.list(limit=5000),
        admin.quotas.get("churn"),
        admin.members.list("churn"),
    ]
    text = json.dumps(
        [
            b.model_dump(mode="json") if hasattr(b, "model_dump") else [x.model_dump(mode="json") for x in b]
            for b in bodies
        ]
    )
    assert "argon2" not in text
    for h in hashes:
        assert h not in text


def test_mlflow_passwords_are_only_ciphertext(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every principal's MLflow password (generated by the platform) is Fernet ciphertext in the DB,
    readable back under the platform key, and appears in no column (audit details included)."""
    from selfserve.ml import identity
    from selfserve.store.tables import MlflowIdentity
    from tests.fake_mlflow import models_platform

    with models_platform(tmp_path, monkeypatch) as (platform, fake):
        admin = platform.admin()
        alice = platform.user("alice", admin_client=admin)
        platform.user("bob", admin_client=admin)
        alice.projects.create("churn")
        alice.members.add("churn", "bob", role="viewer")
        mine = alice.mlflow.env("churn").password
        admin.mlflow.env("churn")
        admin.users.disable("alice")
        admin.users.enable("alice")
        passwords = {name: u["password"] for name, u in fake.users.items() if name != "selfserve.admin"}
        assert set(passwords) == {"admin", "alice", "bob", "svc.churn"} and passwords["alice"] == mine
        cells = _every_value(platform)
        for password in passwords.values():
            hits = [(t, c) for t, c, v in cells if password in v]
            assert not hits, f"an MLflow password is stored in plaintext in {hits}"
        with platform.store.session() as s:
            rows = list(s.scalars(select(MlflowIdentity)))
            assert {r.username for r in rows} == set(passwords)
            for row in rows:
                assert row.secret.startswith("gAAAA"), "Fernet tokens start with the version byte"
                assert identity.credentials(row).password == passwords[row.username]
