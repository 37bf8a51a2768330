"""The BentoML service every deployment runs: ``bentoml serve selfserve.serving.bento_service:Deployment``.

The serving runtime starts one such server per deployment and tells it what to serve through two
variables of its environment (read through ``selfserve.settings.inherited_environ``; they are not
settings, since each process serves one model):

- ``SELFSERVE_SERVING_MODEL_FILE``: the local path of the model, a scikit-learn model saved with skops;
- ``SELFSERVE_SERVING_INPUTS``: the model's input columns in order, JSON ``[{"name": ..., "type": ...}]``
  with MLflow's column types (``double``, ``long``, ``string``, ``boolean``, ...).

The number of worker processes is the setting ``serving.workers`` (BentoML has no flag for it).

One API, ``POST /predict`` with ``{"rows": [{column: value, ...}, ...]}``, answers
``{"predictions": [...]}`` (plain JSON values, one per row; NaN and infinities as null). Rows that lack a
column, or hold a value the column's type cannot take, are answered 422 with ``{"error": "..."}``; keys
that are not input columns are ignored. BentoML's own ``/readyz`` and ``/livez`` answer health checks.

The model is read with skops under the platform's trusted types only (``SKOPS_TRUSTED_TYPES``); of the
platform, only its settings and that list are imported here, never MLflow: the process stays small and
holds no credentials.
"""

from __future__ import annotations

import json
import math
from typing import Any

import bentoml

from selfserve.serving import INPUTS_ENV, MODEL_FILE_ENV
from selfserve.settings import get_settings, inherited_environ

_FLOATS = {"double", "float"}
_INTEGERS = {"long": "int64", "integer": "int32"}
_INTEGER_BITS = {"long": 63, "integer": 31}


class RowsError(ValueError):
    """Rows the model's signature cannot take; the message says which column and value."""


def deployment_environment() -> tuple[str, list[dict[str, str]]]:
    """The model file and input columns the runtime gave this process.

    Raises:
        RuntimeError: a variable is missing or not what the runtime writes.
    """
    env = inherited_environ()
    path, raw = env.get(MODEL_FILE_ENV, ""), env.get(INPUTS_ENV, "")
    if not path or not raw:
        raise RuntimeError(f"{MODEL_FILE_ENV} and {INPUTS_ENV} must be set: the serving runtime starts this service")
    inputs = json.loads(raw)
    if not isinstance(inputs, list) or not all(isinstance(c, dict) and c.get("name") for c in inputs):
        raise RuntimeError(f"{INPUTS_ENV} must be a JSON list of {{'name', 'type'}} columns")
    return path, [{"name": str(c["name"]), "type": str(c.get("type") or "")} for c in inputs]


def _first_bad(values: list[Any], ok: Any) -> tuple[int, Any] | None:
    return next(((i, v) for i, v in enumerate(values) if not ok(v)), None)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_CHECKS: dict[str, Any] = {
    **dict.fromkeys(_FLOATS, lambda v: v is None or _is_number(v)),
    **{
        kind: (lambda v, b=bits: _is_number(v) and float(v).is_integer() and -(2**b) <= v < 2**b)
        for kind, bits in _INTEGER_BITS.items()
    },
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: v is None or isinstance(v, str),
}


def rows_frame(rows: list[dict[str, Any]], columns: list[dict[str, str]]) -> Any:
    """The rows as a pandas DataFrame of the signature's columns, in its order and types.

    Raises:
        RowsError: a row lacks a column, or a value does not fit its column's type.
    """
    import pandas as pd

    names = [c["name"] for c in columns]
    for i, row in enumerate(rows):
        missing = [n for n in names if n not in row]
        if missing:
            raise RowsError(f"row {i} lacks the column(s) {', '.join(missing)}; the model takes: {', '.join(names)}")
    data: dict[str, Any] = {}
    for column in columns:
        name, kind = column["name"], column["type"]
        values = [row[name] for row in rows]
        check = _CHECKS.get(kind)
        bad = _first_bad(values, check) if check is not None else None
        if bad is not None:
            raise RowsError(f"row {bad[0]}: column {name!r} takes {kind} values, not {bad[1]!r}")
        if kind in _FLOATS:
            data[name] = pd.Series([math.nan if v is None else v for v in values], dtype="float64")
        elif kind in _INTEGERS:
            data[name] = pd.Series([int(v) for v in values], dtype=_INTEGERS[kind])
        elif kind == "boolean":
            data[name] = pd.Series(values, dtype="bool")
        elif kind == "datetime":
            try:
                data[name] = pd.Series(pd.to_datetime(values))
            except (ValueError, TypeError) as e:
                raise RowsError(f"column {name!r} takes date-times: {e}") from None
        else:
            data[name] = pd.Series(values, dtype="object")
    return pd.DataFrame(data, columns=names)


def plain(value: Any) -> Any:
    """A prediction as plain JSON: numpy scalars and arrays made Python values, NaN and infinities null."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@bentoml.service(
    workers=get_settings().serving.workers,
    logging={"access": {"enabled": False}},
    traffic={"timeout": get_settings().serving.predict_timeout},
)
class Deployment:
    """One model version, loaded once per worker."""

    def __init__(self) -> None:
        import skops.io

        from selfserve.ml.training import SKOPS_TRUSTED_TYPES

        path, self.columns = deployment_environment()
        self.model = skops.io.load(path, trusted=list(SKOPS_TRUSTED_TYPES))

    @bentoml.api(route="/predict")
    def predict(self, rows: list[dict[str, Any]], ctx: bentoml.Context) -> dict[str, Any]:
        """Predictions for ``rows``, one per row, in order."""
        if not rows:
            return {"predictions": []}
        try:
            frame = rows_frame(rows, self.columns)
        except RowsError as e:
            ctx.response.status_code = 422
            return {"error": str(e)}
        return {"predictions": plain(self.model.predict(frame))}
