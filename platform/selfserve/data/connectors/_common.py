"""What every connector shares: config validation, error translation with masked secrets, identifier
checks, and turning Python rows into Arrow batches that share one schema."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from selfserve.data.connectors.base import Connector, ReadRequest
from selfserve.errors import InvalidInput, SelfServeError, ServiceUnavailable
from selfserve.policy.secrets import mask
from selfserve.settings import Settings

# -- errors ----------------------------------------------------------------------------------------


def secret_values(secrets: Any) -> list[str]:
    """Every string inside ``secrets`` (nested dicts and lists included, SecretStr unwrapped)."""
    if isinstance(secrets, SecretStr):
        secrets = secrets.get_secret_value()
    if isinstance(secrets, str):
        return [secrets] if secrets else []
    if isinstance(secrets, dict):
        return [v for value in secrets.values() for v in secret_values(value)]
    if isinstance(secrets, list | tuple | set):
        return [v for value in secrets for v in secret_values(value)]
    return []


def invalid(message: str, secrets: Any = None) -> InvalidInput:
    """An :class:`InvalidInput` (422) for a bad config, table, query or content, secrets masked."""
    return InvalidInput(mask(message, secret_values(secrets)))


def unavailable(message: str, secrets: Any = None) -> ServiceUnavailable:
    """A :class:`ServiceUnavailable` (503) for a source that cannot be reached, secrets masked."""
    return ServiceUnavailable(mask(message, secret_values(secrets)))


def masked(error: SelfServeError, secrets: Any) -> SelfServeError:
    """The same error with every secret masked in its message (``error`` itself if nothing changes)."""
    text = mask(error.message, secret_values(secrets))
    if text == error.message:
        return error
    return type(error)(text, detail=error.detail)


def validation_message(what: str, exc: ValidationError) -> str:
    """A one-line summary of a pydantic error that never repeats the input values."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"invalid {what}: " + "; ".join(parts)


# -- config models ---------------------------------------------------------------------------------


class SourceConfig(BaseModel):
    """Base of the per-kind config models: unknown keys are refused; secrets are ``SecretStr``."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    #: The keys that hold secrets: stored encrypted, never returned, masked in every message.
    secret_fields: ClassVar[frozenset[str]] = frozenset()


def split_url_password(url: str) -> tuple[str, str | None]:
    """Remove the password from ``scheme://user:password@host/...``; return the clean URL and the password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    user = quote(unquote(parts.username or ""), safe="")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}@{host}" if user else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), unquote(parts.password)


def move_url_password(data: Any, field: str = "url") -> Any:
    """For ``mode="before"`` validators: move a password found in ``data[field]`` to ``data["password"]``."""
    if isinstance(data, dict) and isinstance(data.get(field), str):
        try:
            clean, password = split_url_password(data[field])
        except ValueError:
            return data
        if password is not None:
            data = {**data, field: clean}
            if not data.get("password"):
                data["password"] = password
    return data


