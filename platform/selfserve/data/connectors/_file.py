"""``file``: CSV, Parquet, JSON or NDJSON from a server directory the admin opened, or from a URL."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, model_validator

from selfserve.data.connectors._common import SourceConnector, filter_after, path_in_roots
from selfserve.data.connectors._formats import FormatOptions, detect_format, format_options, read_file
from selfserve.data.connectors._http import check_response, download, guarded_client, translate_http_error, url_name
from selfserve.data.connectors.base import ReadRequest
from selfserve.errors import InvalidInput, SelfServeError
from selfserve.policy.netguard import check_url
from selfserve.settings import get_settings


class FileConfig(FormatOptions):
    """A file on the server (under ``data.file_roots``) or at an http(s) URL."""

    path: str | None = Field(
        None, description="Absolute path of a file (or a directory: then the read's table names the file)."
    )
    url: str | None = Field(None, description="An http(s) URL to download; private addresses follow the URL policy.")
    timeout: float = Field(60.0, gt=0, le=3600, description="Seconds a URL download may stall.")

    @model_validator(mode="after")
    def _one_location(self) -> FileConfig:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path or url")
        return self


def read_upload(
    path: str | Path,
    format: str | None = None,
    options: dict[str, Any] | None = None,
    *,
    batch_rows: int | None = None,
    name: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Parse an uploaded file the platform saved itself (no root check): same formats and errors as ``file``.

    Args:
        path: Where the upload was saved.
        format: csv, parquet, json or ndjson; default from the extension of ``name`` or ``path``.
        options: CSV options: ``delimiter``, ``header``, ``encoding``.
        batch_rows: Rows per batch (default ``data.default_batch_rows``).
        name: The file's original name, for messages and for the extension.

    Raises:
        InvalidInput: unknown format, empty file, bad content (the message says why and where).
    """
    opts = format_options({**(options or {}), **({"format": format} if format else {})})
    if batch_rows is None:
        batch_rows = get_settings().data.default_batch_rows
    if batch_rows < 1:
        raise InvalidInput("batch_rows must be at least 1")
    file = Path(path)
    name = name or file.name
    detect_format(name, opts.format)
    return read_file(file, opts, batch_rows, label=name, name=name)


class FileConnector(SourceConnector[FileConfig]):
    """Reads one file from an allowed server directory or an http(s) URL."""

    kind: ClassVar[str] = "file"
    config_model = FileConfig

    def _path(self, request: ReadRequest) -> tuple[Path, str]:
        assert self.options.path is not None
        base = Path(self.options.path)
        if request.table:
            if Path(request.table).is_absolute() or request.table.startswith("~"):
                raise InvalidInput(f"the file name {request.table!r} must be relative to the source's directory")
            shown = str(base / request.table)
        else:
            shown = self.options.path
        return path_in_roots(shown, self.settings.data.file_roots), shown

    def _test(self) -> None:
        if self.options.url is not None:
            check_url(self.options.url, allow_private=self.settings.data.allow_private_urls)
            with (
                guarded_client(self.settings, timeout=self.options.timeout) as client,
                client.stream("GET", self.options.url) as response,
            ):
                check_response(response, self.options.url)
            return
        assert self.options.path is not None
        path_in_roots(self.options.path, self.settings.data.file_roots, file=False)

    def _read(self, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        if request.query is not None:
            raise InvalidInput("file sources take no query; use a transform on the loaded dataset")
        if self.options.url is not None:
            yield from self._read_url(request)
            return
        path, shown = self._path(request)
        for batch in read_file(path, self.options, request.batch_rows, label=shown):
            batch = filter_after(batch, request.cursor_column, request.watermark)
            if batch.num_rows:
                yield batch

    def _read_url(self, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        url = self.options.url
        assert url is not None
        check_url(url, allow_private=self.settings.data.allow_private_urls)
        name = url_name(url)
        with tempfile.TemporaryDirectory(prefix="selfserve-download-") as tmp:
            target = Path(tmp) / "download"
            with guarded_client(self.settings, timeout=self.options.timeout) as client, target.open("wb") as out:
                download(client, url, out, max_bytes=self.settings.data.max_upload_bytes)
            for batch in read_file(target, self.options, request.batch_rows, label=url, name=name):
                batch = filter_after(batch, request.cursor_column, request.watermark)
                if batch.num_rows:
                    yield batch

    def _translate(self, exc: Exception) -> SelfServeError | None:
        if self.options.url is not None:
            return translate_http_error(exc, self.options.url)
        if isinstance(exc, PermissionError):
            return InvalidInput(f"the server may not read {self.options.path!r}: {exc.strerror}")
        return None
