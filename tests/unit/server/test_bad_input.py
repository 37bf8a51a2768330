"""Bad input gets a 4xx with a JSON error that names the problem, never a 500, and leaves nothing half-made."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select, text, update

from selfserve.store.tables import AuditEvent, Base, Principal, Token, utcnow
from tests.support import LiveServer, Platform

PASSWORD = "bad-input-password-1"

BAD_NAMES = {
    "path traversal": "../x",
    "sql": "a;drop",
    "300 characters": "a" * 300,
    "64 characters": "a" * 64,
    "cyrillic lookalike": "d\u0430ta",
    "fullwidth letters": "\uff21\uff22",
    "trailing newline": "abc\n",
    "empty": "",
    "uppercase": "Churn",
    "leading digit": "1abc",
    "leading dash": "-abc",
    "space": "a b",
    "slash": "a/b",
    "nul": "a\x00b",
}


class Api:
    """Raw HTTP to the in-process app, for requests the SDK would never build."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.http = httpx.Client(base_url="http://selfserve.test", transport=platform.transport)
        self.admin = platform.admin()
        self.admin_token = self.admin.token or ""

    def user(self, name: str) -> str:
        """Create ``name`` with PASSWORD and return a session token for them."""
        self.admin.users.create(name, password=PASSWORD)
        return self.login(name)

    def login(self, name: str, password: str = PASSWORD) -> str:
        resp = self.http.post("/api/v1/auth/login", json={"username": name, "password": password})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["token"])

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, f"/api/v1{path}", headers=headers, **kwargs)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def api(platform: Platform) -> Iterator[Api]:
    a = Api(platform)
    try:
        yield a
    finally:
        a.close()


@pytest.fixture
def sqlite_api(sqlite_platform: Platform) -> Iterator[Api]:
    a = Api(sqlite_platform)
    try:
        yield a
    finally:
        a.close()


def refused(resp: httpx.Response, status: int | tuple[int, ...], *words: str) -> dict[str, Any]:
    """Assert a JSON error with one of ``status``, whose message holds every word; return the error."""
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status_code in statuses, f"{resp.status_code} (want {statuses}): {resp.text[:500]}"
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}, body
    err: dict[str, Any] = body["error"]
    assert err["code"] and isinstance(err["message"], str) and err["message"], err
    for word in words:
        assert word.lower() in err["message"].lower(), f"{word!r} not in {err['message']!r}"
    return err


def snapshot(platform: Platform) -> dict[str, Any]:
    """Row counts of every table but the audit trail (which records failures), and the storage tree."""
    counts: dict[str, Any] = {}
    with platform.store.session() as s:
        for table in Base.metadata.sorted_tables:
            if table.name != AuditEvent.__tablename__:
                counts[table.name] = s.scalar(select(func.count()).select_from(table))
    storage = platform.settings.home / "storage"
    counts["storage"] = sorted(str(p.relative_to(storage)) for p in storage.rglob("*")) if storage.exists() else []
    return counts


# -- names ----------------------------------------------------------------------------------


def test_invalid_project_names_are_refused_and_nothing_is_created(api: Api, subtests: pytest.Subtests) -> None:
    alice = api.user("alice")
    before = snapshot(api.platform)
    for label, bad in BAD_NAMES.items():
        with subtests.test(name=label):
            resp = api.call("POST", "/projects", alice, json={"name": bad})
            if bad == "a" * 64:
                refused(resp, 422, "invalid name", "63 at most")
            elif "\x00" in bad:
                refused(resp, 422, "name")
            else:
                err = refused(resp, 422, "invalid name", "lowercase")
                assert len(err["message"]) < 400, "a long name is shortened in the message"
            assert snapshot(api.platform) == before


