"""Data contracts: spec parsing, every check on good and bad data, the report, and speed-independent properties."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from selfserve.data.contracts import CheckFailure, Contract, ContractReport, check
from selfserve.errors import InvalidInput

EXAMPLE = r"""
columns:
  customer_id: {type: integer, not_null: true, unique: true}
  plan: {type: string, allowed: [basic, pro, enterprise]}
  age: {type: integer, min: 0, max: 130}
  email: {type: string, regex: '^[^@\s]+@[^@\s]+$'}
  monthly_fee: {type: number, min: 0}
  signup_date: {type: date}
  updated_at: {type: timestamp}
rows: {min: 1, max: 10000000}
freshness: {column: updated_at, max_age: 24h}
"""
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def good_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": [1, 2, 3, 4],
            "plan": ["basic", "pro", "enterprise", None],
            "age": [0, 42, 130, None],
            "email": ["a@x.io", "b@y.org", None, "c@z.com"],
            "monthly_fee": [0.0, 9.5, 99.0, None],
            "signup_date": [date(2020, 1, 1), date(2021, 5, 6), None, date(2024, 5, 31)],
            "updated_at": [datetime(2024, 6, 1, 0, 0), datetime(2024, 5, 30), None, datetime(2024, 6, 1, 11, 0)],
            "extra": ["not", "in", "the", "contract"],
        }
    )


def only(report: ContractReport, name: str, column: str | None = None) -> CheckFailure:
    found = [f for f in report.failures if f.check == name and (column is None or f.column == column)]
    assert len(found) == 1, report.failures
    return found[0]


def checks_of(report: ContractReport) -> list[tuple[str, str | None]]:
    return [(f.check, f.column) for f in report.failures]


# ------------------------------------------------------------------------------------- good data


def test_the_example_passes_on_good_data() -> None:
    report = check(Contract.from_yaml(EXAMPLE), good_frame(), now=NOW)
    assert report.passed, report.failures
    assert report.failures == []
    assert report.rows == 4
    assert report.summary() == "contract passed (4 rows)"
    report.raise_if_failed()


def test_a_pyarrow_table_is_checked_like_a_polars_frame() -> None:
    contract = Contract.from_yaml(EXAMPLE)
    assert check(contract, good_frame().to_arrow(), now=NOW).passed
    bad = good_frame().with_columns(pl.col("age") + 100).to_arrow()
    assert isinstance(bad, pa.Table)
    assert checks_of(check(contract, bad, now=NOW)) == [("max", "age")]


def test_other_data_is_refused() -> None:
    with pytest.raises(TypeError, match="pyarrow.Table or a polars.DataFrame"):
        check(Contract(), [{"a": 1}], now=NOW)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ each check, bad


def run(spec: str, values: list[Any], dtype: Any = None) -> ContractReport:
    """Check one column ``c`` (plus a row number ``i``) against ``columns: {c: spec}``."""
    frame = pl.DataFrame({"i": list(range(len(values))), "c": pl.Series(values, dtype=dtype)})
    return check(Contract.from_yaml(f"columns: {{c: {spec}}}"), frame, now=NOW)


@pytest.mark.parametrize(
    ("spec", "good", "bad", "name", "failing_rows"),
    [
        ("{not_null: true}", [1, 2, 3], [1, None, 3, None], "not_null", [1, 3]),
        ("{unique: true}", [1, 2, None, None], [1, 2, 1, 3, 1, 2, None, None], "unique", [0, 1, 2, 4, 5]),
        ("{type: integer, min: 0}", [0, 5, None], [-1, 0, None, -5, 3], "min", [0, 3]),
        ("{type: integer, max: 10}", [10, -5, None], [11, 10, None, 99], "max", [0, 3]),
        ("{type: number, min: 0.5}", [0.5, 1.0, None], [0.4, 0.5, None, -3.0], "min", [0, 3]),
        ("{type: string, allowed: [a, b]}", ["a", "b", None], ["a", "c", None, "A", "b"], "allowed", [1, 3]),
        ("{type: integer, allowed: [1, 2]}", [1, 2, None], [1, 3, None, 0], "allowed", [1, 3]),
        ("{type: number, allowed: [1, 2.5]}", [1.0, 2.5, None], [1.0, 2.0, 2.5], "allowed", [1]),
        ("{type: boolean, allowed: [true]}", [True, None], [True, False, None, False], "allowed", [1, 3]),
        ("{type: string, regex: '^[a-z]+$'}", ["abc", None, "z"], ["abc", "ab1", None, "", "Q"], "regex", [1, 3, 4]),
        ("{type: string, regex: '\\d'}", ["a1", "22"], ["a1", "bb"], "regex", [1]),
        (
            "{type: date, min: 2024-01-01, max: 2024-12-31}",
            [date(2024, 1, 1), date(2024, 12, 31), None],
            [date(2023, 12, 31), date(2024, 6, 1), None],
            "min",
            [0],
        ),
        (
            "{type: date, allowed: [2024-01-01]}",
            [date(2024, 1, 1), None],
            [date(2024, 1, 1), date(2024, 1, 2)],
            "allowed",
            [1],
        ),
        (
            "{type: timestamp, max: '2024-06-01T00:00:00Z'}",
            [datetime(2024, 6, 1), None],
            [datetime(2024, 6, 1), datetime(2024, 6, 1, 0, 0, 1), None],
            "max",
            [1],
        ),
    ],
)
def test_each_check_passes_good_data_and_counts_bad_rows(
    spec: str, good: list[Any], bad: list[Any], name: str, failing_rows: list[int]
) -> None:
    assert run(spec, good).passed
    report = run(spec, bad)
    failure = only(report, name, "c")
    assert report.failures == [failure]
    assert failure.failing == len(failing_rows)
    assert failure.total == len(bad)
    assert [s["i"] for s in failure.samples] == failing_rows[:5]
    assert failure.message.startswith(f"column c: {len(failing_rows)} of {len(bad)} rows ")


def test_messages_say_what_failed() -> None:
    values = [5, -1, 200, None] * 250
    report = run("{type: integer, min: 0, max: 130}", values)
    assert [f.message for f in report.failures] == [
        "column c: 250 of 1000 rows below min 0",
        "column c: 250 of 1000 rows above max 130",
    ]
    assert run("{not_null: true}", values).failures[0].message == "column c: 250 of 1000 rows are null"
    assert run("{type: string, allowed: [x, y]}", ["x", "z"]).failures[0].message == (
        "column c: 1 of 2 rows not in allowed [x, y]"
    )
    assert run("{type: string, regex: '^x$'}", ["x", "z"]).failures[0].message == (
        "column c: 1 of 2 rows do not match regex '^x$'"
    )


def test_samples_are_at_most_five_full_rows() -> None:
    report = run("{not_null: true}", [None] * 12)
    failure = only(report, "not_null")
    assert failure.failing == 12
    assert failure.samples == [{"i": i, "c": None} for i in range(5)]


def test_unique_counts_every_row_of_a_duplicated_group_and_ignores_nulls() -> None:
    report = run("{unique: true}", ["a", "b", "a", "a", None, None, "c", "b"])
    failure = only(report, "unique")
    assert failure.failing == 5
    assert [s["c"] for s in failure.samples] == ["a", "b", "a", "a", "b"]


def test_nulls_fail_only_not_null() -> None:
    spec = "{type: string, not_null: true, unique: true, allowed: [a], regex: '^a$'}"
    assert checks_of(run(spec, ["a", None, None], dtype=pl.String)) == [("not_null", "c")]
    assert checks_of(run("{type: integer, min: 0, max: 1}", [None, None], dtype=pl.Int64)) == []
    # A column with no values at all has the Null dtype: it fits every type and fails only not_null.
    assert checks_of(run("{type: timestamp, not_null: true, min: 2024-01-01}", [None, None])) == [("not_null", "c")]


def test_nan_is_outside_every_range() -> None:
    report = run("{type: number, min: 0, max: 1}", [0.5, float("nan"), None])
    assert checks_of(report) == [("min", "c"), ("max", "c")]
    assert report.failures[0].failing == 1
    assert report.failures[0].samples == [{"i": 1, "c": "NaN"}]


def test_timestamps_are_compared_in_utc_whatever_the_zone() -> None:
    tokyo = timezone(timedelta(hours=9))
    # 2024-06-01 08:00 in Tokyo is 2024-05-31 23:00 UTC: before the bound.
    values = [datetime(2024, 6, 1, 8, 0, tzinfo=tokyo), datetime(2024, 6, 1, 10, 0, tzinfo=tokyo)]
    frame = pl.DataFrame({"t": pl.Series(values).dt.convert_time_zone("Asia/Tokyo")})
    report = check(Contract.from_yaml("columns: {t: {type: timestamp, min: '2024-06-01T00:00:00Z'}}"), frame)
    assert only(report, "min").failing == 1
    assert only(report, "min").samples == [{"t": "2024-06-01T08:00:00+09:00"}]
    # A naive column is UTC.
    naive = pl.DataFrame({"t": [datetime(2024, 5, 31, 23, 0), datetime(2024, 6, 1, 1, 0)]})
    assert (
        only(check(Contract.from_yaml("columns: {t: {type: timestamp, min: 2024-06-01}}"), naive), "min").failing == 1
    )


def test_string_checks_work_on_categorical_and_enum_columns() -> None:
    for dtype in (pl.Categorical(), pl.Enum(["a", "b", "zz"])):
        report = run("{type: string, allowed: [a, b], regex: '^.$'}", ["a", "zz", "b", None], dtype=dtype)
        assert checks_of(report) == [("allowed", "c"), ("regex", "c")]
        assert [f.failing for f in report.failures] == [1, 1]


def test_allowed_integers_work_on_small_and_unsigned_columns() -> None:
    for dtype in (pl.Int8, pl.UInt16, pl.UInt64):
        assert only(run("{type: integer, allowed: [1, 2, 1000]}", [1, 2, 3], dtype=dtype), "allowed").failing == 1


# ------------------------------------------------------------------------------------------ types


@pytest.mark.parametrize(
    ("type_", "series", "fits"),
    [
        ("integer", pl.Series([1], dtype=pl.Int8), True),
        ("integer", pl.Series([1], dtype=pl.UInt64), True),
        ("integer", pl.Series([1.0]), False),
        ("integer", pl.Series(["1"]), False),
        ("number", pl.Series([1]), True),
        ("number", pl.Series([1.0], dtype=pl.Float32), True),
        ("number", pl.Series([Decimal("1.5")], dtype=pl.Decimal(10, 2)), True),
        ("number", pl.Series([True]), False),
        ("string", pl.Series(["a"]), True),
        ("string", pl.Series(["a"], dtype=pl.Categorical()), True),
        ("string", pl.Series([1]), False),
        ("boolean", pl.Series([True]), True),
        ("boolean", pl.Series([1]), False),
        ("date", pl.Series([date(2024, 1, 1)]), True),
        ("date", pl.Series([datetime(2024, 1, 1)]), False),
        ("date", pl.Series(["2024-01-01"]), False),
        ("timestamp", pl.Series([datetime(2024, 1, 1)]), True),
        ("timestamp", pl.Series([datetime(2024, 1, 1)], dtype=pl.Datetime("ns", "America/New_York")), True),
        ("timestamp", pl.Series([date(2024, 1, 1)]), False),
        ("any", pl.Series([[1, 2]]), True),
    ],
)
def test_type_check(type_: str, series: pl.Series, fits: bool) -> None:
    report = check(Contract.from_yaml(f"columns: {{c: {{type: {type_}}}}}"), pl.DataFrame({"c": series}))
    assert report.passed is fits
    if not fits:
        failure = only(report, "type", "c")
        assert failure.message == f"column c: type {series.dtype}, expected {type_}"
        assert failure.failing == failure.total == 1


def test_a_string_column_where_an_integer_is_expected_fails_type_and_skips_value_checks() -> None:
    frame = pl.DataFrame({"age": ["12", "x", None, "12"]})
    contract = Contract.from_yaml("columns: {age: {type: integer, not_null: true, unique: true, min: 0, max: 5}}")
    report = check(contract, frame)
    # min/max would compare strings with numbers; not_null and unique do not depend on the type.
    assert checks_of(report) == [("type", "age"), ("not_null", "age"), ("unique", "age")]
    assert only(report, "type").message == "column age: type String, expected integer"
    assert only(report, "unique").failing == 2


def test_a_listed_column_missing_from_the_data_fails() -> None:
    contract = Contract.from_yaml("columns: {a: {type: integer, not_null: true}, b: {type: string}}")
    report = check(contract, pl.DataFrame({"a": [1, 2, 3]}))
    failure = only(report, "missing_column", "b")
    assert report.failures == [failure]
    assert failure.message == "column b: missing from the data"
    assert failure.failing == failure.total == 3


# ---------------------------------------------------------------------------- table-level checks


def test_unlisted_columns_are_allowed_unless_strict() -> None:
    frame = pl.DataFrame({"a": [1], "b": [2], "c": [3]})
    assert check(Contract.from_yaml("columns: {a: {type: integer}}"), frame).passed
    report = check(Contract.from_yaml("strict: true\ncolumns: {a: {type: integer}}"), frame)
    assert checks_of(report) == [("extra_column", "b"), ("extra_column", "c")]
    assert report.failures[0].message == "column b: not in the contract, which is strict"
    assert check(Contract.from_yaml("strict: true\ncolumns: {a: {}, b: {}, c: {}}"), frame).passed


@pytest.mark.parametrize(
    ("height", "expected"),
    [
        (0, [("rows_min", "table: 0 rows, fewer than min 1")]),
        (1, []),
        (3, []),
        (4, [("rows_max", "table: 4 rows, more than max 3")]),
    ],
)
def test_row_count_bounds(height: int, expected: list[tuple[str, str]]) -> None:
    report = check(Contract.from_yaml("rows: {min: 1, max: 3}"), pl.DataFrame({"a": list(range(height))}))
    assert [(f.check, f.message) for f in report.failures] == expected
    assert all(f.column is None and f.failing == f.total == height for f in report.failures)


# -------------------------------------------------------------------------------------- freshness


FRESH = "columns: {t: {type: timestamp}}\nfreshness: {column: t, max_age: 24h}"


@pytest.mark.parametrize(
    ("newest", "fresh"),
    [
        (datetime(2024, 6, 1, 12, 0), True),
        (datetime(2024, 5, 31, 12, 0), True),  # exactly max_age old
        (datetime(2024, 5, 31, 11, 59), False),
        (datetime(2024, 6, 2), True),  # in the future
    ],
)
def test_freshness_against_a_fixed_now(newest: datetime, fresh: bool) -> None:
    frame = pl.DataFrame({"t": [datetime(2020, 1, 1), newest, None]})
    report = check(Contract.from_yaml(FRESH), frame, now=NOW)
    assert report.passed is fresh
    if not fresh:
        failure = only(report, "freshness", "t")
        assert failure.message == (
            "column t: newest value 2024-05-31T11:59:00+00:00 is 1d 1m old, older than max_age 24h"
        )
        assert failure.samples == [{"t": "2024-05-31T11:59:00"}]


def test_freshness_handles_zones_a_naive_now_and_the_default_now() -> None:
    contract = Contract.from_yaml(FRESH)
    # 2024-06-01 20:00 in UTC+9 is 11:00 UTC: one hour before NOW.
    zoned = pl.DataFrame({"t": pl.Series([datetime(2024, 6, 1, 11, 0)]).dt.replace_time_zone("UTC")})
    zoned = zoned.with_columns(pl.col("t").dt.convert_time_zone("Asia/Tokyo"))
    assert check(contract, zoned, now=NOW).passed
    assert check(contract, zoned, now=NOW.replace(tzinfo=None)).passed
    assert not check(contract, zoned, now=NOW + timedelta(hours=23, minutes=1)).passed
    recent = pl.DataFrame({"t": [datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5)]})
    assert check(contract, recent).passed
    assert not check(contract, zoned).passed  # measured against the current time, years later


def test_freshness_on_a_date_column_takes_midnight_utc() -> None:
    contract = Contract.from_yaml("freshness: {column: d, max_age: 2d}")
    assert check(contract, pl.DataFrame({"d": [date(2024, 5, 31)]}), now=NOW).passed
    report = check(contract, pl.DataFrame({"d": [date(2024, 5, 29), date(2024, 5, 1)]}), now=NOW)
    assert only(report, "freshness").message == (
        "column d: newest value 2024-05-29T00:00:00+00:00 is 3d 12h old, older than max_age 2d"
    )


def test_freshness_fails_without_values_or_with_the_wrong_type() -> None:
    contract = Contract.from_yaml("freshness: {column: t, max_age: 1h}")
    for frame in (pl.DataFrame({"t": [None, None]}), pl.DataFrame({"t": pl.Series([], dtype=pl.Datetime)})):
        assert "no values" in only(check(contract, frame, now=NOW), "freshness").message
    wrong = check(contract, pl.DataFrame({"t": ["2024-06-01"]}), now=NOW)
    assert only(wrong, "freshness").message == "column t: type String, freshness needs a date or timestamp"


def test_a_missing_freshness_column_is_reported_once() -> None:
    frame = pl.DataFrame({"a": [1]})
    # Not listed under columns: the freshness check itself reports the column missing.
    assert checks_of(check(Contract.from_yaml("freshness: {column: t, max_age: 1h}"), frame)) == [
        ("missing_column", "t")
    ]
    assert checks_of(check(Contract.from_yaml(FRESH), frame)) == [("missing_column", "t")]
    assert checks_of(check(Contract.from_yaml(FRESH), pl.DataFrame({"t": [1]}))) == [("type", "t")]


# ---------------------------------------------------------------------------------------- report


def bad_frame() -> pl.DataFrame:
    return (
        good_frame()
        .with_columns(
            customer_id=pl.Series([1, 1, None, 4]),
            plan=pl.Series(["basic", "gold", None, "free"]),
            age=pl.Series([-1, 42, 131, None]),
            email=pl.Series(["a@x.io", "nope", None, "c@z.com"]),
            monthly_fee=pl.Series([0.0, -9.5, 99.0, None]),
            updated_at=pl.Series([datetime(2024, 5, 1), None, None, datetime(2024, 5, 2)]),
        )
        .drop("signup_date")
    )


def test_every_failure_is_reported_together_in_contract_order() -> None:
    report = check(Contract.from_yaml(EXAMPLE), bad_frame(), now=NOW)
    assert not report.passed
    assert [(f.check, f.column, f.failing) for f in report.failures] == [
        ("not_null", "customer_id", 1),
        ("unique", "customer_id", 2),
        ("allowed", "plan", 2),
        ("min", "age", 1),
        ("max", "age", 1),
        ("regex", "email", 1),
        ("min", "monthly_fee", 1),
        ("missing_column", "signup_date", 4),
        ("freshness", "updated_at", 4),
    ]
    assert report.summary() == (
        "contract failed (4 rows): 9 checks: not_null customer_id (1 row), unique customer_id (2 rows), "
        "allowed plan (2 rows), min age (1 row), max age (1 row), regex email (1 row), min monthly_fee (1 row), "
        "missing_column signup_date, freshness updated_at"
    )
    assert "\n" not in report.summary()


def test_raise_if_failed_lists_the_failures_with_a_json_safe_detail() -> None:
    report = check(Contract.from_yaml(EXAMPLE), bad_frame(), now=NOW)
    with pytest.raises(InvalidInput) as caught:
        report.raise_if_failed()
    error = caught.value
    assert error.message.splitlines()[0] == "contract failed: 9 checks on 4 rows"
    assert "- column age: 1 of 4 rows below min 0" in error.message.splitlines()
    assert error.detail == json.loads(json.dumps(error.detail))
    assert [d["check"] for d in error.detail] == [f.check for f in report.failures]
    assert error.detail[3]["samples"] == [
        {
            "customer_id": 1,
            "plan": "basic",
            "age": -1,
            "email": "a@x.io",
            "monthly_fee": 0.0,
            "updated_at": "2024-05-01T00:00:00",
            "extra": "not",
        }
    ]
    assert ContractReport.model_validate(report.model_dump(mode="json")) == report


def test_samples_are_json_safe_whatever_the_column_types() -> None:
    frame = pl.DataFrame(
        {
            "c": [None, None],
            "d": [date(2024, 1, 1), None],
            "ts": pl.Series([datetime(2024, 1, 1, 12, 30)])
            .dt.replace_time_zone("Europe/Paris")
            .append(pl.Series([None], dtype=pl.Datetime("us", "Europe/Paris"))),
            "dec": pl.Series([Decimal("1.25"), None], dtype=pl.Decimal(10, 2)),
            "f": [float("inf"), float("-inf")],
            "b": [b"\x00\xff", None],
            "l": [[1, 2], None],
            "s": [{"x": date(2024, 1, 2)}, None],
            "dur": [timedelta(seconds=90), None],
        }
    )
    samples = only(run_frame("{c: {not_null: true}}", frame), "not_null").samples
    assert json.loads(json.dumps(samples, allow_nan=False)) == samples
    assert samples[0] == {
        "c": None,
        "d": "2024-01-01",
        "ts": "2024-01-01T12:30:00+01:00",
        "dec": "1.25",
        "f": "Infinity",
        "b": "AP8=",
        "l": [1, 2],
        "s": {"x": "2024-01-02"},
        "dur": 90.0,
    }
    assert samples[1]["f"] == "-Infinity"


def run_frame(columns: str, frame: pl.DataFrame) -> ContractReport:
    return check(Contract.from_yaml(f"columns: {columns}"), frame, now=NOW)


# ----------------------------------------------------------------------------------- bad specs


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("columns: [", "contract is not valid YAML"),
        ("columns: {a: {type: date, min: 2024-13-01}}", "contract is not valid YAML: month must be in 1..12"),
        ("- a\n- b", "contract must be a YAML mapping, not list"),
        ("", "contract is empty"),
        ("colums: {}", "colums: unknown key (allowed: columns, rows, freshness, strict)"),
        ("columns: {a: {type: integer, mni: 0}}", "columns.a.mni: unknown key (allowed: type, not_null, unique,"),
        ("rows: {min: 1, mx: 2}", "rows.mx: unknown key (allowed: min, max)"),
        ("freshness: {column: a, max_age: 1h, zone: UTC}", "freshness.zone: unknown key (allowed: column, max_age)"),
        ("columns: {a: {type: int}}", "columns.a.type: unknown type 'int' (use integer, number, string, boolean,"),
        ("columns: {a: {type: integer, min: 5, max: 1}}", "columns.a: min 5 is greater than max 1"),
        (
            "columns: {a: {type: date, min: 2024-02-01, max: 2024-01-01}}",
            "min 2024-02-01 is greater than max 2024-01-01",
        ),
        ("rows: {min: 5, max: 1}", "rows: min 5 is greater than max 1"),
        ("rows: {min: -1}", "rows.min: Input should be greater than or equal to 0"),
        ("columns: {a: {type: string, regex: '[a-'}}", "columns.a: invalid regex '[a-': unclosed character class"),
        ("columns: {a: {type: string, regex: '(?=x)'}}", "invalid regex '(?=x)': look-around"),
        ("columns: {a: {type: integer, regex: 'x'}}", "columns.a: regex needs type string, not integer"),
        ("columns: {a: {type: string, min: a}}", "columns.a: min needs type integer, number, date or timestamp"),
        ("columns: {a: {max: 3}}", "columns.a: max needs type integer, number, date or timestamp, not any"),
        ("columns: {a: {type: integer, min: '0'}}", "columns.a: min '0' is not a number"),
        ("columns: {a: {type: integer, max: true}}", "columns.a: max True is not a number"),
        ("columns: {a: {type: date, min: yesterday}}", "columns.a: min 'yesterday' is not a date"),
        ("columns: {a: {type: timestamp, max: soon}}", "columns.a: max 'soon' is not a timestamp"),
        ("columns: {a: {type: integer, allowed: []}}", "columns.a: allowed is empty"),
        ("columns: {a: {allowed: [1]}}", "columns.a: allowed needs a column type"),
        ("columns: {a: {type: integer, allowed: [1, 2.5]}}", "columns.a: allowed value 2.5 is not an integer"),
        ("columns: {a: {type: string, allowed: [yes, no]}}", "allowed value True is not a string (quote it"),
        ("columns: {a: {not_null: 'yes'}}", "columns.a.not_null: Input should be a valid boolean"),
        ("columns: {a: null}", "columns.a: Input should be a valid dictionary"),
        ("strict: maybe", "strict: Input should be a valid boolean"),
        ("freshness: {column: a}", "freshness.max_age: required"),
        ("freshness: {column: a, max_age: 24x}", "freshness.max_age: not a duration: '24x'"),
        ("freshness: {column: a, max_age: 0s}", "freshness.max_age: max_age '0s' must be longer than zero"),
        ("freshness: {column: a, max_age: true}", "freshness.max_age: max_age True is not a duration"),
        (
            "columns: {a: {type: integer}}\nfreshness: {column: a, max_age: 1h}",
            "freshness column 'a' has type integer; it needs date or timestamp",
        ),
    ],
)
def test_bad_specs_are_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Contract.from_yaml(text)
    assert problem in caught.value.message


def test_several_spec_problems_are_named_together() -> None:
    with pytest.raises(InvalidInput) as caught:
        Contract.from_yaml("columns: {a: {type: int}, b: {nul: true}}\nrows: {min: x}")
    assert caught.value.detail == [
        "columns.a.type: unknown type 'int' (use integer, number, string, boolean, date, timestamp, any)",
        "columns.b.nul: unknown key (allowed: type, not_null, unique, min, max, allowed, regex)",
        "rows.min: Input should be a valid integer",
    ]


def test_to_yaml_reads_back_to_an_equal_contract() -> None:
    text = EXAMPLE.replace(
        "signup_date: {type: date}",
        "signup_date: {type: date, min: 2000-01-01, allowed: ['2024-01-01']}\n"
        "  seen: {type: timestamp, min: '2024-01-01T00:00:00+02:00', max: 2030-01-01 00:00:00}",
    )
    contract = Contract.from_yaml(text + "strict: true\n")
    assert contract.strict
    assert contract.columns["signup_date"].min == date(2000, 1, 1)
    assert contract.columns["signup_date"].allowed == [date(2024, 1, 1)]
    assert contract.columns["seen"].min == datetime(2023, 12, 31, 22, 0, tzinfo=UTC)
    assert contract.columns["seen"].max == datetime(2030, 1, 1, tzinfo=UTC)
    assert contract.freshness is not None and contract.freshness.max_age_seconds == 86400
    again = Contract.from_yaml(contract.to_yaml())
    assert again == contract
    assert again.to_yaml() == contract.to_yaml()
    assert list(again.columns) == list(contract.columns)
    assert "not_null: false" not in contract.to_yaml()


# ------------------------------------------------------------------------------------ properties


REFERENCE: dict[str, Any] = {
    # check -> whether one row fails it, given the row, all values and the min bound
    "not_null": lambda v, values, low: v is None,
    "unique": lambda v, values, low: v is not None and values.count(v) > 1,
    "min": lambda v, values, low: v is not None and v < low,
}


@pytest.mark.parametrize("seed", range(40))
def test_counts_and_samples_match_a_python_reference_on_random_data(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([0, 1, 2, 7, 50, 300])
    spread = rng.choice([1, 3, 20, 10_000])
    null_rate = rng.choice([0.0, 0.1, 0.5, 1.0])
    low = rng.randint(-spread, spread)
    rows = [{"i": i, "v": None if rng.random() < null_rate else rng.randint(-spread, spread)} for i in range(size)]
    frame = pl.DataFrame(rows, schema={"i": pl.Int64, "v": pl.Int64})
    contract = Contract.from_yaml(f"columns: {{v: {{type: integer, not_null: true, unique: true, min: {low}}}}}")

    report = check(contract, rng.choice([frame, frame.to_arrow()]))

    values = [r["v"] for r in rows]
    expected = {}
    for name, fails in REFERENCE.items():
        offending = [r for r in rows if fails(r["v"], values, low)]
        if offending:
            expected[name] = (len(offending), offending[:5])
    assert {f.check: (f.failing, f.samples) for f in report.failures} == expected
    assert all(f.total == size and f.column == "v" for f in report.failures)
    assert report.passed is (not expected)
