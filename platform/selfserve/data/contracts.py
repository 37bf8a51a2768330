"""Data contracts: declared checks a dataset's data must pass before it is committed.

A contract is a YAML document::

    columns:
      customer_id: {type: integer, not_null: true, unique: true}
      plan: {type: string, allowed: [basic, pro, enterprise]}
      age: {type: integer, min: 0, max: 130}
      email: {type: string, regex: '^[^@\\s]+@[^@\\s]+$'}
      signup_date: {type: date}
      updated_at: {type: timestamp}
    rows: {min: 1, max: 10000000}
    freshness: {column: updated_at, max_age: 24h}
    strict: false

:func:`check` runs every check against a table at once (vectorised with Polars) and returns a
:class:`ContractReport` that lists each failure with its count and a few offending rows.

Semantics worth knowing:

* Columns not listed are allowed unless ``strict: true``; a listed column missing from the data fails.
* Nulls fail only ``not_null``: they pass ``min``, ``max``, ``allowed``, ``regex`` and ``unique``.
* ``unique`` counts every row of a duplicated group, not just the second and later ones.
* NaN lies outside every range, so it fails both ``min`` and ``max``.
* ``regex`` uses the Rust regex syntax of Polars (no look-around or back-references) and matches
  anywhere in the value unless anchored with ``^``/``$``.
* A column whose type is wrong fails ``type`` once; its value checks (``min``, ``max``, ``allowed``,
  ``regex``) and freshness are skipped, since they would compare values of the wrong kind.
* For checks on the whole table or a whole column (``type``, ``missing_column``, ``extra_column``,
  ``rows_min``, ``rows_max``, ``freshness``) every row counts as failing: ``failing == total``.
* Naive timestamps, in the data, the contract or ``now``, are taken as UTC; a date is midnight UTC.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    computed_field,
    field_validator,
    model_validator,
)

from selfserve.errors import InvalidInput
from selfserve.settings import parse_duration

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

__all__ = ["CheckFailure", "ColumnSpec", "Contract", "ContractReport", "FreshnessSpec", "RowsSpec", "check"]

ColumnType = Literal["integer", "number", "string", "boolean", "date", "timestamp", "any"]
CheckName = Literal[
    "missing_column",
    "extra_column",
    "type",
    "not_null",
    "unique",
    "min",
    "max",
    "allowed",
    "regex",
    "rows_min",
    "rows_max",
    "freshness",
]

COLUMN_TYPES: tuple[str, ...] = ("integer", "number", "string", "boolean", "date", "timestamp", "any")
MAX_SAMPLES = 5
_RANGE_TYPES = ("integer", "number", "date", "timestamp")
_TEMPORAL_TYPES = ("date", "timestamp")


# --------------------------------------------------------------------------------------------- spec


def _utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive value is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _coerce_value(value: Any, type_: str, what: str) -> Any:
    """Check that a contract value (a bound or an allowed value) fits the column type; return it normalised.

    Raises:
        ValueError: the value does not fit; the message names ``what`` and the type.
    """
    if type_ in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{what} {value!r} is not a number")
        if isinstance(value, float) and math.isnan(value):
            raise ValueError(f"{what} may not be NaN")
        if type_ == "integer" and what == "allowed value" and not isinstance(value, int):
            raise ValueError(f"{what} {value!r} is not an integer")
        return value
    if type_ == "string":
        if not isinstance(value, str):
            hint = " (quote it: YAML reads yes/no/on/off/true/false as booleans)" if isinstance(value, bool) else ""
            raise ValueError(f"{what} {value!r} is not a string{hint}")
        return value
    if type_ == "boolean":
        if not isinstance(value, bool):
            raise ValueError(f"{what} {value!r} is not a boolean")
        return value
    if type_ == "date":
        if isinstance(value, datetime):
            raise ValueError(f"{what} {value!r} is a timestamp, not a date")
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        raise ValueError(f"{what} {value!r} is not a date (use YYYY-MM-DD)")
    if type_ == "timestamp":
        if isinstance(value, datetime):
            return _utc(value)
        if isinstance(value, date):
            return datetime.combine(value, time(), UTC)
        if isinstance(value, str):
            try:
                return _utc(datetime.fromisoformat(value))
            except ValueError:
                pass
        raise ValueError(f"{what} {value!r} is not a timestamp (use ISO 8601, e.g. 2024-01-31T12:00:00Z)")
    raise ValueError(f"{what} needs a column type other than {type_!r}")


def _check_regex(pattern: str) -> None:
    """Compile ``pattern`` with the engine that will run it.

    Raises:
        ValueError: Polars cannot compile it; the message carries the engine's reason.
    """
    import polars as pl

    try:
        pl.select(pl.lit("").str.contains(pattern))
    except pl.exceptions.PolarsError as exc:
        # The engine's message spans lines (pattern, caret, reason); keep the reason.
        lines = [line.strip() for line in str(exc).splitlines()]
        reason = next((line.removeprefix("error:").strip() for line in lines if line.startswith("error:")), lines[0])
        raise ValueError(f"invalid regex {pattern!r}: {reason}") from None


class ColumnSpec(BaseModel):
    """What one column must hold."""

    model_config = ConfigDict(extra="forbid")

    type: ColumnType = Field(
        default="any", description="integer, number (integer or float), string, boolean, date, timestamp or any."
    )
    not_null: StrictBool = Field(default=False, description="No value may be null.")
    unique: StrictBool = Field(default=False, description="No two non-null values may be equal.")
    min: Any = Field(default=None, description="Smallest value allowed (integer, number, date and timestamp columns).")
    max: Any = Field(default=None, description="Largest value allowed (integer, number, date and timestamp columns).")
    allowed: list[Any] | None = Field(default=None, description="The only values allowed; needs a type other than any.")
    regex: str | None = Field(
        default=None, description="Pattern every value must contain (string columns; Rust syntax)."
    )

    @model_validator(mode="after")
    def _values_fit_type(self) -> ColumnSpec:
        for bound in ("min", "max"):
            value = getattr(self, bound)
            if value is None:
                continue
            if self.type not in _RANGE_TYPES:
                raise ValueError(f"{bound} needs type integer, number, date or timestamp, not {self.type}")
            setattr(self, bound, _coerce_value(value, self.type, bound))
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {_fmt(self.min)} is greater than max {_fmt(self.max)}")
        if self.allowed is not None:
            if not self.allowed:
                raise ValueError("allowed is empty; list at least one value")
            if self.type == "any":
                raise ValueError("allowed needs a column type (integer, number, string, boolean, date or timestamp)")
            self.allowed = [_coerce_value(v, self.type, "allowed value") for v in self.allowed]
        if self.regex is not None:
            if self.type != "string":
                raise ValueError(f"regex needs type string, not {self.type}")
            _check_regex(self.regex)
        return self


class RowsSpec(BaseModel):
    """How many rows the table must have."""

    model_config = ConfigDict(extra="forbid")

    min: StrictInt | None = Field(default=None, ge=0, description="Fewest rows allowed.")
    max: StrictInt | None = Field(default=None, ge=0, description="Most rows allowed.")

    @model_validator(mode="after")
    def _min_not_over_max(self) -> RowsSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class FreshnessSpec(BaseModel):
    """The newest value of a date or timestamp column must be at most ``max_age`` old."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field(description="A date or timestamp column.")
    max_age: str | int | float = Field(description='Largest age allowed: "30m", "24h", "7d" or seconds.')

    @field_validator("max_age", mode="before")
    @classmethod
    def _is_duration(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"max_age {value!r} is not a duration")
        seconds = parse_duration(value)  # its ValueError names the problem
        if not seconds > 0:
            raise ValueError(f"max_age {value!r} must be longer than zero")
        return value

    @property
    def max_age_seconds(self) -> float:
        """``max_age`` in seconds."""
        return parse_duration(self.max_age)