def test_invalid_names_in_other_bodies_are_refused(api: Api, subtests: pytest.Subtests) -> None:
    alice = api.user("alice")
    api.call("POST", "/projects", alice, json={"name": "churn"})
    before = snapshot(api.platform)
    for label, bad in BAD_NAMES.items():
        with subtests.test(name=label):
            refused(api.call("POST", "/users", api.admin_token, json={"name": bad}), 422, "name")
            refused(api.call("POST", "/tokens", alice, json={"name": bad}), 422, "name")
            refused(api.call("POST", "/tokens", alice, json={"project": bad}), 422, "project")
            member = {"user": bad, "role": "viewer"}
            refused(api.call("POST", "/projects/churn/members", alice, json=member), 422, "user")
            member = {"user": "admin", "role": bad}
            refused(api.call("POST", "/projects/churn/members", alice, json=member), 422, "role")
            refused(api.call("PUT", "/projects/churn/members/alice", alice, json={"role": bad}), 422, "role")
            assert snapshot(api.platform) == before


def test_invalid_names_in_paths_are_refused(sqlite_api: Api, subtests: pytest.Subtests) -> None:
    api = sqlite_api
    alice = api.user("alice")
    api.call("POST", "/projects", alice, json={"name": "churn"})
    before = snapshot(api.platform)
    for label, bad in BAD_NAMES.items():
        if not bad:
            continue  # an empty segment is another path altogether
        seg = quote(bad, safe="")
        with subtests.test(name=label):
            for method, path, param in [
                ("GET", f"/projects/{seg}", "project"),
                ("DELETE", f"/projects/{seg}", "project"),
                ("GET", f"/projects/{seg}/members", "project"),
                ("DELETE", f"/projects/churn/members/{seg}", "user"),
                ("POST", f"/users/{seg}/disable", "name"),
            ]:
                resp = api.call(method, path, api.admin_token)
                # "../x" and "a/b" decode to paths no route matches; every other name fails the parameter's rule.
                if "/" in bad:
                    refused(resp, 404, "no such endpoint")
                else:
                    refused(resp, 422, f"path.{param}")
            assert snapshot(api.platform) == before


def test_valid_names_at_the_edges_are_accepted(sqlite_api: Api) -> None:
    alice = sqlite_api.user("alice")
    for name in ["a", "a" * 63, "a-1", "z9"]:
        assert sqlite_api.call("POST", "/projects", alice, json={"name": name}).status_code == 201


# -- bodies -----------------------------------------------------------------------------------


def test_body_over_the_limit_with_content_length_is_refused(api: Api) -> None:
    limit = api.platform.settings.server.max_body_bytes
    alice = api.user("alice")
    before = snapshot(api.platform)

    def body(size: int) -> bytes:
        head = b'{"name": "big", "description": "'
        return head + b"x" * (size - len(head) - 2) + b'"}'

    resp = api.call("POST", "/projects", alice, content=body(limit + 1), headers={"content-type": "application/json"})
    refused(resp, 413, f"over the limit of {limit} bytes")
    assert snapshot(api.platform) == before
    # At the limit the body is read, and refused for what it says, not for its size.
    resp = api.call("POST", "/projects", alice, content=body(limit), headers={"content-type": "application/json"})
    refused(resp, 422, "description")
    assert snapshot(api.platform) == before


