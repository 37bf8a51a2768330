"""Each platform principal's own MLflow account: made on first use, its password generated and kept
only as ciphertext (Fernet under the platform key, like source secrets).

The MLflow user name is the principal's name (``alice``, ``svc.churn``). Passwords never reach a log,
an error message or the audit trail; only the principal they belong to is ever shown theirs.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from selfserve.errors import Conflict
from selfserve.ml.mlflow import MLflowAdmin, MLflowError
from selfserve.policy.secrets import decrypt, encrypt
from selfserve.store.tables import MlflowIdentity, Principal

log = logging.getLogger(__name__)
# MLflow wants 12 characters at least; 32 random bytes make 43.
PASSWORD_BYTES = 32


@dataclass(frozen=True)
class Credentials:
    """A principal's MLflow user name and password."""

    username: str
    password: str

    def __repr__(self) -> str:  # never print the password by accident
        return f"Credentials(username={self.username!r}, password='***')"


def mlflow_username(principal: Principal) -> str:
    """The MLflow user of a principal: its name (users: ``[a-z][a-z0-9-]*``; service accounts: ``svc.<p>``)."""
    return principal.name


def find(session: Session, principal_id: int) -> MlflowIdentity | None:
    return session.scalar(select(MlflowIdentity).where(MlflowIdentity.principal_id == principal_id))


def credentials(row: MlflowIdentity) -> Credentials:
    return Credentials(row.username, str(decrypt(row.secret)["password"]))


def ensure(
    session: Session, admin: MLflowAdmin, principal: Principal, *, on_server: bool | None = None
) -> tuple[MlflowIdentity, bool]:
    """The principal's MLflow account, made if it has none (in the DB and on the server).

    Args:
        session: Flushed, not committed: the caller commits.
        admin: The MLflow admin client.
        principal: Whose account.
        on_server: Whether the server is known to hold the user (True: no check; False: make it
            again; None: ask the server).

    Returns:
        The identity row and whether it was made now.

    Raises:
        Conflict: another request is making the same account (the session was rolled back).
        ServiceUnavailable: MLflow is not reachable or refused.
    """
    row = find(session, principal.id)
    if row is None:
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        row = MlflowIdentity(
            principal_id=principal.id, username=mlflow_username(principal), secret=encrypt({"password": password})
        )
        # The row first: its unique principal_id claims the account, so two requests cannot both make it.
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            raise Conflict(f"the MLflow account of {principal.name!r} is being made right now; try again") from None
        row.mlflow_user_id = _fresh_user(admin, row.username, password)
        session.flush()
        return row, True
    if on_server is None:
        on_server = admin.get_user(row.username) is not None
    if not on_server:
        log.warning("MLflow user %s was missing on the server; made again", row.username)
        row.mlflow_user_id = _fresh_user(admin, row.username, credentials(row).password)
        session.flush()
    return row, False


def _fresh_user(admin: MLflowAdmin, username: str, password: str) -> int:
    """Make ``username`` on the server with nothing granted; a leftover of that name is replaced."""
    user = admin.create_user(username, password)
    if user is None:
        # A user of that name is left over (an earlier attempt, or a deleted project's service
        # account): deleting it drops every role and grant it held.
        admin.delete_user(username)
        user = admin.create_user(username, password)
        if user is None:
            raise MLflowError("POST", "/api/2.0/mlflow/users/create", 400, "RESOURCE_ALREADY_EXISTS")
    return int(user["id"])


def lock(session: Session, admin: MLflowAdmin, principal: Principal) -> None:
    """Shut the principal out of MLflow (a disabled user): its password there becomes a random one."""
    row = find(session, principal.id)
    if row is not None:
        admin.update_password(row.username, secrets.token_urlsafe(PASSWORD_BYTES))


def unlock(session: Session, admin: MLflowAdmin, principal: Principal) -> None:
    """Let an enabled principal into MLflow again with its stored password."""
    row = find(session, principal.id)
    if row is not None:
        admin.update_password(row.username, credentials(row).password)