class Contract(BaseModel):
    """A dataset's declared checks. Unknown keys are errors, so a typo never silently disables a check."""

    model_config = ConfigDict(extra="forbid")

    columns: dict[str, ColumnSpec] = Field(default_factory=dict, description="Checks per column, by name.")
    rows: RowsSpec | None = Field(default=None, description="Bounds on the number of rows.")
    freshness: FreshnessSpec | None = Field(
        default=None, description="How recent the newest value of a column must be."
    )
    strict: StrictBool = Field(default=False, description="Refuse columns the contract does not list.")

    @model_validator(mode="after")
    def _freshness_column_is_temporal(self) -> Contract:
        if self.freshness is not None:
            spec = self.columns.get(self.freshness.column)
            if spec is not None and spec.type not in (*_TEMPORAL_TYPES, "any"):
                raise ValueError(
                    f"freshness column {self.freshness.column!r} has type {spec.type}; it needs date or timestamp"
                )
        return self

    @classmethod
    def from_yaml(cls, text: str) -> Contract:
        """Parse and validate a contract.

        Args:
            text: The contract as YAML.

        Returns:
            The contract.

        Raises:
            InvalidInput: The text is not YAML, not a mapping, or not a valid contract. The message
                names each problem with its place (e.g. ``columns.age.min``); ``detail`` lists them.
        """
        try:
            raw = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError) as exc:  # PyYAML raises ValueError for dates like 2024-13-01
            raise InvalidInput(f"contract is not valid YAML: {exc}") from None
        if raw is None:
            raise InvalidInput("contract is empty; expected a mapping with columns, rows, freshness or strict")
        if not isinstance(raw, dict):
            raise InvalidInput(f"contract must be a YAML mapping, not {type(raw).__name__}")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Contract:
        """Validate a contract given as plain data (as parsed from YAML or JSON).

        Raises:
            InvalidInput: The data is not a valid contract; see :meth:`from_yaml`.
        """
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = [_describe_error(err) for err in exc.errors()]
            raise InvalidInput("invalid contract: " + "; ".join(problems), detail=problems) from None

    def to_yaml(self) -> str:
        """The contract as YAML that :meth:`from_yaml` reads back to an equal contract."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _describe_error(err: Any) -> str:
    """One pydantic error as ``place: problem``, in the contract's own words."""
    loc = ".".join(str(part) for part in err["loc"]) or "contract"
    kind = err["type"]
    if kind == "extra_forbidden":
        parent_fields = _fields_at(err["loc"][:-1])
        allowed = f" (allowed: {', '.join(parent_fields)})" if parent_fields else ""
        return f"{loc}: unknown key{allowed}"
    if kind == "literal_error" and err["loc"][-1] == "type":
        return f"{loc}: unknown type {err['input']!r} (use {', '.join(COLUMN_TYPES)})"
    if kind == "missing":
        return f"{loc}: required"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}"


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at ``loc`` in a contract document."""
    if not loc:
        return list(Contract.model_fields)
    if loc[0] == "columns" and len(loc) == 2:
        return list(ColumnSpec.model_fields)
    if loc == ("rows",):
        return list(RowsSpec.model_fields)
    if loc == ("freshness",):
        return list(FreshnessSpec.model_fields)
    return []


# ------------------------------------------------------------------------------------------- report


class CheckFailure(BaseModel):
    """One check that did not pass."""

    check: CheckName = Field(description="Which check failed.")
    column: str | None = Field(default=None, description="The column checked; None for checks on the whole table.")
    failing: int = Field(description="Rows that fail; for whole-table and whole-column checks, every row.")
    total: int = Field(description="Rows checked.")
    message: str = Field(description="What failed, for people.")
    samples: list[dict[str, Any]] = Field(
        default_factory=list, description=f"Up to {MAX_SAMPLES} offending rows, JSON-safe."
    )


class ContractReport(BaseModel):
    """The outcome of checking a table against a contract."""

    rows: int = Field(description="Rows in the table checked.")
    failures: list[CheckFailure] = Field(default_factory=list, description="Every check that failed, in order.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return not self.failures

    def summary(self) -> str:
        """One line: whether the contract passed and, if not, which checks failed and on how many rows."""
        if self.passed:
            return f"contract passed ({_rows(self.rows)})"
        parts = []
        for f in self.failures:
            name = f.check if f.column is None else f"{f.check} {f.column}"
            parts.append(name if f.check in _WHOLE_CHECKS else f"{name} ({_rows(f.failing)})")
        noun = "check" if len(self.failures) == 1 else "checks"
        return f"contract failed ({_rows(self.rows)}): {len(self.failures)} {noun}: " + ", ".join(parts)

    def raise_if_failed(self) -> None:
        """Raise if any check failed; do nothing otherwise.

        Raises:
            InvalidInput: Some check failed. The message lists each failure; ``detail`` holds the
                failures as JSON-safe dicts.
        """
        if self.passed:
            return
        lines = "\n".join(f"- {f.message}" for f in self.failures)
        noun = "check" if len(self.failures) == 1 else "checks"
        raise InvalidInput(
            f"contract failed: {len(self.failures)} {noun} on {_rows(self.rows)}\n{lines}",
            detail=[f.model_dump(mode="json") for f in self.failures],
        )


_WHOLE_CHECKS = frozenset({"type", "missing_column", "extra_column", "rows_min", "rows_max", "freshness"})


# -------------------------------------------------------------------------------------------- check


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _fmt(value: Any) -> str:
    """A contract or data value as people read it."""
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def _human_duration(seconds: float) -> str:
    """``90061`` -> ``"1d 1h"``: the two largest non-zero units, enough to judge an age."""
    rest = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        if n:
            parts.append(f"{n}{unit}")
    return " ".join(parts[:2]) or "0s"


def _json_safe(value: Any) -> Any:
    """A data value as something ``json.dumps`` accepts without loss of meaning."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)