def test_chunked_body_over_the_limit_is_refused(sqlite_platform: Platform) -> None:
    limit = sqlite_platform.settings.server.max_body_bytes
    admin = sqlite_platform.admin()
    before = snapshot(sqlite_platform)

    def chunks(total: int, head: bytes = b'{"name": "big", "description": "') -> Iterator[bytes]:
        yield head
        left = total - len(head) - 2
        while left > 0:
            n = min(left, 256 * 1024)
            yield b"x" * n
            left -= n
        yield b'"}'

    headers = {"Authorization": f"Bearer {admin.token}", "content-type": "application/json"}
    with LiveServer(sqlite_platform.app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        req = http.build_request("POST", "/api/v1/projects", content=chunks(limit + 1), headers=headers)
        assert req.headers.get("transfer-encoding") == "chunked" and "content-length" not in req.headers
        refused(http.send(req), 413, f"over the limit of {limit} bytes")
        assert snapshot(sqlite_platform) == before
        # A small chunked body is read as usual.
        small = http.build_request(
            "POST", "/api/v1/projects", content=iter([b'{"name": ', b'"small"}']), headers=headers
        )
        assert http.send(small).status_code == 201


@pytest.mark.parametrize(
    "content",
    [b'{"name": ', b"{name: 1}", b'{"name": "x",}', b"[", b"\xff\xfe{}", b'{"name": "x"} trailing'],
    ids=["truncated", "unquoted key", "trailing comma", "open bracket", "not utf-8", "trailing text"],
)
def test_malformed_json_is_refused(api: Api, content: bytes) -> None:
    alice = api.user("alice")
    before = snapshot(api.platform)
    resp = api.call("POST", "/projects", alice, content=content, headers={"content-type": "application/json"})
    refused(resp, 422, "malformed JSON")
    assert snapshot(api.platform) == before


@pytest.mark.parametrize(
    "content", [b"[]", b'"churn"', b"1", b"null", b""], ids=["list", "string", "number", "null", "empty"]
)
def test_json_that_is_not_an_object_is_refused(api: Api, content: bytes) -> None:
    alice = api.user("alice")
    resp = api.call("POST", "/projects", alice, content=content, headers={"content-type": "application/json"})
    refused(resp, 422, "body")


def test_wrong_types_and_unknown_fields_are_refused_and_nothing_is_created(api: Api) -> None:
    alice = api.user("alice")
    api.call("POST", "/projects", alice, json={"name": "churn"})
    before = snapshot(api.platform)
    cases: list[tuple[str, str, Any, tuple[str, ...]]] = [
        ("POST", "/projects", {"name": 5}, ("name", "valid string")),
        ("POST", "/projects", {"name": ["a"]}, ("name",)),
        ("POST", "/projects", {"name": "ok", "description": {"a": 1}}, ("description",)),
        ("POST", "/projects", {"name": "ok", "owner": "admin"}, ("owner", "extra inputs are not permitted")),
        ("POST", "/projects", {"description": "no name"}, ("name", "field required")),
        ("PATCH", "/projects/churn", {"description": "x" * 2001}, ("description", "2000")),
        ("PATCH", "/projects/churn", {"description": "x", "name": "other"}, ("name", "extra")),
        ("POST", "/projects/churn/members", {"user": "admin"}, ("role", "required")),
        ("POST", "/projects/churn/members", {"user": "nobody", "role": "viewer"}, ("nobody", "not found")),
        ("POST", "/projects/churn/members", {"user": "admin", "role": "boss"}, ("unknown role 'boss'",)),
        ("POST", "/projects/churn/members", {"user": "admin", "role": "service"}, ("reserved",)),
        ("POST", "/projects/churn/quota-requests", {"limits": "lots"}, ("limits", "dictionary")),
        ("POST", "/projects/churn/quota-requests", {"limits": {}}, ("no quota given",)),
        ("POST", "/projects/churn/quota-requests", {"limits": {"gpus": 1}}, ("unknown quota 'gpus'",)),
        ("POST", "/projects/churn/quota-requests", {"limits": {"runs": "many"}}, ("quota 'runs'", "not a number")),
        ("POST", "/projects/churn/quota-requests", {"limits": {"runs": -1}}, ("quota 'runs'", ">= 0")),
        ("POST", "/projects/churn/quota-requests", {"limits": {"runs": 1.5}}, ("quota 'runs'", "whole number")),
        ("POST", "/projects/churn/quota-requests", {"limits": {"runs": 10**400}}, ("quota 'runs'",)),
        ("POST", "/projects/churn/quota-requests", {"limits": {"storage": "9" * 400 + "GB"}}, ("quota 'storage'",)),
        ("POST", "/projects/churn/quota-requests", {"limits": {"storage": "lots"}}, ("quota 'storage'", "size")),
        ("POST", "/projects/churn/quota-requests", {"limits": {"runs": 3}, "reason": 5}, ("reason",)),
        ("POST", "/tokens", {"expires": "soon"}, ("not a duration",)),
        ("POST", "/tokens", {"expires": "0s"}, ("lifetime", "more than 0")),
        ("POST", "/tokens", {"expires": "999999999999999999999d"}, ("lifetime", "at most")),
        ("POST", "/tokens", {"name": "x", "scope": "all"}, ("scope", "extra")),
        ("POST", "/auth/password", {"current_password": PASSWORD, "new_password": "short"}, ("new_password", "12")),
    ]
    for method, path, body, words in cases:
        resp = api.call(method, path, alice, content=json.dumps(body), headers={"content-type": "application/json"})
        refused(resp, (404, 422) if "nobody" in words else 422, *words)
    admin_cases: list[tuple[str, str, Any, tuple[str, ...]]] = [
        ("POST", "/users", {"name": "bob", "password": "short"}, ("password", "12")),
        ("POST", "/users", {"name": "bob", "is_admin": "maybe"}, ("is_admin",)),
        ("PUT", "/projects/churn/quotas", {"limits": {"storage": "9" * 400 + "GB"}}, ("quota 'storage'",)),
        ("PUT", "/projects/churn/quotas", {"limits": {"cpu": float("inf")}}, ("quota 'cpu'", "finite")),
        ("PUT", "/projects/churn/quotas", {"limits": {"memory": -5}}, ("quota 'memory'",)),
        ("POST", "/users/alice/reset-password", {"password": "short"}, ("password", "12")),
    ]
    for method, path, body, words in admin_cases:
        resp = api.call(
            method, path, api.admin_token, content=json.dumps(body), headers={"content-type": "application/json"}
        )
        refused(resp, 422, *words)
    assert snapshot(api.platform) == before


def test_nul_characters_are_refused_on_every_backend(api: Api) -> None:
    """PostgreSQL cannot hold NUL in text: it must be refused as input, not fail in the database."""
    alice = api.user("alice")
    api.call("POST", "/projects", alice, json={"name": "churn"})
    before = snapshot(api.platform)
    for method, path, body in [
        ("POST", "/projects", {"name": "ok", "description": "a\x00b"}),
        ("PATCH", "/projects/churn", {"description": "a\x00b"}),
        ("POST", "/projects/churn/quota-requests", {"limits": {"runs": 3}, "reason": "a\x00b"}),
        ("POST", "/projects/churn/quota-requests", {"limits": {"runs\x00": 3}}),
        ("POST", "/auth/login", {"username": "ali\x00ce", "password": PASSWORD}),
        ("POST", "/auth/login", {"username": "alice", "password": PASSWORD, "token_name": "a\x00"}),
    ]:
        refused(api.call(method, path, alice, json=body), 422)
    refused(api.call("GET", "/audit?user=a%00b", api.admin_token), 422, "user")
    refused(api.call("GET", "/projects/churn/audit?user=a%00b", alice), 422, "user")
    assert snapshot(api.platform) == before


def test_nul_characters_are_refused_by_the_data_routes(api: Api) -> None:
    alice = api.user("alice")
    for name in ("churn", "other"):
        api.call("POST", "/projects", alice, json={"name": name})
    upload = api.call("POST", "/projects/churn/datasets/sales/upload", alice, files={"file": ("s.csv", b"id\n1\n")})
    assert upload.status_code == 201, upload.text
    assert api.call("POST", "/projects/churn/datasets/sales/publish", alice, json={}).status_code == 200
    before = snapshot(api.platform)
    for method, path, body in [
        ("POST", "/projects/churn/datasets/sales/publish", {"description": "a\x00b"}),
        ("POST", "/projects/churn/datasets/sales/publish", {"tags": ["a\x00b"]}),
        ("POST", "/projects/churn/datasets/sales/publish", {"sla_freshness": "1h\x00"}),
        ("POST", "/products/churn/sales/requests", {"for_project": "other", "reason": "a\x00b"}),
        ("POST", "/projects/churn/sources", {"name": "src", "kind": "file", "description": "a\x00b"}),
    ]:
        refused(api.call(method, path, alice, json=body), 422)
    refused(api.call("GET", "/products?q=a%00b", alice), 422, "q")
    refused(api.call("GET", "/products?tag=a%00b", alice), 422, "tag")
    assert snapshot(api.platform) == before


def test_bad_ids_and_queries_are_refused(api: Api) -> None:
    alice = api.user("alice")
    api.call("POST", "/projects", alice, json={"name": "churn"})
    refused(api.call("DELETE", "/tokens/abc", alice), 422, "token_id")
    refused(api.call("DELETE", "/tokens/99999999999999999999999", alice), 422, "token_id")
    refused(api.call("DELETE", "/tokens/0", alice), 422, "token_id")
    refused(api.call("DELETE", "/tokens/424242", alice), 404, "token 424242 not found")
    refused(api.call("POST", "/quota-requests/99999999999999999999/approve", api.admin_token, json={}), 422)
    refused(api.call("POST", "/quota-requests/4242/deny", api.admin_token, json={}), 404, "quota request 4242")
    for since in [
        "soon",
        "99999999999999999999d",
        "9999999w",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
    ]:
        refused(api.call("GET", "/projects/churn/audit", alice, params={"since": since}), 422, "since")
    refused(api.call("GET", "/projects/churn/audit", alice, params={"limit": 0}), 422, "limit")
    refused(api.call("GET", "/projects/churn/audit", alice, params={"limit": 10**6}), 422, "limit")
    refused(api.call("GET", "/projects/churn/quota-requests", alice, params={"status": "lost"}), 422, "status")
    refused(api.call("GET", "/nowhere", alice), 404, "no such endpoint")
    refused(api.call("PATCH", "/tokens", alice, json={}), 405)


# -- tokens and logins ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer ",
        "Bearer garbage",
        "Bearer ss_garbage",
        "Bearer ss_" + "x" * 500,
        "Basic YWxpY2U6eA==",
        "Token ss_abc",
    ],
    ids=["empty", "no token", "blank token", "garbage", "garbage with prefix", "very long", "basic", "other scheme"],
)
def test_missing_or_garbage_tokens_get_401(sqlite_api: Api, authorization: str) -> None:
    resp = sqlite_api.call("GET", "/projects", headers={"Authorization": authorization})
    err = refused(resp, 401)
    assert "token" in err["message"]


