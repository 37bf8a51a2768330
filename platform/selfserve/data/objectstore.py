"""One object-store interface; implementations are chosen by the URI scheme of the storage root."""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath

from selfserve.errors import InvalidInput
from selfserve.settings import Settings


def safe_key(*parts: str) -> str:
    """Join key parts, refusing anything that could leave the root (``..``, absolute, empty, NUL)."""
    key = PurePosixPath(*parts)
    if key.is_absolute() or any(p in ("..", ".", "") or "\x00" in p or "\\" in p for p in key.parts):
        raise InvalidInput(f"invalid storage path {'/'.join(parts)!r}")
    return str(key)


class ObjectStore(ABC):
    """Where projects keep their files. Keys are POSIX paths relative to the root."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """The full URI of ``key`` for engines (Polars, deltalake, DuckDB, MLflow)."""

    @abstractmethod
    def ensure_prefix(self, prefix: str) -> None:
        """Make ``prefix`` usable (idempotent)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Delete everything under ``prefix`` (idempotent)."""

    @abstractmethod
    def size_of(self, prefix: str) -> int:
        """Bytes held under ``prefix``."""


class LocalObjectStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        p = (self.root / safe_key(key)).resolve()
        if not p.is_relative_to(self.root):
            raise InvalidInput(f"invalid storage path {key!r}")
        return p

    def uri(self, key: str) -> str:
        return str(self.path(key))

    def ensure_prefix(self, prefix: str) -> None:
        self.path(prefix).mkdir(parents=True, exist_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def size_of(self, prefix: str) -> int:
        base = self.path(prefix)
        if not base.exists():
            return 0
        return sum(f.stat().st_size for f in base.rglob("*") if f.is_file() and not f.is_symlink())


def from_settings(settings: Settings) -> ObjectStore:
    return LocalObjectStore(settings.home / "storage")


def project_prefix(project: str) -> str:
    return safe_key("projects", project)