def _fits(dtype: pl.DataType, type_: str) -> bool:
    """Whether a Polars dtype holds values of a contract type. An all-null column fits any type."""
    import polars as pl

    if type_ == "any" or dtype == pl.Null:
        return True
    if type_ == "integer":
        return dtype.is_integer()
    if type_ == "number":
        return dtype.is_numeric()
    if type_ == "string":
        return dtype in (pl.String, pl.Categorical, pl.Enum)
    if type_ == "boolean":
        return dtype == pl.Boolean
    if type_ == "date":
        return dtype == pl.Date
    if type_ == "timestamp":
        return dtype == pl.Datetime
    return False


def _values(name: str, dtype: pl.DataType, type_: str) -> pl.Expr:
    """The column as an expression comparable with the contract's values for ``type_``."""
    import polars as pl

    col = pl.col(name)
    if type_ == "string" and dtype != pl.String:
        return col.cast(pl.String)
    if type_ == "timestamp":
        tz = getattr(dtype, "time_zone", None)
        return col.dt.replace_time_zone("UTC") if tz is None else col.dt.convert_time_zone("UTC")
    return col


def _allowed_series(values: list[Any], dtype: pl.DataType, type_: str) -> pl.Series:
    """The allowed values as a Series whose dtype ``is_in`` accepts against the column."""
    import polars as pl

    if type_ == "integer":
        return pl.Series(values, dtype=pl.Int64 if not dtype.is_unsigned_integer() else pl.UInt64, strict=False)
    if type_ == "number":
        return pl.Series([float(v) for v in values], dtype=pl.Float64)
    if type_ == "timestamp":
        return pl.Series(values, dtype=pl.Datetime(getattr(dtype, "time_unit", None) or "us", "UTC"))
    return pl.Series(values, dtype={"string": pl.String, "boolean": pl.Boolean, "date": pl.Date}[type_])


