"""API tokens: hashed, expiring, revocable, and a project-scoped token reaches only its project."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from selfserve.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated
from selfserve.policy import identity, tokens
from selfserve.store import Store
from selfserve.store.tables import Principal, Project, Token, utcnow
from tests.support import Platform


def _user(store: Store, name: str = "alice") -> int:
    with store.begin() as s:
        user, _ = identity.create_user(s, name, f"{name}-password-12")
        return user.id


def _issue(store: Store, principal_id: int, **kwargs: object) -> tuple[int, str]:
    with store.begin() as s:
        row, plaintext = tokens.issue(s, principal_id, name="t", **kwargs)  # type: ignore[arg-type]
        return row.id, plaintext


def _authenticate(store: Store, plaintext: str) -> tokens.Caller:
    with store.session() as s:
        return tokens.authenticate(s, plaintext)


def test_issue_and_authenticate(platform: Platform) -> None:
    uid = _user(platform.store)
    token_id, plaintext = _issue(platform.store, uid)
    assert plaintext.startswith("ss_") and len(plaintext) > 40
    caller = _authenticate(platform.store, plaintext)
    assert (caller.id, caller.name, caller.token_id, caller.scoped) == (uid, "alice", token_id, False)
    with platform.store.session() as s:
        row = s.get(Token, token_id)
        assert row is not None and row.last_used_at is not None and row.prefix == plaintext[:10]


def test_lifetimes(platform: Platform) -> None:
    uid = _user(platform.store)
    sec = platform.settings.security
    with platform.store.begin() as s:
        api, _ = tokens.issue(s, uid, name="api")
        session, _ = tokens.issue(s, uid, name="login", kind="session")
        short, _ = tokens.issue(s, uid, name="short", expires="30m")
        for bad, message in [
            ("0s", "more than 0"),
            ("366d", f"at most {sec.max_token_ttl}"),
            ("soon", "not a duration"),
        ]:
            with pytest.raises(InvalidInput, match=message):
                tokens.issue(s, uid, name="bad", expires=bad)
    now = utcnow()
    assert abs((api.expires_at - now) - timedelta(days=365)) < timedelta(minutes=1)  # type: ignore[operator]
    assert abs((session.expires_at - now) - timedelta(hours=12)) < timedelta(minutes=1)  # type: ignore[operator]
    assert abs((short.expires_at - now) - timedelta(minutes=30)) < timedelta(minutes=1)  # type: ignore[operator]


@pytest.mark.parametrize("plaintext", ["", "garbage", "ss_", "ss_unknown", "ss_" + "a" * 200, "Bearer ss_x"])
def test_unknown_tokens_are_refused(platform: Platform, plaintext: str) -> None:
    with pytest.raises(Unauthenticated, match="invalid token"):
        _authenticate(platform.store, plaintext)


def test_expired_token_is_refused(platform: Platform) -> None:
    uid = _user(platform.store)
    token_id, plaintext = _issue(platform.store, uid)
    _authenticate(platform.store, plaintext)
    with platform.store.begin() as s:
        s.execute(update(Token).where(Token.id == token_id).values(expires_at=utcnow() - timedelta(seconds=1)))
    tokens.cache.clear()  # as another API process would see it, without this process's recent memory
    with pytest.raises(Unauthenticated, match="token has expired"):
        _authenticate(platform.store, plaintext)


def test_revoked_token_is_refused_at_once(platform: Platform) -> None:
    uid = _user(platform.store)
    token_id, plaintext = _issue(platform.store, uid)
    other_id, other = _issue(platform.store, uid)
    _authenticate(platform.store, plaintext)
    with platform.store.begin() as s:
        tokens.revoke(s, uid, token_id)
    with pytest.raises(Unauthenticated, match="token has been revoked"):
        _authenticate(platform.store, plaintext)
    assert _authenticate(platform.store, other).token_id == other_id
    with platform.store.begin() as s:
        tokens.revoke_all(s, uid)
    with pytest.raises(Unauthenticated, match="token has been revoked"):
        _authenticate(platform.store, other)


def test_only_the_owner_revokes_a_token(platform: Platform) -> None:
    alice = _user(platform.store, "alice")
    bob = _user(platform.store, "bob")
    token_id, plaintext = _issue(platform.store, alice)
    with platform.store.begin() as s, pytest.raises(NotFound, match=f"token {token_id} not found"):
        tokens.revoke(s, bob, token_id)
    assert _authenticate(platform.store, plaintext).id == alice


def test_disabled_principal_is_refused(platform: Platform) -> None:
    uid = _user(platform.store)
    _, plaintext = _issue(platform.store, uid)
    with platform.store.begin() as s:
        s.execute(update(Principal).where(Principal.id == uid).values(disabled=True))
    tokens.cache.clear()
    with pytest.raises(Unauthenticated, match="account is disabled"):
        _authenticate(platform.store, plaintext)


def test_scoped_token_carries_its_project(platform: Platform) -> None:
    admin = platform.admin()
    admin.projects.create("churn")
    with platform.store.session() as s:
        proj = s.scalar(select(Project).where(Project.name == "churn"))
        admin_id = s.scalar(select(Principal.id).where(Principal.name == "admin"))
    assert proj is not None and admin_id is not None
    _, plaintext = _issue(platform.store, admin_id, project=proj)
    caller = _authenticate(platform.store, plaintext)
    assert caller.scoped and caller.token_project_id == proj.id


# -- through the API ----------------------------------------------------------------------------


def test_scoped_token_reaches_only_its_project(platform: Platform) -> None:
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    alice.projects.create("churn")
    alice.projects.create("fraud")
    scoped = platform.client(alice.tokens.create("ci", project="churn").token)

    assert scoped.projects.get("churn").role == "owner"
    assert [p.name for p in scoped.projects.list()] == ["churn"]
    assert [m.project for m in scoped.whoami().projects] == ["churn"]
    # alice owns fraud, but this token may not even learn that it exists.
    for call in (
        lambda: scoped.projects.get("fraud"),
        lambda: scoped.members.list("fraud"),
        lambda: scoped.audit.list("fraud"),
        lambda: scoped.projects.delete("fraud"),
    ):
        with pytest.raises(NotFound, match="project 'fraud' not found"):
            call()
    with pytest.raises(PermissionDenied, match="project-scoped token"):
        scoped.tokens.create("more")
    with pytest.raises(PermissionDenied, match="project-scoped token"):
        scoped.tokens.create("more", project="churn")
    with pytest.raises(PermissionDenied, match="project-scoped token"):
        scoped.projects.create("third")
    with pytest.raises(PermissionDenied, match="project-scoped token"):
        scoped.change_password("alice-password-12", "another-password-1")
    assert alice.projects.get("fraud").name == "fraud"


def test_admins_scoped_token_loses_admin_powers(platform: Platform) -> None:
    admin = platform.admin()
    admin.projects.create("churn")
    platform.user("bob", admin_client=admin).projects.create("fraud")
    scoped = platform.client(admin.tokens.create("ci", project="churn").token)
    assert scoped.projects.get("churn").name == "churn"
    with pytest.raises(NotFound):
        scoped.projects.get("fraud")
    for call in (
        lambda: scoped.users.list(),
        lambda: scoped.users.create("carol"),
        lambda: scoped.users.disable("bob"),
        lambda: scoped.audit.list(),
        lambda: scoped.quotas.requests(),
    ):
        with pytest.raises(PermissionDenied, match="needs a platform admin"):
            call()
    assert admin.users.list()


def test_token_for_a_project_the_user_cannot_see_is_refused(platform: Platform) -> None:
    admin = platform.admin()
    alice = platform.user("alice", admin_client=admin)
    admin.projects.create("secret")
    with pytest.raises(NotFound, match="project 'secret' not found"):
        alice.tokens.create("ci", project="secret")
    assert [t.name for t in alice.tokens.list()] == ["session"]


def test_token_list_shows_prefixes_only(platform: Platform) -> None:
    alice = platform.user("alice")
    made = alice.tokens.create("ci", expires="1d")
    listed = {t.id: t for t in alice.tokens.list()}
    assert listed[made.id].prefix == made.token[:10]
    assert not hasattr(listed[made.id], "token")
    alice.tokens.revoke(made.id)
    assert {t.id: t for t in alice.tokens.list()}[made.id].revoked_at is not None
    with pytest.raises(Unauthenticated, match="revoked"):
        platform.client(made.token).whoami()
