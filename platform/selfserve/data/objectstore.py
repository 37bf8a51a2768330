"""One object-store interface; the implementation is chosen by the storage root's URI scheme.

Each store also turns its settings into what the engines need: ``storage_options`` for Polars
and deltalake, a pyarrow filesystem for Arrow's Parquet reader and writer, a ``CREATE SECRET`` for
DuckDB, and a URI for MLflow artifacts.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from selfserve.errors import InvalidInput
from selfserve.settings import Settings


def safe_key(*parts: str) -> str:
    """Join key parts, refusing anything that could leave the root (``..``, absolute, empty, NUL)."""
    joined = "/".join(parts)
    key = PurePosixPath(joined)
    if (
        not joined
        or key.is_absolute()
        or any(p in ("..", ".", "") for p in joined.split("/"))
        or "\x00" in joined
        or "\\" in joined
    ):
        raise InvalidInput(f"invalid storage path {joined!r}")
    return str(key)


class ObjectStore(ABC):
    """Where projects keep their files. Keys are POSIX paths relative to the root."""

    scheme: str

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
    def delete_object(self, key: str) -> None:
        """Delete one object (idempotent)."""

    @abstractmethod
    def size_of(self, prefix: str) -> int:
        """Bytes held under ``prefix``."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write one object (whole, or not at all)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read one object.

        Raises:
            FileNotFoundError: no such object.
        """

    def storage_options(self) -> dict[str, str]:
        """Options for Polars and deltalake (``storage_options=``)."""
        return {}

    def duckdb_setup(self) -> list[str]:
        """Statements that let a DuckDB connection read this store (extensions, secrets)."""
        return []

    @abstractmethod
    def arrow_filesystem(self) -> Any:
        """A ``pyarrow.fs.FileSystem`` reaching this store (built once per store); its paths are
        what :meth:`arrow_path` gives."""

    @abstractmethod
    def arrow_path(self, uri: str) -> str:
        """The path in :meth:`arrow_filesystem` of a URI in this store (as :meth:`uri` gives)."""

    def arrow_output(self, key: str) -> Any:
        """An Arrow output stream that writes the object ``key``; the object is whole once the
        stream is closed (an S3 multipart upload completes then)."""
        return self.arrow_filesystem().open_output_stream(self.arrow_path(self.uri(key)))


class LocalObjectStore(ObjectStore):
    scheme = "file"

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

    def delete_object(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def size_of(self, prefix: str) -> int:
        base = self.path(prefix)
        if not base.exists():
            return 0
        return sum(f.stat().st_size for f in base.rglob("*") if f.is_file() and not f.is_symlink())

    def put_bytes(self, key: str, data: bytes) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(p)

    def get_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def arrow_filesystem(self) -> Any:
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem()

    def arrow_path(self, uri: str) -> str:
        return uri.removeprefix("file://")

    def arrow_output(self, key: str) -> Any:
        self.path(key).parent.mkdir(parents=True, exist_ok=True)
        return super().arrow_output(key)


class S3ObjectStore(ObjectStore):
    """Any S3 server (MinIO, AWS, a moto server in tests), through the S3 API only."""

    scheme = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = region
        self._client: Any = None
        self._arrow_fs: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                aws_access_key_id=self.access_key_id,
                aws_secret_access_key=self.secret_access_key,
                region_name=self.region,
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
            )
        return self._client

    def key(self, key: str) -> str:
        k = safe_key(key)
        return f"{self.prefix}/{k}" if self.prefix else k

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.key(key)}"

    def ensure_prefix(self, prefix: str) -> None:
        # S3 has no directories; a marker object makes the project visible to plain listings.
        self.client.put_object(Bucket=self.bucket, Key=f"{self.key(prefix)}/.keep", Body=b"")

    def _objects(self, prefix: str) -> list[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        found: list[dict[str, Any]] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.key(prefix)}/"):
            found.extend(page.get("Contents", []))
        return found

    def delete_prefix(self, prefix: str) -> None:
        objs = self._objects(prefix)
        for i in range(0, len(objs), 1000):
            chunk = [{"Key": o["Key"]} for o in objs[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})

    def delete_object(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(key))

    def size_of(self, prefix: str) -> int:
        return sum(int(o.get("Size", 0)) for o in self._objects(prefix))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self.key(key))["Body"].read())
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(key) from None

    def storage_options(self) -> dict[str, str]:
        opts = {"AWS_REGION": self.region}
        if self.endpoint_url:
            opts["AWS_ENDPOINT_URL"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                opts["AWS_ALLOW_HTTP"] = "true"
        if self.access_key_id:
            opts["AWS_ACCESS_KEY_ID"] = self.access_key_id
        if self.secret_access_key:
            opts["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        return opts

    def arrow_filesystem(self) -> Any:
        if self._arrow_fs is None:
            import pyarrow.fs

            endpoint = urlparse(self.endpoint_url) if self.endpoint_url else None
            self._arrow_fs = pyarrow.fs.S3FileSystem(
                access_key=self.access_key_id,
                secret_key=self.secret_access_key,
                region=self.region,
                endpoint_override=endpoint.netloc if endpoint else None,
                scheme=endpoint.scheme if endpoint else "https",
                force_virtual_addressing=False,
                check_directory_existence_before_creation=False,
            )
        return self._arrow_fs

    def arrow_path(self, uri: str) -> str:
        return uri.removeprefix("s3://")

    def duckdb_setup(self) -> list[str]:
        def lit(v: str) -> str:
            return "'" + v.replace("'", "''") + "'"

        parts = ["TYPE s3", f"REGION {lit(self.region)}", "URL_STYLE 'path'"]
        if self.access_key_id:
            parts.append(f"KEY_ID {lit(self.access_key_id)}")
        if self.secret_access_key:
            parts.append(f"SECRET {lit(self.secret_access_key)}")
        if self.endpoint_url:
            u = urlparse(self.endpoint_url)
            parts.append(f"ENDPOINT {lit(u.netloc)}")
            parts.append(f"USE_SSL {'true' if u.scheme == 'https' else 'false'}")
        return [f"CREATE OR REPLACE SECRET selfserve_storage ({', '.join(parts)})"]


def from_settings(settings: Settings) -> ObjectStore:
    """The platform's object store: ``storage.url`` (s3://bucket/prefix or a directory), default <home>/storage."""
    cfg = settings.storage
    url = cfg.url or str(settings.home / "storage")
    if url.startswith("s3://"):
        u = urlparse(url)
        return S3ObjectStore(
            u.netloc,
            u.path,
            endpoint_url=cfg.s3_endpoint_url,
            access_key_id=cfg.s3_access_key_id.get_secret_value() if cfg.s3_access_key_id else None,
            secret_access_key=cfg.s3_secret_access_key.get_secret_value() if cfg.s3_secret_access_key else None,
            region=cfg.s3_region,
        )
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"unsupported storage URL {url!r}: use a directory or s3://bucket/prefix")
    return LocalObjectStore(Path(url.removeprefix("file://")))


def project_prefix(project: str) -> str:
    return safe_key("projects", project)


def dataset_prefix(project: str, dataset: str) -> str:
    return safe_key("projects", project, "datasets", dataset)
