"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from the platform's secret key.

Source passwords, API keys and the like are stored only as ciphertext; the API never returns them;
:func:`mask` hides them in messages and logs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from selfserve.errors import SelfServeError
from selfserve.settings import get_settings

_CONTEXT = b"selfserve/secrets/v1"


@lru_cache(maxsize=4)
def _fernet(key: str) -> Fernet:
    derived = hashlib.sha256(_CONTEXT + key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def _current() -> Fernet:
    return _fernet(get_settings().resolved_secret_key())


def encrypt(values: dict[str, Any]) -> str:
    return _current().encrypt(json.dumps(values, sort_keys=True).encode()).decode()


def decrypt(token: str | None) -> dict[str, Any]:
    if not token:
        return {}
    try:
        data = json.loads(_current().decrypt(token.encode()))
    except InvalidToken:
        raise SelfServeError("stored secret cannot be decrypted: was the platform's secret key changed?") from None
    return data if isinstance(data, dict) else {}


def mask(text: str, secrets: dict[str, Any] | list[Any] | None) -> str:
    """Replace every secret value (and user:password@ in URLs) in ``text`` with ``***``."""
    values = secrets.values() if isinstance(secrets, dict) else (secrets or [])
    for v in values:
        if isinstance(v, str) and len(v) >= 3:
            text = text.replace(v, "***")
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)
