"""Drift and quality of a route's live predictions against the model's reference data, with Evidently.

:func:`current_frame` turns a window of the prediction log (``predictions-<route>``: one row per
predicted row, inputs and prediction as JSON) and the labels sent for it (``feedback-<route>``) into
one table: the live rows only (not shadow, answered without error), one column per input, the
decoded ``prediction``, and the ``label`` of the row's request where one was sent.

:func:`compute` compares that table with the reference (the training data) using Evidently's
``DataDriftPreset`` and, on the rows that have a label, scores the predictions with scikit-learn.
Evidently picks each column's test itself (for numeric columns: Kolmogorov-Smirnov p-value up to
1000 reference rows, normed Wasserstein distance above; categorical: chi-square or Z-test, then
Jensen-Shannon); the column types are inferred once, from the reference, and given to both sides,
so a window whose values happen to look different (an integer column with missing values, a
categorical column with few values) is still compared as the same kind of column.

Evidently and scikit-learn are imported inside the functions: importing Evidently alone takes
several seconds, and nothing that merely imports this module should pay for it. Nothing here keeps
state between calls, so monitors may run in threads side by side.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson
import pandas as pd
import polars as pl

from selfserve.errors import InvalidInput, SelfServeError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["LABEL", "META_COLUMNS", "PREDICTION", "DriftResult", "compute", "current_frame"]

Status = Literal["no_data", "drift", "ok"]
Task = Literal["classification", "regression"]

PREDICTION = "prediction"
LABEL = "label"
REQUEST_ID = "request_id"
META_COLUMNS = (REQUEST_ID, PREDICTION, LABEL)
"""Columns of :func:`current_frame` that are not inputs; never compared for drift."""

PREDICTIONS_REQUIRED = (REQUEST_ID, "shadow", "ok", "inputs", PREDICTION)
FEEDBACK_REQUIRED = (REQUEST_ID, LABEL)
FAIL = "FAIL"


@dataclass
class DriftResult:
    """What one comparison found.

    Attributes:
        status: ``no_data`` when the window has no live rows (neither an error nor "no drift"),
            ``drift`` when the share of drifted columns reaches the threshold, ``ok`` otherwise.
        drift_share: the share of compared columns that drifted; None for ``no_data``.
        columns: per compared column, Evidently's ``score`` (a p-value or a distance, as
            ``stattest`` says), the ``threshold`` it was held to, and whether it ``drifted``.
        rows_reference: rows in the reference.
        rows_current: live rows in the window.
        quality: accuracy, precision, recall and f1 (classification) or mae, rmse and r2
            (regression) on the rows that have a label; empty when none has.
        rows_labelled: rows that have both a label and a prediction.
        skipped: columns present on both sides that could not be compared, with the reason
            (no values on one side, or a type Evidently has no drift test for).
        html: Evidently's self-contained HTML report; empty for ``no_data``.
    """

    status: Status
    drift_share: float | None
    columns: dict[str, dict[str, Any]]
    rows_reference: int
    rows_current: int
    quality: dict[str, float] = field(default_factory=dict)
    rows_labelled: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    html: bytes = b""

    def summary(self) -> dict[str, Any]:
        """Everything but the report: small and JSON-ready, for the metadata DB."""
        return {
            "status": self.status,
            "drift_share": self.drift_share,
            "columns": self.columns,
            "rows_reference": self.rows_reference,
            "rows_current": self.rows_current,
            "quality": self.quality,
            "rows_labelled": self.rows_labelled,
            "skipped": self.skipped,
        }


# -- the current window ------------------------------------------------------------------------------


def current_frame(
    predictions: pa.Table | pd.DataFrame,
    feedback: pa.Table | pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The live rows of a prediction log window, one column per input, with prediction and label.

    Shadow rows and failed rows are dropped: shadow traffic is not what users were answered with,
    and a failed row has no prediction. The inputs are decoded column-wise by polars' JSON reader,
    which infers one type per input from all rows, so a key that only late rows carry is not lost
    (an input sent as a number in some rows and as text in others becomes text); a log whose
    inputs that reader cannot type (nested values) is decoded row by row instead.

    Labels are sent per request, not per row (``feedback-<route>`` has no row index), so every row
    of a request gets that request's label. When a request was labelled more than once, the latest
    label counts (by ``ts`` when the feedback has it, else the last one given).

    Args:
        predictions: rows of ``predictions-<route>``; needs ``request_id``, ``shadow``, ``ok``,
            ``inputs`` (a JSON object per row) and ``prediction`` (a JSON value).
        feedback: rows of ``feedback-<route>`` (``request_id``, ``label`` as JSON, optional
            ``ts``), or None when no label was sent.

    Returns:
        One row per live predicted row, in log order: the input columns, then ``request_id``,
        ``prediction`` and ``label`` (null where the request has no label).

    Raises:
        InvalidInput: a required column is missing, an input is named like one of the added
            columns, or an ``inputs`` value is not a JSON object.
    """
    log = _polars(predictions, "predictions", PREDICTIONS_REQUIRED)
    live = log.filter(pl.col("ok").fill_null(False) & ~pl.col("shadow").fill_null(True))
    if feedback is not None:
        labels = _latest_labels(_polars(feedback, "feedback", FEEDBACK_REQUIRED, optional=("ts",)))
        live = live.join(labels, on=REQUEST_ID, how="left", maintain_order="left")
    else:
        live = live.with_columns(pl.lit(None, dtype=pl.String).alias(LABEL))
    if live.height == 0:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in META_COLUMNS})

    frame = _expand_inputs(live)
    clash = [c for c in frame.columns if c in META_COLUMNS]
    if clash:
        raise InvalidInput(
            f"inputs: {', '.join(map(repr, clash))} is also the name of a column the monitor adds "
            f"({', '.join(META_COLUMNS)})",
            detail={"columns": clash},
        )
    frame[REQUEST_ID] = live.get_column(REQUEST_ID).to_pandas()
    frame[PREDICTION] = _decode_values(live.get_column(PREDICTION), PREDICTION)
    frame[LABEL] = _decode_values(live.get_column(LABEL), LABEL)
    return frame