def test_expired_token_gets_401(api: Api) -> None:
    alice = api.user("alice")
    made = api.call("POST", "/tokens", alice, json={"name": "short", "expires": "1h"}).json()
    assert api.call("GET", "/projects", made["token"]).status_code == 200
    with api.platform.store.begin() as s:
        s.execute(update(Token).where(Token.id == made["id"]).values(expires_at=utcnow() - timedelta(seconds=1)))
    # Not before the process's short-lived cache of authenticated tokens has let it go.
    from selfserve.policy import tokens

    tokens.cache.clear()
    refused(api.call("GET", "/projects", made["token"]), 401, "token has expired")


def test_token_that_expires_while_in_use_gets_401(sqlite_api: Api) -> None:
    import time

    alice = sqlite_api.user("alice")
    made = sqlite_api.call("POST", "/tokens", alice, json={"name": "short", "expires": "1s"}).json()
    assert sqlite_api.call("GET", "/projects", made["token"]).status_code == 200
    time.sleep(1.2)
    refused(sqlite_api.call("GET", "/projects", made["token"]), 401, "token has expired")


def test_revoked_token_gets_401(api: Api) -> None:
    alice = api.user("alice")
    made = api.call("POST", "/tokens", alice, json={"name": "gone"}).json()
    assert api.call("GET", "/projects", made["token"]).status_code == 200
    assert api.call("DELETE", f"/tokens/{made['id']}", alice).status_code == 204
    refused(api.call("GET", "/projects", made["token"]), 401, "revoked")
    assert api.call("POST", "/auth/logout", alice).status_code == 204
    refused(api.call("GET", "/projects", alice), 401, "revoked")


