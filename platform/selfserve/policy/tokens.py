"""API tokens: 32 random bytes, shown once, stored only as a SHA-256 hash, with expiry and revocation.

SHA-256 (not argon2) is right here: a token has 256 bits of entropy, so there is nothing to
brute-force, and a fast hash keeps authentication off the request's critical path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from selfserve.errors import InvalidInput, NotFound, Unauthenticated
from selfserve.policy.authz import Caller
from selfserve.settings import get_settings, parse_duration
from selfserve.store.tables import Project, Token, utcnow

PREFIX = "ss_"
_LAST_USED_EVERY = timedelta(seconds=60)


class CallerCache:
    """Recently authenticated tokens, so that most requests skip the DB lookup.

    Every change that ends a token's validity in this process (revoke, logout, disable,
    password reset) drops the principal's entries at once; ``ttl`` bounds how long another
    API process could keep honouring a token revoked elsewhere.
    """

    def __init__(self, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Caller, float, datetime | None]] = {}

    def get(self, digest: str) -> Caller | None:
        hit = self._entries.get(digest)
        if hit is None:
            return None
        caller, cached_at, expires_at = hit
        if time.monotonic() - cached_at > self.ttl or (expires_at is not None and expires_at <= utcnow()):
            self._entries.pop(digest, None)
            return None
        return caller

    def put(self, digest: str, caller: Caller, expires_at: datetime | None) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[digest] = (caller, time.monotonic(), expires_at)

    def forget_principal(self, principal_id: int) -> None:
        for digest, (caller, _, _) in list(self._entries.items()):
            if caller.id == principal_id:
                self._entries.pop(digest, None)

    def clear(self) -> None:
        self._entries.clear()


cache = CallerCache()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(
    session: Session,
    principal_id: int,
    *,
    name: str,
    kind: str = "api",
    expires: str | None = None,
    project: Project | None = None,
) -> tuple[Token, str]:
    """Create a token. Returns the row and the plaintext, which is never stored."""
    sec = get_settings().security
    max_ttl = parse_duration(sec.max_token_ttl)
    if expires is None:
        ttl = parse_duration(sec.session_ttl) if kind == "session" else max_ttl
    else:
        try:
            ttl = parse_duration(expires)
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        if ttl <= 0 or ttl > max_ttl:
            raise InvalidInput(f"token lifetime {expires!r} must be more than 0 and at most {sec.max_token_ttl}")
    plaintext = PREFIX + secrets.token_urlsafe(32)
    row = Token(
        principal_id=principal_id,
        name=name,
        kind=kind,
        token_hash=hash_token(plaintext),
        prefix=plaintext[:10],
        project_id=project.id if project else None,
        expires_at=utcnow() + timedelta(seconds=ttl),
    )
    session.add(row)
    session.flush()
    return row, plaintext


def authenticate(session: Session, plaintext: str) -> Caller:
    """Resolve a bearer token to its caller.

    Raises:
        Unauthenticated: unknown, expired or revoked token, or a disabled principal.
    """
    if not plaintext.startswith(PREFIX) or len(plaintext) > 128:
        raise Unauthenticated("invalid token")
    digest = hash_token(plaintext)
    cached = cache.get(digest)
    if cached is not None:
        return cached
    row = session.scalar(select(Token).where(Token.token_hash == digest))
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise Unauthenticated("invalid token")
    now = utcnow()
    if row.revoked_at is not None:
        raise Unauthenticated("token has been revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthenticated("token has expired")
    p = row.principal
    if p.disabled:
        raise Unauthenticated("account is disabled")
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_EVERY:
        row.last_used_at = now
        session.commit()
    caller = Caller(
        id=p.id, name=p.name, kind=p.kind, is_admin=p.is_admin, token_id=row.id, token_project_id=row.project_id
    )
    cache.put(digest, caller, row.expires_at)
    return caller


def cached_caller(plaintext: str) -> Caller | None:
    """The caller for a token authenticated moments ago in this process, without touching the DB."""
    if not plaintext.startswith(PREFIX) or len(plaintext) > 128:
        return None
    return cache.get(hash_token(plaintext))


def list_for(session: Session, principal_id: int) -> list[Token]:
    return list(session.scalars(select(Token).where(Token.principal_id == principal_id).order_by(Token.id)))


def revoke(session: Session, principal_id: int, token_id: int, *, any_owner: bool = False) -> Token:
    row = session.get(Token, token_id)
    if row is None or (row.principal_id != principal_id and not any_owner):
        raise NotFound(f"token {token_id} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    cache.forget_principal(row.principal_id)
    return row


def revoke_all(session: Session, principal_id: int) -> None:
    now = utcnow()
    for row in session.scalars(select(Token).where(Token.principal_id == principal_id, Token.revoked_at.is_(None))):
        row.revoked_at = now
    cache.forget_principal(principal_id)