def _polars(
    table: pa.Table | pd.DataFrame, name: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> pl.DataFrame:
    present = list(table.columns) if isinstance(table, pd.DataFrame) else table.column_names
    missing = [c for c in required if c not in present]
    if missing:
        raise InvalidInput(f"{name}: missing columns {', '.join(missing)}", detail={"missing": missing})
    # Only the needed columns: a log read back through a query may carry others, of any type.
    keep = [*required, *(c for c in optional if c in present)]
    if isinstance(table, pd.DataFrame):
        frame = pl.from_pandas(table[keep].reset_index(drop=True))
    else:
        frame = pl.DataFrame(table.select(keep))
    flags = ("shadow", "ok")
    return frame.with_columns(
        *(pl.col(c).cast(pl.String) for c in required if c not in flags),
        *(pl.col(c).cast(pl.Boolean) for c in required if c in flags),
    )


def _latest_labels(feedback: pl.DataFrame) -> pl.DataFrame:
    labelled = feedback.filter(pl.col(LABEL).is_not_null())
    if "ts" in labelled.columns:
        labelled = labelled.sort("ts", maintain_order=True, nulls_last=False)
    return labelled.unique(subset=REQUEST_ID, keep="last", maintain_order=True).select(REQUEST_ID, LABEL)


def _expand_inputs(live: pl.DataFrame) -> pd.DataFrame:
    inputs = live.get_column("inputs")
    try:
        decoded = inputs.str.json_decode(infer_schema_length=None)
    except pl.exceptions.PolarsError:
        decoded = None
    if decoded is not None and isinstance(decoded.dtype, pl.Struct):
        if not decoded.dtype.fields:  # every row is {}: no input columns, but still one row each
            return pd.DataFrame(index=pd.RangeIndex(live.height))
        return decoded.struct.unnest().to_pandas()
    return _expand_rows(inputs, live.get_column(REQUEST_ID))


def _expand_rows(inputs: pl.Series, request_ids: pl.Series) -> pd.DataFrame:
    """The slow exact path: one decode per row, for inputs the columnar reader cannot type."""
    rows: list[dict[str, Any]] = []
    for text, request_id in zip(inputs.to_list(), request_ids.to_list(), strict=True):
        try:
            value = {} if text is None else orjson.loads(text)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise InvalidInput(
                f"predictions: inputs of request {request_id!r} is not a JSON object", detail={"request_id": request_id}
            )
        rows.append(value)
    return pd.DataFrame(rows, index=pd.RangeIndex(len(rows)))


def _decode_values(values: pl.Series, name: str) -> pd.Series:
    try:
        decoded = [None if v is None else orjson.loads(v) for v in values.to_list()]
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"{name}: a value is not JSON ({e})") from None
    return pd.Series(decoded, dtype=None if decoded else object)


