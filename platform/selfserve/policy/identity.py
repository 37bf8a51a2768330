"""Users and passwords: argon2 hashes, generated first-admin credentials, slowed and locked logins."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from selfserve.errors import Conflict, InvalidInput, NotFound, RateLimited, Unauthenticated
from selfserve.policy import audit
from selfserve.schemas import check_name
from selfserve.settings import get_settings
from selfserve.store.tables import Principal, utcnow

_hasher = PasswordHasher()
# Verified against when the user does not exist, so both paths take the same time.
_DUMMY_HASH = _hasher.hash("selfserve-dummy-password")
MIN_PASSWORD = 12


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password too short: at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def get_user(session: Session, name: str) -> Principal:
    user = session.scalar(select(Principal).where(Principal.name == name))
    if user is None:
        raise NotFound(f"user {name!r} not found")
    return user


def create_user(
    session: Session, name: str, password: str | None = None, *, is_admin: bool = False, kind: str = "user"
) -> tuple[Principal, str | None]:
    """Create a user; returns it and the generated password when none was given."""
    if kind == "user":
        check_name(name, "user name")
    if session.scalar(select(Principal.id).where(Principal.name == name)) is not None:
        raise Conflict(f"user {name!r} already exists")
    generated = None
    if password is None and kind == "user":
        password = generated = generate_password()
    user = Principal(
        name=name,
        kind=kind,
        is_admin=is_admin,
        password_hash=hash_password(password) if password else None,
    )
    session.add(user)
    session.flush()
    return user, generated


def bootstrap_admin(session: Session) -> tuple[str, str] | None:
    """At first start, create the first admin. Returns (name, password) if created now."""
    if session.scalar(select(Principal.id).where(Principal.kind == "user").limit(1)) is not None:
        return None
    cfg = get_settings().platform
    given = cfg.admin_password.get_secret_value() if cfg.admin_password else None
    user, generated = create_user(session, cfg.admin_username, given, is_admin=True)
    audit.record(session, "system", "user:create", target=user.name, detail={"admin": True, "bootstrap": True})
    return user.name, (generated or given or "")


def login(session: Session, username: str, password: str) -> Principal:
    """Check a password, slowing and then locking an account after repeated failures.

    Raises:
        Unauthenticated: wrong name or password, or the account is disabled.
        RateLimited: too many recent failures; says when to retry.
    """
    sec = get_settings().security
    now = utcnow()
    user = session.scalar(select(Principal).where(Principal.name == username, Principal.kind == "user"))
    if user is not None and user.locked_until and user.locked_until > now:
        raise RateLimited(
            f"account {username!r} is locked after repeated failed logins; retry after "
            f"{user.locked_until:%Y-%m-%d %H:%M:%S} UTC"
        )
    if user is not None and user.failed_logins >= sec.login_slow_after and user.last_failed_at:
        wait = _backoff(user.failed_logins - sec.login_slow_after)
        ready = user.last_failed_at + timedelta(seconds=wait)
        if ready > now:
            raise RateLimited(
                f"too many failed logins for {username!r}; wait {(ready - now).total_seconds():.0f} s and retry"
            )
    ok = verify_password(user.password_hash if user else None, password)
    if not ok or user is None or user.disabled:
        if user is not None and not ok:
            user.failed_logins += 1
            user.last_failed_at = now
            if user.failed_logins >= sec.login_lock_after:
                user.locked_until = now + timedelta(minutes=sec.login_lock_minutes)
        # One message for every case, so a caller cannot tell which names exist.
        raise Unauthenticated("wrong user name or password, or the account is disabled")
    user.failed_logins = 0
    user.last_failed_at = None
    user.locked_until = None
    if _hasher.check_needs_rehash(user.password_hash or ""):
        user.password_hash = _hasher.hash(password)
    return user


def _backoff(extra_failures: int) -> float:
    return float(min(2 ** max(extra_failures, 0), 60))


def set_password(user: Principal, password: str | None) -> str | None:
    """Set a new password (generated when None); unlocks the account. Returns the generated one."""
    generated = None
    if password is None:
        password = generated = generate_password()
    user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    user.last_failed_at = None
    return generated


def is_locked(user: Principal, now: datetime | None = None) -> bool:
    return bool(user.locked_until and user.locked_until > (now or utcnow()))
