"""``s3``: one object or every object under a prefix, in any S3-compatible store (AWS, MinIO, Garage...)."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, SecretStr, field_validator, model_validator

from selfserve.data.connectors._common import SourceConnector, filter_after, reveal
from selfserve.data.connectors._formats import FormatOptions, detect_format, read_file
from selfserve.data.connectors.base import ReadRequest
from selfserve.errors import InvalidInput, SelfServeError, ServiceUnavailable
from selfserve.policy.netguard import check_url

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


class S3Config(FormatOptions):
    """An object (``key``) or the objects under a ``prefix`` of a bucket."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"access_key_id", "secret_access_key"})

    bucket: str = Field(description="Bucket name (3-63 characters).")
    key: str | None = Field(None, description="One object's key (a read's table may name another).")
    prefix: str | None = Field(None, description="Read every data object under this prefix, in key order.")
    endpoint_url: str | None = Field(None, description="S3 endpoint for a non-AWS store, e.g. http://minio:9000.")
    region: str = Field("us-east-1", description="Region of the bucket.")
    access_key_id: SecretStr | None = Field(None, description="Access key id (secret); none: anonymous access.")
    secret_access_key: SecretStr | None = Field(None, description="Secret access key (secret).")

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, v: str) -> str:
        if not _BUCKET.fullmatch(v):
            raise ValueError("a bucket name has 3-63 lowercase letters, digits, '.' or '-'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> S3Config:
        if self.key is not None and self.prefix is not None:
            raise ValueError("give a key or a prefix, not both")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither (anonymous)")
        return self


class S3Connector(SourceConnector[S3Config]):
    """Reads objects through boto3, with the source's own credentials only (never the server's)."""

    kind: ClassVar[str] = "s3"
    config_model = S3Config

    def _client(self) -> Any:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        o = self.options
        if o.endpoint_url:
            check_url(o.endpoint_url, allow_private=self.settings.data.allow_private_urls)
        config: dict[str, Any] = {
            "retries": {"max_attempts": 2, "mode": "standard"},
            "connect_timeout": 10,
            "read_timeout": 60,
        }
        if o.endpoint_url:
            config["s3"] = {"addressing_style": "path"}
        if o.access_key_id is None:
            # Anonymous: botocore must not fall back to credentials found in the server's environment.
            config["signature_version"] = UNSIGNED
        return boto3.session.Session().client(
            "s3",
            endpoint_url=o.endpoint_url,
            region_name=o.region,
            aws_access_key_id=reveal(o.access_key_id),
            aws_secret_access_key=reveal(o.secret_access_key),
            config=Config(**config),
        )

    def _keys(self, client: Any, request: ReadRequest) -> list[str]:
        key = request.table or self.options.key
        if key:
            return [key]
        if self.options.prefix is None:
            raise InvalidInput("give the source a key or a prefix, or name the object in the read's table")
        keys = []
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.options.bucket, Prefix=self.options.prefix):
            for item in page.get("Contents", []):
                name = PurePosixPath(item["Key"]).name
                # Skip folder markers, empty objects and Hadoop-style side files (_SUCCESS, .crc).
                if item["Key"].endswith("/") or item.get("Size", 0) == 0 or name.startswith(("_", ".")):
                    continue
                keys.append(item["Key"])
        if not keys:
            raise InvalidInput(f"no data objects under s3://{self.options.bucket}/{self.options.prefix}")
        return sorted(keys)

    def _test(self) -> None:
        client = self._client()
        client.head_bucket(Bucket=self.options.bucket)
        if self.options.key:
            client.head_object(Bucket=self.options.bucket, Key=self.options.key)

    def _read(self, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        if request.query is not None:
            raise InvalidInput("s3 sources take no query; use a transform on the loaded dataset")
        client = self._client()
        keys = self._keys(client, request)
        for key in keys:
            detect_format(key, self.options.format)
        schema: pa.Schema | None = None
        with tempfile.TemporaryDirectory(prefix="selfserve-s3-") as tmp:
            for key in keys:
                label = f"s3://{self.options.bucket}/{key}"
                target = Path(tmp) / "object"
                response = client.get_object(Bucket=self.options.bucket, Key=key)
                with target.open("wb") as out:
                    shutil.copyfileobj(response["Body"], out, 1 << 20)
                try:
                    for batch in read_file(target, self.options, request.batch_rows, label=label, name=key):
                        if schema is None:
                            schema = batch.schema
                        elif batch.schema != schema:
                            batch = _conform(batch, schema, label)
                        batch = filter_after(batch, request.cursor_column, request.watermark)
                        if batch.num_rows:
                            yield batch
                finally:
                    target.unlink(missing_ok=True)

    def _translate(self, exc: Exception) -> SelfServeError | None:
        from botocore import exceptions as bx

        where = f"s3://{self.options.bucket}"
        if isinstance(exc, bx.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            detail = f"{code}: {error.get('Message', '')}".strip(": ")
            if code in ("NoSuchBucket",):
                return InvalidInput(f"bucket {self.options.bucket!r} does not exist")
            if code in ("NoSuchKey", "404", "NotFound"):
                return InvalidInput(f"no such object or bucket under {where} ({detail})")
            if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return InvalidInput(f"S3 refused the credentials for {where}: {detail}")
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "RequestTimeout"):
                return ServiceUnavailable(f"S3 at {self.options.endpoint_url or 'AWS'} is unavailable: {detail}")
            return InvalidInput(f"S3 refused the request for {where}: {detail}")
        if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ConnectionClosedError):
            return ServiceUnavailable(f"cannot reach S3 at {self.options.endpoint_url or 'AWS'}: {exc}")
        if isinstance(exc, bx.ReadTimeoutError | bx.ResponseStreamingError):
            return ServiceUnavailable(f"S3 at {self.options.endpoint_url or 'AWS'} stopped answering: {exc}")
        if isinstance(exc, bx.ParamValidationError | bx.InvalidEndpointConfigurationError):
            return InvalidInput(f"invalid S3 request: {exc}")
        return None


def _conform(batch: pa.RecordBatch, schema: pa.Schema, label: str) -> pa.RecordBatch:
    """Give a later object's batch the schema of the first object's, or say why it cannot."""
    missing = [n for n in schema.names if n not in batch.schema.names]
    extra = [n for n in batch.schema.names if n not in schema.names]
    if missing or extra:
        raise InvalidInput(
            f"{label} has other columns than the first object (missing: {', '.join(missing) or '-'}; "
            f"extra: {', '.join(extra) or '-'})"
        )
    try:
        return pa.Table.from_batches([batch]).select(schema.names).cast(schema).combine_chunks().to_batches()[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InvalidInput(f"{label} does not match the first object's column types: {exc}") from None