# -- the comparison ----------------------------------------------------------------------------------


def compute(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: list[str] | None = None,
    drift_share: float,
    label: str | None = None,
    task: Task | None = None,
) -> DriftResult:
    """Compare the current window with the reference: drift per column, and quality where labelled.

    The compared columns are the reference's columns that ``current`` has too, without the label
    and the columns :func:`current_frame` adds (request id, prediction, label); ``columns`` narrows
    them further. A window with no rows is ``no_data``, whatever else is wrong with it: an idle
    route is not an error, and must not read as "no drift" either.

    Args:
        reference: the training data: the feature columns and, usually, the label column.
        current: the window, as :func:`current_frame` returns it.
        columns: compare only these columns (each must be in the reference).
        drift_share: share of drifted columns, in (0, 1], from which the window is ``drift``.
        label: the reference's label column, left out of the comparison.
        task: how to score predictions against labels. Without it, the labels decide: numbers
            that are not all whole mean regression, anything else classification (the
            reference's label column is used for this when there is one).

    Returns:
        The result, with Evidently's HTML report.

    Raises:
        InvalidInput: the reference has no rows, no column can be compared, ``columns`` names a
            column the reference lacks, or ``drift_share`` or ``task`` is out of range.
    """
    if not 0 < drift_share <= 1:
        raise InvalidInput(f"drift_share: {drift_share} is not in (0, 1]")
    if task not in (None, "classification", "regression"):
        raise InvalidInput(f"task: {task!r} is neither 'classification' nor 'regression'")
    if len(reference) == 0:
        raise InvalidInput("reference: the dataset has no rows")
    if columns is not None:
        unknown = [c for c in columns if c not in reference.columns]
        if unknown:
            raise InvalidInput(f"columns: not in the reference: {', '.join(unknown)}", detail={"unknown": unknown})
    if len(current) == 0:
        return DriftResult("no_data", None, {}, rows_reference=len(reference), rows_current=0)

    excluded = {*META_COLUMNS, *([label] if label else [])}
    wanted = columns if columns is not None else [str(c) for c in reference.columns]
    common = [c for c in wanted if c in current.columns and c not in excluded]
    if not common:
        raise InvalidInput(
            "no column to compare: none of the reference's columns "
            f"({', '.join(map(str, wanted[:20]))}) is among the current window's inputs "
            f"({', '.join([str(c) for c in current.columns if c not in META_COLUMNS][:20])})",
        )

    ev = _evidently()
    kinds, skipped = _kinds(ev, reference, current, common)
    if not kinds:
        raise InvalidInput(
            "no column to compare: " + "; ".join(f"{c}: {why}" for c, why in skipped.items()),
            detail={"skipped": skipped},
        )
    ref, cur = _aligned(reference, current, kinds)
    by_kind = {k: [c for c, kind in kinds.items() if kind == k] for k in ("numerical", "categorical", "text")}
    definition = ev.DataDefinition(
        numerical_columns=by_kind["numerical"],
        categorical_columns=by_kind["categorical"],
        text_columns=by_kind["text"],
        datetime_columns=[],
        unknown_columns=[],
        list_columns=[],
    )
    report = ev.Report([ev.DataDriftPreset(drift_share=drift_share)], include_tests=True)
    # A category that is new in the window divides by a zero expected count inside the chi-square
    # test; the resulting p-value of 0 is the right answer, the warning is noise.
    with np.errstate(all="ignore"):
        snapshot = report.run(
            ev.Dataset.from_pandas(cur, data_definition=definition),
            ev.Dataset.from_pandas(ref, data_definition=definition),
        )
    share, per_column = _drift(snapshot.dict(), list(kinds))
    quality, labelled = _quality(current, reference, label, task)
    return DriftResult(
        status="drift" if share >= drift_share else "ok",
        drift_share=share,
        columns=per_column,
        rows_reference=len(reference),
        rows_current=len(current),
        quality=quality,
        rows_labelled=labelled,
        skipped=skipped,
        html=snapshot.get_html_str(as_iframe=False).encode("utf-8"),
    )