@dataclass
class _RowCheck:
    """A row-level check: a boolean mask of the failing rows, and how to describe them.

    ``screen``, when given, is a cheaper expression that is zero exactly when no row fails; the mask
    is then computed only for checks that fail.
    """

    check: CheckName
    column: str
    mask: pl.Expr
    what: str
    screen: pl.Expr | None = None


def _row_checks(name: str, spec: ColumnSpec, dtype: pl.DataType, type_ok: bool) -> list[_RowCheck]:
    """The row-level checks of one present column, in the order they are reported."""
    import polars as pl

    col = pl.col(name)
    checks = []
    if spec.not_null:
        checks.append(_RowCheck("not_null", name, col.is_null(), "are null"))
    if spec.unique:
        # Counting distinct values is several times faster than marking duplicates; most data passes.
        screen = col.count() - col.drop_nulls().n_unique()
        mask = col.is_duplicated() & col.is_not_null()
        checks.append(_RowCheck("unique", name, mask, "share their value with another row", screen))
    if not type_ok or dtype == pl.Null:
        return checks
    values = _values(name, dtype, spec.type)
    nan = values.is_nan() if dtype.is_float() else pl.lit(False)
    if spec.min is not None:
        checks.append(_RowCheck("min", name, (values < pl.lit(spec.min)) | nan, f"below min {_fmt(spec.min)}"))
    if spec.max is not None:
        checks.append(_RowCheck("max", name, (values > pl.lit(spec.max)) | nan, f"above max {_fmt(spec.max)}"))
    if spec.allowed is not None:
        source = values.cast(pl.Float64) if spec.type == "number" else values
        allowed = _allowed_series(spec.allowed, dtype, spec.type)
        shown = ", ".join(_fmt(v) for v in spec.allowed)
        checks.append(_RowCheck("allowed", name, ~source.is_in(allowed.implode()), f"not in allowed [{shown}]"))
    if spec.regex is not None:
        checks.append(_RowCheck("regex", name, ~values.str.contains(spec.regex), f"do not match regex {spec.regex!r}"))
    return checks