def test_wrong_password_and_unknown_user_get_the_same_401(api: Api) -> None:
    api.user("alice")
    wrong = refused(api.call("POST", "/auth/login", json={"username": "alice", "password": "not-it-at-all"}), 401)
    unknown = refused(api.call("POST", "/auth/login", json={"username": "nobody", "password": "not-it-at-all"}), 401)
    assert wrong == unknown and "wrong user name or password" in wrong["message"]
    refused(
        api.call(
            "POST",
            "/auth/password",
            api.login("alice"),
            json={"current_password": "not-it-at-all", "new_password": "a-new-password-1"},
        ),
        401,
        "current password is wrong",
    )


def test_disabled_user_cannot_log_in_or_use_a_token(api: Api) -> None:
    alice = api.user("alice")
    assert api.call("POST", "/users/alice/disable", api.admin_token).status_code == 200
    refused(api.call("GET", "/projects", alice), 401)
    refused(api.call("POST", "/auth/login", json={"username": "alice", "password": PASSWORD}), 401, "disabled")
    refused(api.call("POST", "/users/admin/disable", api.admin_token), 422, "your own account")
    assert api.call("POST", "/users/alice/enable", api.admin_token).status_code == 200
    assert api.call("GET", "/projects", api.login("alice")).status_code == 200