class _Evidently:
    """The parts of Evidently this module uses, imported on first use."""

    def __init__(self) -> None:
        import evidently
        from evidently.core.datasets import infer_column_type
        from evidently.presets import DataDriftPreset

        self.Report = evidently.Report
        self.Dataset = evidently.Dataset
        self.DataDefinition = evidently.DataDefinition
        self.ColumnType = evidently.ColumnType
        self.DataDriftPreset = DataDriftPreset
        self.infer_column_type = infer_column_type


def _evidently() -> _Evidently:
    if "evidently.presets" in sys.modules:
        return _Evidently()
    # Importing Evidently warns about Evidently's own code and its dependencies' (``numpy.core``,
    # Litestar's deprecated ``Dependency``, regular expressions in plain strings), nothing a caller
    # can act on; under warnings-as-errors it would fail outright. Filters are process-wide, so only
    # the first import sets one.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _Evidently()


def _kinds(
    ev: _Evidently, reference: pd.DataFrame, current: pd.DataFrame, common: list[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Each comparable column's kind, as Evidently would infer it from the reference; and the rest."""
    kinds: dict[str, str] = {}
    skipped: dict[str, str] = {}
    names = {
        ev.ColumnType.Numerical: "numerical",
        ev.ColumnType.Categorical: "categorical",
        ev.ColumnType.Text: "text",
    }
    for column in common:
        if reference[column].isna().all():
            skipped[column] = "no values in the reference"
            continue
        if current[column].isna().all():
            skipped[column] = "no values in the current window"
            continue
        kind = ev.infer_column_type(reference[column])
        if kind not in names:
            skipped[column] = f"{kind.value} columns have no drift test"
            continue
        kinds[column] = names[kind]
    return kinds, skipped


def _aligned(
    reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both sides restricted to the compared columns, each column of one type on both sides.

    JSON loses some types on the way through the log: an integer column with a missing value comes
    back as floats, a number sent where the training data had text comes back as a number.
    """
    ref = reference[list(kinds)]
    cur = current[list(kinds)]
    changed_ref: dict[str, pd.Series] = {}
    changed_cur: dict[str, pd.Series] = {}
    for column, kind in kinds.items():
        r, c = ref[column], cur[column]
        if r.dtype == c.dtype:
            continue
        numeric = _numeric(r) and _numeric(c)
        if kind == "numerical":
            changed_ref[column] = r.astype("float64")
            changed_cur[column] = pd.to_numeric(c, errors="coerce").astype("float64")
        elif numeric:
            changed_ref[column], changed_cur[column] = r.astype("float64"), c.astype("float64")
        else:
            changed_ref[column], changed_cur[column] = _text(r), _text(c)
    if changed_ref:
        ref = ref.assign(**changed_ref)
        cur = cur.assign(**changed_cur)
    return ref, cur


def _numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _text(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.isna(), values.astype(str))


def _drift(snapshot: dict[str, Any], compared: list[str]) -> tuple[float, dict[str, dict[str, Any]]]:
    """The share of drifted columns and the per-column findings, out of ``Snapshot.dict()``.

    Each ``ValueDrift`` metric carries the column's score and the test and threshold Evidently
    settled on; its test (there when the report includes tests) FAILs when the column drifted.
    """
    share: float | None = None
    found: dict[str, dict[str, Any]] = {}
    for metric in snapshot["metrics"]:
        config = metric["config"]
        kind = str(config.get("type", ""))
        if kind.endswith(":ValueDrift"):
            found[config["column"]] = {
                "score": float(metric["value"]),
                "stattest": str(config["method"]),
                "drifted": False,
                "threshold": float(config["threshold"]),
            }
        elif kind.endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    for test in snapshot["tests"]:
        params = test["metric_config"]["params"]
        if str(params.get("type", "")).endswith(":ValueDrift") and params["column"] in found:
            found[params["column"]]["drifted"] = test["status"] == FAIL
    if share is None or set(found) != set(compared):
        raise SelfServeError(
            f"Evidently's report lacks results: share {share}, columns {sorted(found)} of {sorted(compared)}"
        )
    return share, {c: found[c] for c in compared}


# -- quality -----------------------------------------------------------------------------------------


def _quality(
    current: pd.DataFrame, reference: pd.DataFrame, label: str | None, task: Task | None
) -> tuple[dict[str, float], int]:
    if LABEL not in current.columns or PREDICTION not in current.columns:
        return {}, 0
    rows = current.loc[current[LABEL].notna() & current[PREDICTION].notna(), [LABEL, PREDICTION]]
    if rows.empty:
        return {}, 0
    truth, predicted = rows[LABEL], rows[PREDICTION]
    for name, values in ((LABEL, truth), (PREDICTION, predicted)):
        if values.dtype == object:  # numeric and boolean columns hold scalars by construction
            odd = next((v for v in values if not isinstance(v, str | int | float)), None)
            if odd is not None:
                raise InvalidInput(f"{name}: {type(odd).__name__} values; quality needs one class or number per row")
    sample = reference[label] if label and label in reference.columns else truth
    if (task or _task(sample)) == "regression":
        return _regression(truth, predicted), len(rows)
    return _classification(truth, predicted), len(rows)


def _task(labels: pd.Series) -> Task:
    values = labels.dropna()
    if values.empty or pd.api.types.is_bool_dtype(values):
        return "classification"
    if values.dtype == object:
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return "classification"
        values = values.astype("float64")
    if not pd.api.types.is_numeric_dtype(values):
        return "classification"
    whole = np.mod(values.to_numpy(dtype="float64"), 1) == 0
    return "classification" if bool(whole.all()) else "regression"


def _regression(truth: pd.Series, predicted: pd.Series) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    y = pd.to_numeric(truth, errors="coerce")
    p = pd.to_numeric(predicted, errors="coerce")
    both = y.notna() & p.notna()
    y, p = y[both].astype("float64"), p[both].astype("float64")
    if y.empty:
        raise InvalidInput("label, prediction: no row has a number on both sides; is the task regression?")
    out = {"mae": float(mean_absolute_error(y, p)), "rmse": float(root_mean_squared_error(y, p))}
    if len(y) >= 2:  # r2 is undefined for one row
        out["r2"] = float(r2_score(y, p))
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _classification(truth: pd.Series, predicted: pd.Series) -> dict[str, float]:
    """Accuracy, and precision, recall and f1 of class 1 when the classes are 0 and 1 (or False and
    True), else their unweighted mean over the classes (macro)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    y, p = _classes(truth), _classes(predicted)
    if y.dtype == object or p.dtype == object:
        y, p = y.astype(str), p.astype(str)
    binary = set(np.unique(y).tolist()) | set(np.unique(p).tolist()) <= {0, 1}
    options: dict[str, Any] = {"average": "binary", "pos_label": 1} if binary else {"average": "macro"}
    precision, recall, f1, _ = precision_recall_fscore_support(y, p, zero_division=0, **options)
    return {
        "accuracy": float(accuracy_score(y, p)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def _classes(values: pd.Series) -> np.ndarray:
    """Whole floats as integers and booleans as 0 and 1: JSON and missing values turn class 1 into
    1.0 on one side and ``true`` into 1 on the other. Text stays text."""
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype="int64")
    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy()
    if pd.api.types.is_float_dtype(values):
        array = values.to_numpy()
        return array.astype("int64") if bool((np.mod(array, 1) == 0).all()) else array
    items = [int(v) if isinstance(v, bool) or (isinstance(v, float) and v.is_integer()) else v for v in values]
    return np.array(items, dtype=object if any(isinstance(v, str) for v in items) else None)