def _samples(df: pl.DataFrame, indices: list[int]) -> list[dict[str, Any]]:
    """The rows at ``indices`` as JSON-safe dicts."""
    if not indices:
        return []
    return [{k: _json_safe(v) for k, v in row.items()} for row in df[indices].to_dicts()]


def _as_polars(data: pa.Table | pl.DataFrame) -> pl.DataFrame:
    """The data as a Polars DataFrame (zero-copy from Arrow where it can be)."""
    import polars as pl

    if isinstance(data, pl.DataFrame):
        return data
    import pyarrow as pa

    if isinstance(data, pa.Table):
        frame = pl.from_arrow(data)
        assert isinstance(frame, pl.DataFrame)  # a Table always becomes a DataFrame
        return frame
    raise TypeError(f"check() takes a pyarrow.Table or a polars.DataFrame, not {type(data).__name__}")


def check(contract: Contract, data: pa.Table | pl.DataFrame, *, now: datetime | None = None) -> ContractReport:
    """Run every check of ``contract`` against ``data``; never stop at the first failure.

    Row-level checks run together in one parallel, vectorised Polars pass; only the checks that fail
    take a second pass, for their exact counts and sample rows.

    Args:
        contract: The contract to check.
        data: The table to check.
        now: The time freshness is measured against; default the current UTC time. A naive value is UTC.

    Returns:
        The report: ``passed``, and each failure with its count and up to five offending rows.

    Raises:
        TypeError: ``data`` is neither a ``pyarrow.Table`` nor a ``polars.DataFrame``.
    """
    df = _as_polars(data)
    schema = df.schema
    total = df.height
    failures: list[CheckFailure] = []

    if contract.rows is not None:
        lo, hi = contract.rows.min, contract.rows.max
        if lo is not None and total < lo:
            failures.append(
                CheckFailure(
                    check="rows_min", failing=total, total=total, message=f"table: {total} rows, fewer than min {lo}"
                )
            )
        if hi is not None and total > hi:
            failures.append(
                CheckFailure(
                    check="rows_max", failing=total, total=total, message=f"table: {total} rows, more than max {hi}"
                )
            )

    # Column checks, in contract order: presence and type first (known from the schema alone), then
    # the row-level checks, whose masks are computed later in one pass; `slots` keeps the order.
    slots: list[CheckFailure | _RowCheck] = []
    broken: set[str] = set()
    referenced = list(contract.columns)
    if contract.freshness is not None and contract.freshness.column not in contract.columns:
        referenced.append(contract.freshness.column)
    for name in referenced:
        spec = contract.columns.get(name, ColumnSpec())
        if name not in schema:
            broken.add(name)
            slots.append(
                CheckFailure(
                    check="missing_column",
                    column=name,
                    failing=total,
                    total=total,
                    message=f"column {name}: missing from the data",
                )
            )
            continue
        dtype = schema[name]
        type_ok = _fits(dtype, spec.type)
        if not type_ok:
            broken.add(name)
            slots.append(
                CheckFailure(
                    check="type",
                    column=name,
                    failing=total,
                    total=total,
                    message=f"column {name}: type {dtype}, expected {spec.type}",
                )
            )
        slots.extend(_row_checks(name, spec, dtype, type_ok))

    # Pass 1, one parallel select: how many rows fail each check (or, for a screened check, whether any).
    # Pass 2, only for failing checks: the masks, materialised once, give the counts and first rows.
    row_checks = {i: slot for i, slot in enumerate(slots) if isinstance(slot, _RowCheck)}
    first = [
        (rc.screen if rc.screen is not None else rc.mask.fill_null(False).sum()).alias(f"c{i}")
        for i, rc in row_checks.items()
    ]
    counts: dict[str, Any] = df.select(first).row(0, named=True) if first else {}
    failed = {i: rc for i, rc in row_checks.items() if counts[f"c{i}"]}
    masks = df.select([rc.mask.fill_null(False).alias(f"m{i}") for i, rc in failed.items()])
    for i, slot in enumerate(slots):
        if isinstance(slot, CheckFailure):
            failures.append(slot)
        elif i in failed:
            mask = masks.get_column(f"m{i}")
            failing = int(mask.sum())
            failures.append(
                CheckFailure(
                    check=slot.check,
                    column=slot.column,
                    failing=failing,
                    total=total,
                    message=f"column {slot.column}: {failing} of {total} rows {slot.what}",
                    samples=_samples(df, mask.arg_true().head(MAX_SAMPLES).to_list()),
                )
            )

    if contract.strict:
        for name in schema:
            if name not in contract.columns:
                failures.append(
                    CheckFailure(
                        check="extra_column",
                        column=name,
                        failing=total,
                        total=total,
                        message=f"column {name}: not in the contract, which is strict",
                    )
                )

    if contract.freshness is not None and contract.freshness.column not in broken:
        failure = _check_freshness(df, contract.freshness, now)
        if failure is not None:
            failures.append(failure)

    return ContractReport(rows=total, failures=failures)