def _fail_login(api: Api, name: str) -> httpx.Response:
    return api.call("POST", "/auth/login", json={"username": name, "password": "wrong-password-xx"})


def _age_failures(api: Api, name: str, by: timedelta) -> None:
    """Move the last failure back in time, as if the user had waited (instead of sleeping in the test)."""
    with api.platform.store.begin() as s:
        user = s.scalar(select(Principal).where(Principal.name == name))
        assert user is not None and user.last_failed_at is not None
        user.last_failed_at -= by


def test_login_is_slowed_then_locked_and_reset_password_unlocks(api: Api) -> None:
    sec = api.platform.settings.security
    api.user("alice")
    for _ in range(sec.login_slow_after):
        refused(_fail_login(api, "alice"), 401, "wrong user name or password")
    # Slowed: the next try must wait, whatever the password.
    refused(_fail_login(api, "alice"), 429, "too many failed logins", "wait")
    slowed = api.call("POST", "/auth/login", json={"username": "alice", "password": PASSWORD})
    refused(slowed, 429, "too many failed logins")
    for _ in range(sec.login_lock_after - sec.login_slow_after):
        _age_failures(api, "alice", timedelta(minutes=5))
        refused(_fail_login(api, "alice"), 401)
    _age_failures(api, "alice", timedelta(minutes=5))
    # Locked: even the right password is refused until the lock ends.
    refused(api.call("POST", "/auth/login", json={"username": "alice", "password": PASSWORD}), 429, "locked")
    refused(_fail_login(api, "alice"), 429, "locked")
    user = api.call("GET", "/users", api.admin_token).json()
    assert next(u for u in user if u["name"] == "alice")["locked_until"] is not None
    # An admin's reset unlocks the account.
    reset = api.call("POST", "/users/alice/reset-password", api.admin_token, json={"password": "fresh-password-12"})
    assert reset.status_code == 200 and reset.json()["locked_until"] is None
    assert api.call("GET", "/projects", api.login("alice", "fresh-password-12")).status_code == 200
    with api.platform.store.session() as s:
        outcomes = s.scalars(
            select(AuditEvent.outcome).where(AuditEvent.action == "auth:login", AuditEvent.principal == "alice")
        ).all()
    assert "denied:rate_limited" in outcomes and "denied:unauthenticated" in outcomes


def test_lock_ends_after_its_time(sqlite_api: Api) -> None:
    sec = sqlite_api.platform.settings.security
    sqlite_api.user("alice")
    for _ in range(sec.login_lock_after):
        _fail_login(sqlite_api, "alice")
        _age_failures(sqlite_api, "alice", timedelta(minutes=5))
    refused(sqlite_api.call("POST", "/auth/login", json={"username": "alice", "password": PASSWORD}), 429, "locked")
    with sqlite_api.platform.store.begin() as s:
        s.execute(
            update(Principal).where(Principal.name == "alice").values(locked_until=utcnow() - timedelta(seconds=1))
        )
    assert sqlite_api.login("alice")


