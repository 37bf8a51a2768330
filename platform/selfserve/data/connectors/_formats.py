"""Parsing files (CSV, Parquet, JSON, NDJSON) into record batches, for file, S3 and upload sources.

Bad content becomes :class:`InvalidInput` with the reason: a ragged CSV names the line, a wrong
encoding names the encoding and the line, an empty file says so, unparseable JSON names the line
and column.
"""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, ValidationError, field_validator

from selfserve.data.connectors._common import RowBatcher, SourceConfig, rebatch, validation_message
from selfserve.errors import InvalidInput

Format = Literal["csv", "parquet", "json", "ndjson"]
FORMATS: tuple[str, ...] = ("csv", "parquet", "json", "ndjson")

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}
_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd", ".lz4": "lz4"}
_CSV_BLOCK = 8 << 20  # types are inferred from the first block: a large one makes that more robust
_READ_CHUNK = 1 << 20


class FormatOptions(SourceConfig):
    """How to parse a file: its format (default: from the extension) and the CSV options."""

    format: Format | None = Field(None, description="csv, parquet, json (array of objects) or ndjson.")
    delimiter: str | None = Field(None, description="CSV field delimiter (default ',' or tab for .tsv).")
    header: bool = Field(True, description="The CSV's first line holds the column names.")
    encoding: str = Field("utf-8", description="Text encoding of CSV and JSON files.")

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 1 or v in '\r\n"'):
            raise ValueError("the delimiter must be one character (not a quote or a line break)")
        return v

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r}") from None
        return v


def format_options(options: dict[str, Any] | FormatOptions | None) -> FormatOptions:
    """Validate parse options given as a dict (an upload's form fields, a source's config)."""
    if isinstance(options, FormatOptions):
        return options
    try:
        return FormatOptions.model_validate(options or {})
    except ValidationError as exc:
        raise InvalidInput(validation_message("file options", exc)) from None


def split_compression(name: str) -> tuple[str, str | None]:
    """``data.csv.gz`` -> (``data.csv``, ``gzip``)."""
    lowered = name.lower()
    for suffix, codec in _COMPRESSIONS.items():
        if lowered.endswith(suffix):
            return name[: -len(suffix)], codec
    return name, None


