"""The saved login: ``<config_dir>/credentials.json``, mode 0600 in a 0700 directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILE = "credentials.json"


def load(config_dir: Path) -> dict[str, Any]:
    path = config_dir / FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(config_dir: Path, url: str, token: str, user: str) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(config_dir, 0o700)
    path = config_dir / FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token, "user": user}, f)
    os.replace(tmp, path)
    return path


def clear(config_dir: Path) -> bool:
    try:
        (config_dir / FILE).unlink()
        return True
    except FileNotFoundError:
        return False