# -- nothing half-created -------------------------------------------------------------------


def test_failed_project_creates_leave_nothing(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from selfserve.settings import get_settings

    alice = api.user("alice")
    bob = api.user("bob")
    assert api.call("POST", "/projects", alice, json={"name": "churn"}).status_code == 201
    scoped = api.call("POST", "/tokens", alice, json={"name": "one", "project": "churn"}).json()["token"]
    before = snapshot(api.platform)
    refused(api.call("POST", "/projects", bob, json={"name": "churn"}), 409, "churn", "taken")
    refused(api.call("POST", "/projects", scoped, json={"name": "other"}), 403, "project-scoped token")
    refused(api.call("POST", "/projects", bob, json={"name": "ok", "extra": 1}), 422, "extra")
    monkeypatch.setenv("SELFSERVE_PLATFORM__MAX_PROJECTS_PER_USER", "1")
    get_settings.cache_clear()
    refused(api.call("POST", "/projects", alice, json={"name": "second"}), 409, "you own 1 projects", "(1)")
    assert snapshot(api.platform) == before
    with api.platform.store.session() as s:
        assert not s.scalar(
            select(func.count())
            .select_from(Principal)
            .where(Principal.name.like("svc.%"))
            .where(Principal.name != "svc.churn")
        )


def test_deleted_project_leaves_nothing_and_its_name_can_be_reused(api: Api) -> None:
    alice = api.user("alice")
    api.user("bob")
    before = snapshot(api.platform)
    assert api.call("POST", "/projects", alice, json={"name": "churn"}).status_code == 201
    assert api.call("POST", "/projects/churn/members", alice, json={"user": "bob", "role": "viewer"}).status_code == 201
    assert api.call("POST", "/projects/churn/quota-requests", alice, json={"limits": {"runs": 4}}).status_code == 201
    assert api.call("POST", "/tokens", alice, json={"name": "one", "project": "churn"}).status_code == 201
    assert api.call("DELETE", "/projects/churn", alice).status_code == 204
    after = snapshot(api.platform)
    assert {k: v for k, v in after.items() if k != "storage"} == {k: v for k, v in before.items() if k != "storage"}
    assert "projects/churn" not in after["storage"]
    assert api.call("POST", "/projects", alice, json={"name": "churn"}).status_code == 201


def test_no_response_is_a_500_for_any_of_these(api: Api) -> None:
    """A sweep of odd requests over every route: whatever they get, it is a JSON 4xx or a success."""
    alice = api.user("alice")
    api.call("POST", "/projects", alice, json={"name": "churn"})
    odd_bodies: list[Any] = [None, {}, [], "x", 0, {"name": None}, {"limits": None}, {"limits": {"runs": None}}]
    paths = [
        "/projects",
        "/projects/churn",
        "/projects/churn/members",
        "/projects/churn/members/alice",
        "/projects/churn/quotas",
        "/projects/churn/quota-requests",
        "/tokens",
        "/users",
        "/auth/login",
        "/auth/password",
        "/users/alice/reset-password",
        "/quota-requests/1/approve",
    ]
    for path in paths:
        for method in ("POST", "PUT", "PATCH"):
            for body in odd_bodies:
                resp = api.call(method, path, alice, json=body)
                assert resp.status_code < 500, f"{method} {path} {body!r}: {resp.status_code} {resp.text[:300]}"
                if resp.status_code >= 400:
                    refused(resp, resp.status_code)


def test_sqlite_tables_are_all_checked(sqlite_platform: Platform, tmp_path: Path) -> None:
    """``snapshot`` covers every table the migrations made, so a new table cannot escape these checks."""
    with sqlite_platform.store.session() as s:
        names = set(s.scalars(text("SELECT name FROM sqlite_master WHERE type = 'table'")))
    made = {n for n in names if not n.startswith("sqlite_") and n != "alembic_version"}
    assert made == {t.name for t in Base.metadata.sorted_tables}