def _check_freshness(df: pl.DataFrame, spec: FreshnessSpec, now: datetime | None) -> CheckFailure | None:
    """The freshness failure of ``df``, or None when its newest value is recent enough."""
    import polars as pl

    name, total = spec.column, df.height
    dtype = df.schema[name]

    def fail(problem: str, samples: list[dict[str, Any]] | None = None) -> CheckFailure:
        return CheckFailure(
            check="freshness",
            column=name,
            failing=total,
            total=total,
            message=f"column {name}: {problem}",
            samples=samples or [],
        )

    if dtype not in (pl.Date, pl.Datetime, pl.Null):
        return fail(f"type {dtype}, freshness needs a date or timestamp")
    newest_at = df.select(pl.col(name).arg_max()).item() if dtype != pl.Null else None
    if newest_at is None:
        return fail(f"no values, so nothing is newer than max_age {spec.max_age}")
    newest = df[name][newest_at]
    newest_utc = _utc(newest) if isinstance(newest, datetime) else datetime.combine(newest, time(), UTC)
    age = (_utc(now) if now is not None else datetime.now(UTC)) - newest_utc
    if age.total_seconds() <= spec.max_age_seconds:
        return None
    return fail(
        f"newest value {newest_utc.isoformat()} is {_human_duration(age.total_seconds())} old, "
        f"older than max_age {spec.max_age}",
        _samples(df, [newest_at]),
    )
