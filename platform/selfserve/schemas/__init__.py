"""Pydantic models shared by the API and the SDK. The API returns only these, never ORM rows."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

NAME_RULE = re.compile(r"[a-z][a-z0-9-]{0,62}")
NAME_HELP = "must start with a lowercase letter and hold only lowercase letters, digits and '-', 63 at most"


def check_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a valid platform name, else raise ValueError saying why."""
    if not isinstance(value, str) or not NAME_RULE.fullmatch(value):
        shown = value if isinstance(value, str) and len(value) <= 70 else f"{str(value)[:67]}..."
        raise ValueError(f"invalid {what} {shown!r}: {NAME_HELP}")
    return value


Name = Annotated[str, AfterValidator(check_name), Field(description="a-z, 0-9 and '-', starting with a letter")]


def check_text(value: str) -> str:
    """Refuse the NUL character: PostgreSQL cannot store or compare it, and no text here needs it."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (\\u0000)")
    return value


Text = Annotated[str, AfterValidator(check_text)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)


# -- identity --------------------------------------------------------------------------


class LoginRequest(Model):
    username: Text = Field(max_length=64)
    password: str = Field(max_length=1024)
    token_name: Text = Field("session", max_length=64)


class UserPublic(Model):
    name: str
    kind: Literal["user", "service"] = "user"
    is_admin: bool = False
    disabled: bool = False
    locked_until: datetime | None = None
    created_at: datetime


class UserCreate(Model):
    name: Name
    password: str | None = Field(
        None, min_length=12, max_length=1024, description="At least 12 characters; generated when omitted."
    )
    is_admin: bool = False


class UserCreated(UserPublic):
    password: str | None = Field(None, description="The generated password, shown only this once.")


class PasswordReset(Model):
    password: str | None = Field(None, min_length=12, max_length=1024)


class PasswordChange(Model):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(min_length=12, max_length=1024)


class TokenCreate(Model):
    name: Name = "api"
    expires: str | None = Field(None, description="Lifetime like 30d or 12h; default the platform's maximum.")
    project: Name | None = Field(None, description="Limit the token to this project.")


class TokenPublic(Model):
    id: int
    name: str
    kind: str
    prefix: str
    project: str | None = None
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class TokenCreated(TokenPublic):
    token: str = Field(description="The token itself, shown only this once.")


class LoginResponse(Model):
    token: str
    expires_at: datetime | None
    user: UserPublic


class Membership(Model):
    project: str
    role: str


class WhoAmI(Model):
    user: UserPublic
    token: TokenPublic
    projects: list[Membership]


class RolePublic(Model):
    name: str
    description: str
    actions: list[str]


# -- projects --------------------------------------------------------------------------


class ProjectCreate(Model):
    name: Name
    description: Text = Field("", max_length=2000)


class ProjectUpdate(Model):
    description: Text = Field(max_length=2000)


class ProvisionStepPublic(Model):
    provisioner: str
    status: str
    attempts: int
    error: str | None = None
    updated_at: datetime


class ProjectPublic(Model):
    name: str
    description: str
    status: str
    created_by: str
    created_at: datetime
    role: str | None = Field(None, description="The caller's role in the project (None: admin, not a member).")
    provisioning: list[ProvisionStepPublic] = Field(default_factory=list)


class MemberAdd(Model):
    user: Name
    role: Name


class MemberUpdate(Model):
    role: Name


class MemberPublic(Model):
    user: str
    kind: str = "user"
    role: str
    created_at: datetime


# -- quotas and usage ------------------------------------------------------------------


class QuotaItem(Model):
    resource: str
    description: str
    unit: str
    limit: float
    usage: float | None = Field(None, description="Current use for pooled resources; None for per-run limits.")
    shown: str = Field(description="Human form, e.g. '1.2 GB / 10 GB'.")


class QuotaPublic(Model):
    project: str
    items: list[QuotaItem]


class QuotaSet(Model):
    limits: dict[str, str | int | float] = Field(description="resource -> new limit, e.g. {'storage': '20GB'}")


class QuotaRequestCreate(Model):
    limits: dict[str, str | int | float]
    reason: Text = Field("", max_length=2000)


class QuotaRequestPublic(Model):
    id: int
    project: str
    requested_by: str
    changes: dict[str, float]
    reason: str
    status: str
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str = ""
    created_at: datetime


class QuotaDecision(Model):
    note: Text = Field("", max_length=2000)


class UsageItem(Model):
    resource: str
    amount: float
    shown: str
    updated_at: datetime | None = None


class UsagePublic(Model):
    project: str
    items: list[UsageItem]


# -- audit -----------------------------------------------------------------------------


class AuditEventPublic(Model):
    id: int
    at: datetime
    principal: str
    action: str
    project: str | None = None
    target: str | None = None
    outcome: str
    detail: dict[str, Any] | None = None


class Health(Model):
    status: str
    version: str
    database: str