def detect_format(name: str, format: str | None = None) -> str:
    """The format given, else the one the (possibly compressed) file name's extension implies.

    Raises:
        InvalidInput: neither is known.
    """
    if format is not None:
        if format not in FORMATS:
            raise InvalidInput(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
        return format
    base, _ = split_compression(name)
    fmt = _EXTENSIONS.get(Path(base).suffix.lower())
    if fmt is None:
        raise InvalidInput(
            f"cannot tell the format of {name!r} from its extension: set format to one of {', '.join(FORMATS)}"
        )
    return fmt


def read_file(
    path: Path,
    options: FormatOptions,
    batch_rows: int,
    *,
    label: str,
    name: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield the rows of a local file in batches of ``batch_rows``.

    Args:
        path: The file to parse (already checked by the caller).
        options: The format and CSV options.
        batch_rows: Rows per batch.
        label: How to name the file in messages (the user's path, URL or object key).
        name: The name whose extension tells the format and compression (default: ``path``).

    Raises:
        InvalidInput: unknown format, empty file, bad content.
    """
    name = name or path.name
    fmt = detect_format(name, options.format)
    base, compression = split_compression(name)
    if path.stat().st_size == 0:
        raise InvalidInput(f"{label} is empty")
    if fmt == "parquet":
        yield from _read_parquet(path, batch_rows, label)
        return
    stream = pa.input_stream(str(path), compression=compression)
    try:
        text = _Recoder(stream, options.encoding, label)
        if fmt == "csv":
            delimiter = options.delimiter or ("\t" if Path(base).suffix.lower() == ".tsv" else ",")
            yield from rebatch(_read_csv(text, delimiter, options.header, label), batch_rows)
        elif fmt == "ndjson":
            yield from _read_ndjson(text, batch_rows, label)
        else:
            yield from _read_json(text, batch_rows, label)
    finally:
        stream.close()


class _Recoder(io.RawIOBase):
    """Reads bytes in ``encoding`` and hands valid UTF-8 to Arrow, failing on the first bad byte.

    Arrow itself would read invalid UTF-8 into a binary column without a word.
    """

    def __init__(self, raw: Any, encoding: str, label: str) -> None:
        super().__init__()
        self._raw = raw
        self._encoding = encoding
        self._label = label
        self._decoder = codecs.getincrementaldecoder(encoding)("strict")
        self._same = codecs.lookup(encoding).name == "utf-8"
        self._buffer = bytearray()
        self._eof = False
        self._line = 1

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        while len(self._buffer) < len(view) and not self._eof:
            self._fill()
        n = min(len(view), len(self._buffer))
        view[:n] = self._buffer[:n]
        del self._buffer[:n]
        return n

    def _fill(self) -> None:
        data = self._raw.read(_READ_CHUNK)
        if not data:
            self._eof = True
        data = bytes(data)
        try:
            text = self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            line = self._line + data[: max(exc.start, 0)].count(b"\n")
            raise InvalidInput(
                f"{self._label} is not valid {self._encoding} text (line {line}): "
                "set the `encoding` option to the file's encoding, e.g. latin-1 or cp1252"
            ) from None
        self._line += data.count(b"\n")
        self._buffer += data if self._same else text.encode("utf-8")


def _arrow_message(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _read_csv(text: _Recoder, delimiter: str, header: bool, label: str) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as pacsv

    read_options = pacsv.ReadOptions(use_threads=False, block_size=_CSV_BLOCK, autogenerate_column_names=not header)
    parse_options = pacsv.ParseOptions(delimiter=delimiter)
    try:
        reader = pacsv.open_csv(text, read_options=read_options, parse_options=parse_options)
        yield from reader
    except pa.ArrowInvalid as exc:
        raise InvalidInput(_csv_message(exc, label)) from None


def _csv_message(exc: Exception, label: str) -> str:
    import re

    message = _arrow_message(exc)
    if "Empty CSV file" in message:
        return f"{label} is empty"
    ragged = re.search(r"Row #(\d+): Expected (\d+) columns, got (\d+)", message)
    if ragged:
        line, expected, got = ragged.groups()
        return f"{label}: line {line} has {got} fields where the header has {expected} (ragged CSV)"
    conversion = re.search(r"In CSV column #(\d+): Row #(\d+): (.*)", message)
    if conversion:
        column, line, reason = conversion.groups()
        return (
            f"{label}: line {line}, column {int(column) + 1}: {reason} "
            "(the column's type was inferred from the first rows)"
        )
    return f"cannot parse {label} as CSV: {message.removeprefix('CSV parse error: ')}"


def _read_parquet(path: Path, batch_rows: int, label: str) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"{label} is not a valid Parquet file: {_arrow_message(exc)}") from None
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows):
            if batch.num_rows:
                yield batch
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"cannot read the Parquet file {label}: {_arrow_message(exc)}") from None
    finally:
        parquet.close()


def _json_error(label: str, exc: json.JSONDecodeError, line_offset: int = 0) -> InvalidInput:
    return InvalidInput(f"{label} is not valid JSON: {exc.msg} at line {exc.lineno + line_offset}, column {exc.colno}")


def _read_json(text: _Recoder, batch_rows: int, label: str) -> Iterator[pa.RecordBatch]:
    content = io.TextIOWrapper(io.BufferedReader(text), encoding="utf-8-sig").read()
    if not content.strip():
        raise InvalidInput(f"{label} is empty")
    try:
        records = json.loads(content)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and content.lstrip().startswith("{"):
            # A ".json" file holding one object per line is NDJSON in practice.
            yield from _ndjson_lines(io.StringIO(content), batch_rows, label)
            return
        raise _json_error(label, exc) from None
    del content
    if not isinstance(records, list):
        raise InvalidInput(f"{label}: expected a JSON array of objects (or NDJSON: one object per line)")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise InvalidInput(f"{label}: item {i} of the JSON array is a {type(record).__name__}, not an object")
    if records:
        # The whole array is in memory: infer the columns and types from every record.
        yield from rebatch([RowBatcher().batch(records)], batch_rows)


def _read_ndjson(text: _Recoder, batch_rows: int, label: str) -> Iterator[pa.RecordBatch]:
    yield from _ndjson_lines(io.TextIOWrapper(io.BufferedReader(text), encoding="utf-8-sig"), batch_rows, label)


def _ndjson_lines(lines: io.TextIOBase, batch_rows: int, label: str) -> Iterator[pa.RecordBatch]:
    batcher = RowBatcher()
    rows: list[dict[str, Any]] = []
    seen_any = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        seen_any = True
        try:
            record = json.loads(line.strip())
        except json.JSONDecodeError as exc:
            raise _json_error(label, exc, number - 1) from None
        if not isinstance(record, dict):
            raise InvalidInput(f"{label}: line {number} holds a JSON {type(record).__name__}, not an object")
        rows.append(record)
        if len(rows) >= batch_rows:
            yield batcher.batch(rows)
            rows = []
    if not seen_any:
        raise InvalidInput(f"{label} is empty")
    if rows:
        yield batcher.batch(rows)
