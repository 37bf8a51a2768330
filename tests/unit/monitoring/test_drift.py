"""Drift and quality with Evidently, checked against scipy and scikit-learn computed here.

The first test that reaches Evidently pays for importing it (several seconds); the frames are small.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import ks_2samp, wasserstein_distance
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    root_mean_squared_error,
)

from selfserve.errors import InvalidInput
from selfserve.monitoring.drift import compute, current_frame
from selfserve.serving.predlog import FEEDBACK_SCHEMA, PREDICTIONS_SCHEMA

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _log(rows: list[dict[str, Any]]) -> pa.Table:
    """A ``predictions-<route>`` table; each row gives request_id, inputs and prediction, the rest defaults."""
    full = [
        {
            "row": 0,
            "ts": T0,
            "target": "t",
            "model": "m",
            "model_version": 1,
            "shadow": False,
            "ok": True,
            "latency_ms": 1.0,
            "error": None,
            **r,
            "inputs": json.dumps(r["inputs"]),
            "prediction": None if r.get("prediction") is None else json.dumps(r["prediction"]),
        }
        for r in rows
    ]
    return pa.Table.from_pylist(full, schema=PREDICTIONS_SCHEMA)


def _feedback(labels: list[tuple[str, Any, datetime]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"request_id": r, "label": json.dumps(v), "ts": ts} for r, v, ts in labels], schema=FEEDBACK_SCHEMA
    )


def _normal(rng: np.random.Generator, n: int, shift: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({c: rng.normal(size=n) + shift.get(c, 0.0) for c in ("a", "b", "c")})


@pytest.mark.parametrize(
    ("reference_rows", "stattest"),
    [(1000, "K-S p_value"), (2000, "Wasserstein distance (normed)")],
)
def test_flags_the_shifted_column_as_scipy_does(reference_rows: int, stattest: str) -> None:
    # Evidently picks the test by the reference's size: K-S up to 1000 rows, normed Wasserstein above.
    rng = np.random.default_rng(1)
    reference = _normal(rng, reference_rows, {})
    current = _normal(rng, 1000, {"b": 1.0})

    result = compute(reference, current, drift_share=0.3)

    expected: dict[str, tuple[float, bool]] = {}
    for c in ("a", "b", "c"):
        if stattest == "K-S p_value":
            p = float(ks_2samp(reference[c], current[c]).pvalue)
            expected[c] = (p, p <= 0.05)
        else:
            d = float(wasserstein_distance(reference[c], current[c]) / np.std(reference[c]))
            expected[c] = (d, d >= 0.1)
    ks_flagged = {c for c in ("a", "b", "c") if ks_2samp(reference[c], current[c]).pvalue < 0.05}
    assert {c for c, (_, drifted) in expected.items() if drifted} == ks_flagged == {"b"}
    for c, (score, drifted) in expected.items():
        col = result.columns[c]
        assert col["stattest"] == stattest
        assert col["threshold"] == (0.05 if stattest == "K-S p_value" else 0.1)
        assert col["score"] == pytest.approx(score, rel=1e-9, abs=1e-300)
        assert col["drifted"] is drifted
    assert result.status == "drift"
    assert result.drift_share == pytest.approx(1 / 3)
    assert (result.rows_reference, result.rows_current) == (reference_rows, 1000)
    assert result.quality == {}
    assert b"<html" in result.html[:1000].lower()

    calm = compute(reference, current, drift_share=0.5)
    assert (calm.status, calm.drift_share) == ("ok", pytest.approx(1 / 3))


def test_a_window_without_rows_is_no_data() -> None:
    reference = _normal(np.random.default_rng(0), 100, {})
    only_shadow = _log([{"request_id": "r1", "shadow": True, "inputs": {"a": 1.0}, "prediction": 1}])
    for current in (current_frame(only_shadow, None), pd.DataFrame(), reference.iloc[:0]):
        result = compute(reference, current, drift_share=0.5)
        assert result.status == "no_data"
        assert (result.drift_share, result.columns, result.quality, result.html) == (None, {}, {}, b"")
        assert (result.rows_reference, result.rows_current) == (100, 0)


def test_current_frame_expands_live_rows_and_joins_labels() -> None:
    log = _log(
        [
            {"request_id": "r1", "row": 0, "inputs": {"x": 1.5, "kind": "a", "flag": True}, "prediction": 1},
            {"request_id": "r1", "row": 1, "inputs": {"x": 2.5, "kind": "b", "flag": False}, "prediction": 0},
            {"request_id": "r2", "inputs": {"x": 3, "kind": "a"}, "prediction": 1},
            {"request_id": "r3", "shadow": True, "inputs": {"x": 9.0, "kind": "z"}, "prediction": 0},
            {"request_id": "r4", "ok": False, "inputs": {"x": 8.0, "kind": "z"}, "error": "boom"},
            {"request_id": "r5", "inputs": {"x": 4.0, "kind": "c", "flag": True}, "prediction": 0},
        ]
    )
    labels = _feedback(
        [
            ("r1", 1, T0 + timedelta(seconds=2)),
            ("r1", 0, T0 + timedelta(seconds=1)),  # older: the label sent at +2 s counts
            ("r2", 0, T0),
            ("r3", 1, T0),  # a shadow row's request: nothing to join it to
        ]
    )

    frame = current_frame(log, labels)

    assert list(frame.columns) == ["x", "kind", "flag", "request_id", "prediction", "label"]
    assert frame["request_id"].tolist() == ["r1", "r1", "r2", "r5"]
    assert frame["x"].tolist() == [1.5, 2.5, 3.0, 4.0]
    assert frame["x"].dtype == np.float64
    assert frame["kind"].tolist() == ["a", "b", "a", "c"]
    assert frame["flag"].tolist() == [True, False, None, True]
    assert frame["prediction"].tolist() == [1, 0, 1, 0]
    assert frame["label"].iloc[:3].tolist() == [1, 1, 0]  # both rows of r1 share its label
    assert pd.isna(frame["label"].iloc[3])

    # A log read back through a query comes as pandas, without labels; the label column is still there.
    unlabelled = current_frame(log.to_pandas(), None)
    assert unlabelled["request_id"].tolist() == ["r1", "r1", "r2", "r5"]
    assert unlabelled["label"].isna().all()


def test_current_frame_refuses_inputs_that_are_not_objects() -> None:
    log = _log([{"request_id": "r1", "inputs": {"x": 1}, "prediction": 1}]).to_pandas()
    log.loc[0, "inputs"] = "[1, 2]"
    with pytest.raises(InvalidInput, match="r1"):
        current_frame(log, None)
    with pytest.raises(InvalidInput, match="missing columns inputs"):
        current_frame(log.drop(columns=["inputs"]), None)


def test_classification_quality_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(size=300), "kind": rng.choice(["a", "b"], 300), "z": 1.0})
    reference["y"] = rng.integers(0, 2, 300)
    rows, labels = [], []
    for i in range(200):
        x, kind = float(rng.normal()), str(rng.choice(["a", "b"]))
        rows.append({"request_id": f"r{i}", "inputs": {"x": x, "kind": kind, "z": None}, "prediction": int(x > 0)})
        if i % 4:  # a quarter of the requests never get a label
            labels.append((f"r{i}", int(rng.random() < 0.5 + 0.3 * (x > 0)), T0))
    current = current_frame(_log(rows), _feedback(labels))

    result = compute(reference, current, drift_share=0.5, label="y")

    assert set(result.columns) == {"x", "kind"}  # y is the label; z has no value in the window
    assert result.skipped == {"z": "no values in the current window"}
    labelled = current[current["label"].notna()]
    y, p = labelled["label"].astype(int), labelled["prediction"]
    assert result.rows_labelled == len(labelled) == 150
    assert result.quality == pytest.approx(
        {
            "accuracy": accuracy_score(y, p),
            "precision": precision_score(y, p),
            "recall": recall_score(y, p),
            "f1": f1_score(y, p),
        }
    )


def test_multiclass_and_regression_quality_match_sklearn() -> None:
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"x": rng.normal(size=200)})
    current = pd.DataFrame({"x": rng.normal(size=100)})
    current["label"] = rng.choice(["cat", "dog", "eel"], 100)
    current["prediction"] = np.where(rng.random(100) < 0.6, current["label"], "dog")
    current.loc[:9, "label"] = None

    multiclass = compute(reference, current, drift_share=0.5)

    y, p = current["label"].iloc[10:], current["prediction"].iloc[10:]
    assert multiclass.quality == pytest.approx(
        {
            "accuracy": accuracy_score(y, p),
            "precision": precision_score(y, p, average="macro"),
            "recall": recall_score(y, p, average="macro"),
            "f1": f1_score(y, p, average="macro"),
        }
    )

    current["label"] = rng.normal(size=100) * 10
    current["prediction"] = current["label"] + rng.normal(size=100)
    regression = compute(reference, current, drift_share=0.5, task="regression")
    y, p = current["label"], current["prediction"]
    assert regression.rows_labelled == 100
    assert regression.quality == pytest.approx(
        {"mae": mean_absolute_error(y, p), "rmse": root_mean_squared_error(y, p), "r2": r2_score(y, p)}
    )
    # Without the task, labels that are not whole numbers mean regression.
    assert compute(reference, current, drift_share=0.5).quality == regression.quality


def test_bad_input_is_refused_before_any_work() -> None:
    reference = pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]})
    current = pd.DataFrame({"other": [1.0], "request_id": ["r"], "prediction": [1], "label": [0]})
    with pytest.raises(InvalidInput, match="reference: the dataset has no rows"):
        compute(reference.iloc[:0], current, drift_share=0.5)
    with pytest.raises(InvalidInput, match="no column to compare"):
        compute(reference, current, drift_share=0.5)
    with pytest.raises(InvalidInput, match="no column to compare"):  # the label alone is not a feature
        compute(reference, current.assign(y=[1]), drift_share=0.5, label="y")
    with pytest.raises(InvalidInput, match="drift_share"):
        compute(reference, current, drift_share=0)
    with pytest.raises(InvalidInput, match="columns: not in the reference: nope"):
        compute(reference, current, drift_share=0.5, columns=["nope"])


def test_importing_the_module_leaves_evidently_unloaded() -> None:
    code = "import sys, selfserve.monitoring.drift; print(sorted({'evidently', 'sklearn'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