def reveal(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def unwrap_secrets(value: Any) -> Any:
    """``model_dump`` output with every ``SecretStr`` replaced by its value."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


# -- the connector base ----------------------------------------------------------------------------

ConfigT = TypeVar("ConfigT", bound=SourceConfig)


class SourceConnector(Connector, Generic[ConfigT]):
    """A :class:`Connector` that validates its config and turns every failure into a masked error.

    Subclasses set ``config_model`` and implement ``_test``, ``_read`` and, for their driver's
    exceptions, ``_translate``.
    """

    config_model: ClassVar[type[SourceConfig]]

    def __init__(self, config: dict[str, Any], secrets: dict[str, Any], settings: Settings) -> None:
        super().__init__(config, secrets, settings)
        self._secret_list = secret_values(secrets) + secret_values(config.get("password"))
        try:
            self.options: ConfigT = self.config_model.model_validate({**config, **secrets})  # type: ignore[assignment]
        except ValidationError as exc:
            raise invalid(validation_message(f"{self.kind} source", exc), self._secret_list) from None
        self._secret_list += secret_values(
            {k: unwrap_secrets(getattr(self.options, k, None)) for k in self.config_model.secret_fields}
        )

    # the public interface ---------------------------------------------------------------------

    def test(self) -> None:
        with self._errors():
            self._test()

    def read(self, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        if request.batch_rows < 1:
            raise InvalidInput("batch_rows must be at least 1")
        if request.table is not None and request.query is not None:
            raise InvalidInput("give a table or a query, not both")
        return self._guarded(request)

    def _guarded(self, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        with self._errors():
            yield from self._read(request)

    # for subclasses ---------------------------------------------------------------------------

    def _test(self) -> None:
        raise NotImplementedError

    def _read(self, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def _translate(self, exc: Exception) -> SelfServeError | None:
        """Map a driver exception to an InvalidInput or ServiceUnavailable; None if unknown."""
        return None

    def mask(self, text: str) -> str:
        """``text`` with this source's secrets masked."""
        return mask(text, self._secret_list)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except SelfServeError as exc:
            raise masked(exc, self._secret_list) from None
        except Exception as exc:
            translated = self._translate(exc)
            if translated is None:
                if isinstance(exc, ConnectionError | TimeoutError):
                    translated = ServiceUnavailable(f"cannot reach the {self.kind} source: {exc}")
                else:
                    translated = SelfServeError(f"{self.kind} source failed: {type(exc).__name__}: {exc}")
            error = masked(translated, self._secret_list)
            # Chain the driver's exception for the logs, unless its text holds a secret.
            cause = exc if self.mask(str(exc)) == str(exc) else None
            raise error from cause


# -- SQL identifiers -------------------------------------------------------------------------------

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


def identifier_parts(value: str, what: str = "table", *, max_parts: int = 2) -> list[str]:
    """Split ``schema.table`` into checked parts.

    Raises:
        InvalidInput: a part is not a plain identifier (letters, digits, ``_``, ``$``; 63 at most).
    """
    parts = value.split(".") if isinstance(value, str) else []
    if not parts or len(parts) > max_parts or not all(IDENTIFIER.fullmatch(p) for p in parts):
        shape = "name" if max_parts == 1 else "name or schema.name"
        raise InvalidInput(
            f"invalid {what} {str(value)[:80]!r}: expected a {shape} made of letters, digits and '_' "
            "(for anything else, use a query)"
        )
    return parts


def quote_identifier(value: str, what: str = "table", *, quote_char: str = '"', max_parts: int = 2) -> str:
    """``schema.table`` checked and quoted, e.g. ``"public"."events"`` (or with backticks)."""
    return ".".join(f"{quote_char}{p}{quote_char}" for p in identifier_parts(value, what, max_parts=max_parts))


def strip_query(query: str) -> str:
    """The query without surrounding blanks and trailing semicolons; refuse an empty one."""
    text = query.strip().rstrip(";").strip() if isinstance(query, str) else ""
    if not text:
        raise InvalidInput("the query is empty")
    return text


def select_sql(
    request: ReadRequest, *, quote_char: str, literal: Callable[[Any], str] | None = None
) -> tuple[str, list[Any]]:
    """The SELECT for a table or a wrapped user query, with the incremental filter and order.

    A user query is always wrapped as a derived table, so only a SELECT (or VALUES/WITH ... SELECT)
    is valid SQL there: ``DELETE``, ``DROP`` and a second statement are syntax errors, on top of the
    read-only session.

    Args:
        request: The read.
        quote_char: ``"`` (standard SQL) or a backtick (MySQL).
        literal: Renders the watermark as SQL text (drivers whose placeholders would clash with a
            ``%`` in the user's query); without it the watermark is a ``?`` parameter.

    Returns:
        The SQL and its parameters.
    """
    if request.query is not None:
        source = f"({strip_query(request.query)}) AS _selfserve_q"
    elif request.table:
        source = quote_identifier(request.table, quote_char=quote_char)
    else:
        raise InvalidInput("give a table or a query to read")
    sql = f"SELECT * FROM {source}"
    params: list[Any] = []
    if request.cursor_column:
        column = quote_identifier(request.cursor_column, "cursor column", quote_char=quote_char, max_parts=1)
        if request.watermark is not None:
            if literal is not None:
                sql += f" WHERE {column} > {literal(request.watermark)}"
            else:
                sql += f" WHERE {column} > ?"
                params.append(request.watermark)
        sql += f" ORDER BY {column}"
    elif request.watermark is not None:
        raise InvalidInput("a watermark needs a cursor column")
    return sql, params


# -- files -----------------------------------------------------------------------------------------


def path_in_roots(path: str, roots: Sequence[Path], what: str = "path", *, file: bool = True) -> Path:
    """Resolve ``path`` (symlinks included) and check that it lies inside one of ``roots``.

    Args:
        path: The absolute path a user gave.
        roots: The directories the admin opened (``data.file_roots``).
        what: How to name the path in messages.
        file: Require a regular file (else a directory is accepted too).

    Raises:
        InvalidInput: no roots are configured, the path is relative, outside every root, missing,
            or (with ``file``) not a regular file.
    """
    if not roots:
        raise InvalidInput("no server directory is open to file sources: an admin must allow one in data.file_roots")
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        raise InvalidInput(f"{what} {path!r} must be absolute (allowed directories: {_roots(roots)})")
    resolved = candidate.resolve(strict=False)
    if not any(resolved.is_relative_to(Path(root).expanduser().resolve()) for root in roots):
        raise InvalidInput(f"{what} {path!r} is outside the directories open to file sources ({_roots(roots)})")
    if not resolved.exists():
        raise InvalidInput(f"{what} {path!r} does not exist")
    if file and not resolved.is_file():
        raise InvalidInput(f"{what} {path!r} is not a file")
    return resolved


def _roots(roots: Sequence[Path]) -> str:
    return ", ".join(str(r) for r in roots)


# -- Arrow -----------------------------------------------------------------------------------------


def rebatch(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Regroup ``batches`` into batches of exactly ``rows`` rows (the last may be shorter); skip empty ones."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        if count == 0 and batch.num_rows == rows:
            yield batch
            continue
        pending.append(batch)
        count += batch.num_rows
        if count < rows:
            continue
        table = pa.Table.from_batches(pending)
        offset = 0
        while count - offset >= rows:
            yield _single(table.slice(offset, rows))
            offset += rows
        rest = table.slice(offset)
        pending, count = ([_single(rest)] if rest.num_rows else []), rest.num_rows
    if count:
        yield _single(pa.Table.from_batches(pending))


def _single(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    return batches[0] if len(batches) == 1 else pa.RecordBatch.from_pylist([], schema=table.schema)


def filter_after(batch: pa.RecordBatch, column: str | None, watermark: Any) -> pa.RecordBatch:
    """The rows of ``batch`` whose ``column`` is greater than ``watermark`` (all rows if either is None).

    For sources that cannot filter themselves (files, REST, streams).

    Raises:
        InvalidInput: the column is missing, or the watermark cannot be compared with it.
    """
    if column is None or watermark is None:
        return batch
    if column not in batch.schema.names:
        raise InvalidInput(f"cursor column {column!r} is not in the data (columns: {', '.join(batch.schema.names)})")
    values = batch.column(column)
    try:
        scalar = pa.scalar(watermark)
        if pa.types.is_string(values.type) and not pa.types.is_string(scalar.type):
            values = pc.cast(values, scalar.type)
        elif scalar.type != values.type:
            scalar = scalar.cast(values.type)
        keep = pc.fill_null(pc.greater(values, scalar), False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InvalidInput(
            f"cannot compare cursor column {column!r} ({batch.schema.field(column).type}) "
            f"with the watermark {str(watermark)[:80]!r}: {exc}"
        ) from None
    return batch.filter(keep)


def _json_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def infer_array(name: str, values: list[Any]) -> pa.Array:
    """An Arrow array for ``values`` with the type Arrow infers; JSON text if the values do not agree.

    A column that is all nulls becomes a string column, so later batches can still fill it.
    """
    try:
        array = pa.array(values, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, OverflowError, ValueError):
        return pa.array([_json_text(v) for v in values], pa.string())
    if pa.types.is_null(array.type):
        return pa.nulls(len(values), pa.string())
    return array


def convert_array(name: str, values: list[Any], type_: pa.DataType, what: str = "column") -> pa.Array:
    """``values`` as an Arrow array of ``type_``.

    Raises:
        InvalidInput: a value does not fit the type (the message names the column).
    """
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        values = [_json_text(v) for v in values]
    try:
        return pa.array(values, type_, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, OverflowError, ValueError) as e:
        raise InvalidInput(f"{what} {name!r}: a value does not fit the type {type_}: {e}") from None


class ColumnBatcher:
    """Builds record batches from column-wise Python values, all with the same schema.

    Types given as None are inferred from the first batch (and then fixed); later values that do
    not fit raise :class:`InvalidInput` naming the column, so no batch silently changes type.
    """

    def __init__(self, names: Sequence[str], types: Sequence[pa.DataType | None] | None = None) -> None:
        self.names = list(names)
        self._types: list[pa.DataType | None] = list(types) if types is not None else [None] * len(self.names)
        self.schema: pa.Schema | None = None

    def batch(self, columns: Sequence[list[Any]]) -> pa.RecordBatch:
        if self.schema is None:
            arrays = [
                convert_array(n, v, t) if t is not None else infer_array(n, v)
                for n, v, t in zip(self.names, columns, self._types, strict=True)
            ]
            self.schema = pa.schema([pa.field(n, a.type) for n, a in zip(self.names, arrays, strict=True)])
        else:
            arrays = [convert_array(f.name, v, f.type) for f, v in zip(self.schema, columns, strict=True)]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


class RowBatcher:
    """Builds record batches from dict rows (JSON records), all with the same schema.

    The columns are ``fields`` if given (other keys are dropped), else the keys of the first batch's
    rows in order of appearance; a key that first appears in a later batch raises InvalidInput,
    since the schema is already fixed. With ``nested_as_json``, objects and arrays become JSON text.
    """

    def __init__(
        self, fields: Sequence[str] | None = None, *, nested_as_json: bool = True, what: str = "field"
    ) -> None:
        self.fields = list(fields) if fields else None
        self.nested_as_json = nested_as_json
        self.what = what
        self._columns: ColumnBatcher | None = None
        self._seen = 0

    @property
    def schema(self) -> pa.Schema | None:
        return self._columns.schema if self._columns is not None else None

    def batch(self, rows: Sequence[dict[str, Any]]) -> pa.RecordBatch:
        if self._columns is None:
            names = self.fields or list(dict.fromkeys(k for row in rows for k in row))
            self._columns = ColumnBatcher(names)
        elif self.fields is None:
            known = set(self._columns.names)
            for row in rows:
                extra = [k for k in row if k not in known]
                if extra:
                    raise InvalidInput(
                        f"{self.what} {extra[0]!r} first appears after {self._seen} records, when the columns "
                        f"were already fixed ({', '.join(self._columns.names)}); list every field in the "
                        "`fields` option"
                    )
        columns = [[self._value(row.get(name)) for row in rows] for name in self._columns.names]
        self._seen += len(rows)
        return self._columns.batch(columns)

    def _value(self, value: Any) -> Any:
        if self.nested_as_json and isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False, default=str)
        return value


def dot_path(body: Any, path: str | None) -> tuple[bool, Any]:
    """Follow ``a.b.0.c`` into a JSON document; return (found, value)."""
    if not path:
        return True, body
    value = body
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value
