"""Training: validate a pinned dataset version, fit candidate models, log them to MLflow, register the best
as ``challenger`` and promote it to ``champion`` only when it beats the current champion on held-out rows.

The steps are plain functions so that the built-in ``train`` flow can run the candidates as parallel
tasks and tests can run everything in-process against a local MLflow store::

    plan = make_plan(frame, request, dataset_version=3)      # validate, encode, split (no MLflow)
    fitted = [fit_candidate(plan, name) for name in plan.request.candidates]   # CPU only
    result = finish(plan, fitted, project="churn")           # refit, log, register, compare, promote

:func:`train` does the three in a row. Rows are split once, with the seed: the *held-out* rows are
kept out of everything but the final challenger-versus-champion comparison; the *training* rows are
split again into *fit* and *validation* rows, on which the candidates (and any Optuna search) are
compared. The winner is then refit on all training rows and scored on the held-out rows, as is the
champion, loaded from the registry. Nothing is unpickled: models are written in skops format and
read back with skops under a fixed list of trusted types.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from selfserve.errors import InvalidInput
from selfserve.ml import experiment_name, registered_model_name
from selfserve.schemas.training import LOWER_IS_BETTER, DatasetRef, TrainRequest

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from selfserve.client import Client

Log = logging.Logger | logging.LoggerAdapter[Any]
# Called with (registered model, version, reason) to make ``version`` the champion.
Promote = Callable[[str, int, str], None]

MIN_ROWS = 20
MAX_CATEGORIES = 50
VALIDATION_SIZE = 0.25
CHAMPION, CHALLENGER = "champion", "challenger"
# What skops may rebuild when it reads a model back: scikit-learn's own estimators are trusted by
# skops already; these two are what the pipelines built here need on top. A model's own MLmodel
# file also names trusted types, but it is never believed: see load_registered.
SKOPS_TRUSTED_TYPES = ("numpy.dtype", "sklearn.tree._tree.Tree")

_log = logging.getLogger(__name__)


# -- preparing the data --------------------------------------------------------------------------


@dataclass
class Prepared:
    """Features and target, checked and normalised: numbers as float64, categories as objects."""

    X: pd.DataFrame
    y: pd.Series
    numeric: list[str]
    categorical: list[str]
    classes: list[Any] = field(default_factory=list)  # classification only, sorted
    notes: list[str] = field(default_factory=list)  # what was imputed or encoded, for the logs

    @property
    def positive(self) -> Any:
        """The class binary f1 and ROC AUC score as positive: the greater label (1, True, 'yes' > 'no')."""
        return self.classes[-1] if len(self.classes) == 2 else None


def _names(columns: Sequence[Any], limit: int = 30) -> str:
    shown = ", ".join(str(c) for c in list(columns)[:limit])
    return shown + (f" and {len(columns) - limit} more" if len(columns) > limit else "")


def _kind(s: pd.Series) -> str:
    """'numeric', 'categorical', 'decimal', or the reason the column cannot be a feature."""
    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_complex_dtype(dtype):
        return "complex"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        return "a date/time"
    inferred = pd.api.types.infer_dtype(s, skipna=True)
    if inferred in ("string", "boolean", "categorical", "empty"):
        return "categorical"
    if inferred == "decimal":
        return "decimal"
    if inferred in ("date", "datetime", "datetime64", "time", "timedelta", "period"):
        return "a date/time"
    return f"of {inferred} values"


def prepare(
    frame: pd.DataFrame,
    target: str,
    task: str,
    *,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    min_rows: int = MIN_ROWS,
    max_categories: int = MAX_CATEGORIES,
    dataset: str = "the dataset",
) -> Prepared:
    """Check ``frame`` can train a ``task`` model of ``target`` and normalise it.

    Numbers become float64 (a missing value is filled with the training median); text and booleans
    with at most ``max_categories`` distinct values are one-hot encoded (a missing value is a
    category of its own). Everything else is refused by name.

    Raises:
        InvalidInput: naming the problem: a missing target or feature column, too few rows, nulls or
            infinities in the target, one class or a class of one row, a column that cannot be
            encoded.
    """
    columns = [str(c) for c in frame.columns]
    if target not in columns:
        raise InvalidInput(f"target column {target!r} is not in {dataset}; its columns are: {_names(columns)}")
    missing = [c for c in [*(features or []), *exclude] if c not in columns]
    if missing:
        raise InvalidInput(f"column(s) {_names(missing)} not in {dataset}; its columns are: {_names(columns)}")
    chosen = list(features) if features is not None else [c for c in columns if c != target and c not in exclude]
    if not chosen:
        raise InvalidInput(f"no feature columns left in {dataset} besides the target {target!r}")
    n = len(frame)
    if n < min_rows:
        raise InvalidInput(f"{dataset} has {n} row(s); training needs at least {min_rows}")

    frame = frame.reset_index(drop=True)
    y = frame[target]
    if y.isna().any():
        raise InvalidInput(
            f"target column {target!r} has {int(y.isna().sum())} null value(s) of {n}: "
            "drop or fill them in a transform first"
        )
    notes: list[str] = []
    classes: list[Any] = []
    if task == "regression":
        if pd.api.types.is_bool_dtype(y.dtype) or not pd.api.types.is_numeric_dtype(y.dtype):
            raise InvalidInput(
                f"target column {target!r} is not numeric ({y.dtype}): a regression needs numbers; "
                "use task classification for labels"
            )
        y = y.astype("float64")
        if not np.isfinite(y.to_numpy()).all():
            raise InvalidInput(f"target column {target!r} has infinite values")
        if y.nunique() < 2:
            raise InvalidInput(f"target column {target!r} has a single value ({y.iloc[0]!r}): nothing to learn")
    else:
        if not pd.api.types.is_numeric_dtype(y.dtype):
            y = y.astype(object)
        elif getattr(y.dtype, "numpy_dtype", None) is not None:  # pandas' nullable Int64, boolean...: no nulls here
            y = y.astype(y.dtype.numpy_dtype)
        counts = y.value_counts()
        if len(counts) < 2:
            raise InvalidInput(f"target column {target!r} has one class only ({counts.index[0]!r}): nothing to learn")
        single = [c for c, k in counts.items() if k < 2]
        if single:
            hint = " (is this a regression?)" if len(counts) > n / 2 else ""
            raise InvalidInput(
                f"class(es) {_names([repr(c) for c in single], 10)} of target column {target!r} have a single row; "
                f"each class needs at least 2 (one to train on, one to hold out){hint}"
            )
        try:
            classes = sorted(counts.index.tolist())
        except TypeError:
            raise InvalidInput(f"target column {target!r} mixes label types (e.g. numbers and text)") from None

    numeric: list[str] = []
    categorical: list[str] = []
    refused: list[str] = []
    encoded: dict[str, pd.Series] = {}
    for name in chosen:
        s = frame[name]
        kind = _kind(s)
        nulls = int(s.isna().sum())
        if kind in ("numeric", "decimal"):
            values = s.astype("float64")
            if np.isinf(values.to_numpy()).any():
                refused.append(f"{name!r} has infinite values")
                continue
            if nulls == n:
                refused.append(f"{name!r} is empty (all null)")
                continue
            encoded[name] = values
            numeric.append(name)
            if nulls:
                notes.append(f"{name}: {nulls} null(s) filled with the median of the training rows")
        elif kind == "categorical":
            distinct = int(s.nunique(dropna=True))
            if distinct > max_categories:
                refused.append(
                    f"{name!r} is text with {distinct} distinct values (more than {max_categories}): "
                    "it cannot be one-hot encoded"
                )
                continue
            encoded[name] = s.astype(object).where(s.notna(), None)
            categorical.append(name)
            what = f"{name}: one-hot encoded ({distinct} value(s)"
            notes.append(what + (f"; {nulls} null(s) as a category of their own)" if nulls else ")"))
        else:
            refused.append(f"{name!r} is {kind}")
    if refused:
        raise InvalidInput(
            f"feature column(s) of {dataset} cannot be used: {'; '.join(refused)}. "
            "Exclude them (exclude / --exclude) or derive numbers from them in a transform"
        )
    X = pd.DataFrame(encoded, index=frame.index)
    return Prepared(X=X, y=y, numeric=numeric, categorical=categorical, classes=classes, notes=notes)


# -- splitting -----------------------------------------------------------------------------------


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    safe = frame.reset_index(drop=True)
    objects = [c for c in safe.columns if safe[c].dtype == object]
    if objects:  # lists, decimals, bytes...: hashed by their text, which is as stable
        safe = safe.assign(**{str(c): safe[c].astype(str) for c in objects})
    return pd.util.hash_pandas_object(safe, index=False).to_numpy()


def _ids(hashes: np.ndarray) -> np.ndarray:
    repeat = pd.Series(hashes).groupby(hashes).cumcount().to_numpy()
    return np.array([f"{h:016x}" if k == 0 else f"{h:016x}-{k}" for h, k in zip(hashes, repeat, strict=True)])


def row_ids(frame: pd.DataFrame) -> np.ndarray:
    """An id for each row made from its values, not its position: a dataset version read twice gives
    the same ids whatever order its rows come in (a Delta table's files have no fixed order). The
    k-th repeat of an identical row gets ``-k``. ``frame[np.isin(row_ids(frame), ids)]`` finds rows."""
    return _ids(_row_hashes(frame))


def canonical(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """``frame`` in an order that depends on its rows' values only (by row id), and the ids, so that
    a seeded split picks the same rows however the version was read."""
    hashes = _row_hashes(frame)
    order = np.argsort(hashes, kind="stable")
    return frame.iloc[order].reset_index(drop=True), _ids(hashes[order])


@dataclass(frozen=True)
class Split:
    """Row positions (0-based, in the canonical order of the rows: see canonical) of each part."""

    train: np.ndarray
    heldout: np.ndarray
    fit: np.ndarray
    validation: np.ndarray
    stratified: bool


def split_rows(data: Prepared, *, test_size: float, seed: int, validation_size: float = VALIDATION_SIZE) -> Split:
    """Split once into training and held-out rows, and the training rows into fit and validation rows.

    Seeded, hence repeatable; stratified by class for classification (the held-out split always,
    the validation split when every class has two training rows).
    """
    from sklearn.model_selection import train_test_split

    n = len(data.y)
    positions = np.arange(n)
    k = len(data.classes)
    if k:
        n_heldout = math.ceil(test_size * n)
        if n_heldout < k or n - n_heldout < k:
            raise InvalidInput(
                f"test_size {test_size} of {n} rows holds out {n_heldout} row(s) for {k} classes: "
                "each class needs a held-out row and a training row; add rows or change test_size"
            )
    y = data.y.to_numpy()
    train, heldout = train_test_split(positions, test_size=test_size, random_state=seed, stratify=y if k else None)
    stratify = None
    if k:
        _, counts = np.unique(y[train].astype(str), return_counts=True)
        n_valid = math.ceil(validation_size * len(train))
        if counts.min() >= 2 and k <= n_valid <= len(train) - k:
            stratify = y[train]
    fit, validation = train_test_split(train, test_size=validation_size, random_state=seed, stratify=stratify)
    return Split(
        train=np.sort(train),
        heldout=np.sort(heldout),
        fit=np.sort(fit),
        validation=np.sort(validation),
        stratified=bool(k) and stratify is not None,
    )


# -- models and metrics --------------------------------------------------------------------------

# Small, sane defaults (n_jobs=1: candidates already run side by side on few cores).
DEFAULTS: dict[str, dict[str, Any]] = {
    "rf": {"n_estimators": 100, "min_samples_leaf": 1, "n_jobs": 1},
    "gb": {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 3, "subsample": 1.0},
    "linear": {"C": 1.0, "alpha": 1.0},
}


def _search_space(trial: Any, family: str, task: str, fixed: dict[str, Any]) -> dict[str, Any]:
    """Optuna's suggestions for ``family``, leaving out the parameters fixed by the caller."""
    space: dict[str, Callable[[], Any]] = {}
    if family == "rf":
        space = {
            "n_estimators": lambda: trial.suggest_int("n_estimators", 50, 400, log=True),
            "min_samples_leaf": lambda: trial.suggest_int("min_samples_leaf", 1, 20, log=True),
            "max_features": lambda: trial.suggest_categorical("max_features", ["sqrt", "log2", 0.5, 1.0]),
        }
    elif family == "gb":
        space = {
            "n_estimators": lambda: trial.suggest_int("n_estimators", 50, 400, log=True),
            "learning_rate": lambda: trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "max_depth": lambda: trial.suggest_int("max_depth", 2, 6),
            "subsample": lambda: trial.suggest_float("subsample", 0.5, 1.0),
        }
    elif task == "classification":
        space = {"C": lambda: trial.suggest_float("C", 1e-3, 1e3, log=True)}
    else:
        space = {"alpha": lambda: trial.suggest_float("alpha", 1e-3, 1e3, log=True)}
    return {name: suggest() for name, suggest in space.items() if name not in fixed}


def _estimator(family: str, task: str, params: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge

    classify = task == "classification"
    if family == "rf":
        cls = RandomForestClassifier if classify else RandomForestRegressor
        return cls(random_state=seed, **params)
    if family == "gb":
        cls = GradientBoostingClassifier if classify else GradientBoostingRegressor
        return cls(random_state=seed, **params)
    if family == "linear":
        if classify:
            return LogisticRegression(C=params.get("C", 1.0), max_iter=params.get("max_iter", 2000))
        return Ridge(alpha=params.get("alpha", 1.0))
    raise InvalidInput(f"unknown candidate {family!r}; candidates are: rf, gb, linear")


def model_params(family: str, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that ``family`` takes, for ``task``: linear models take C or alpha, not both."""
    if family != "linear":
        return params
    drop = "alpha" if task == "classification" else "C"
    return {k: v for k, v in params.items() if k != drop}


def build_pipeline(family: str, data: Prepared, params: dict[str, Any], seed: int, task: str) -> Pipeline:
    """Imputation, encoding (and scaling for the linear family) and the estimator, as one pipeline
    that takes the feature columns as they are in the dataset."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    steps: list[Any] = [SimpleImputer(strategy="median")]
    if family == "linear":
        steps.append(StandardScaler())
    parts: list[tuple[str, Any, list[str]]] = []
    if data.numeric:
        parts.append(("numeric", Pipeline([(type(s).__name__.lower(), s) for s in steps]), data.numeric))
    if data.categorical:
        onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        parts.append(("categorical", onehot, data.categorical))
    return Pipeline(
        [
            ("prepare", ColumnTransformer(parts)),
            ("model", _estimator(family, task, model_params(family, task, params), seed)),
        ]
    )


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER


def score(model: Any, X: pd.DataFrame, y: pd.Series, task: str, classes: Sequence[Any] = ()) -> dict[str, float]:
    """Every metric of ``task`` for ``model`` on (X, y); a metric that is undefined there is NaN.

    Classification: f1 (binary, of the greater label, when two classes; macro otherwise), accuracy,
    roc_auc (of the positive class' probability; one-vs-rest macro for more classes).
    Regression: rmse, mae, r2.
    """
    from sklearn import metrics

    predicted = model.predict(X)
    if task == "regression":
        return {
            "rmse": float(metrics.root_mean_squared_error(y, predicted)),
            "mae": float(metrics.mean_absolute_error(y, predicted)),
            "r2": float(metrics.r2_score(y, predicted)) if len(y) > 1 else math.nan,
        }
    labels = list(classes) or sorted(pd.unique(y).tolist())
    if len(labels) == 2:
        f1 = metrics.f1_score(y, predicted, pos_label=labels[1], average="binary", zero_division=0)
    else:
        f1 = metrics.f1_score(y, predicted, labels=labels, average="macro", zero_division=0)
    out = {"f1": float(f1), "accuracy": float(metrics.accuracy_score(y, predicted)), "roc_auc": math.nan}
    if hasattr(model, "predict_proba") and pd.Series(y).nunique() > 1:
        proba = model.predict_proba(X)
        known = list(model.classes_)
        try:
            if len(labels) == 2:
                out["roc_auc"] = float(metrics.roc_auc_score(y == labels[1], proba[:, known.index(labels[1])]))
            elif set(pd.unique(y)) <= set(known):
                out["roc_auc"] = float(
                    metrics.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=known)
                )
        except ValueError:  # a class absent from these rows, or one the model never saw
            pass
    return out


def better(a: float, b: float, metric: str, margin: float = 0.0) -> bool:
    """Whether ``a`` beats ``b`` on ``metric`` by more than ``margin`` (NaN never beats anything)."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b - margin if lower_is_better(metric) else a > b + margin


# -- the plan, the candidates ----------------------------------------------------------------------


@dataclass
class Plan:
    """What a training run works on: the request, the checked data, and its split."""

    request: TrainRequest
    frame: pd.DataFrame  # the dataset version in canonical order (see canonical), logged as the run's input
    data: Prepared
    split: Split
    row_ids: np.ndarray  # of each row of frame: see row_ids
    dataset_version: int | None = None
    candidate_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return str(self.request.metric)

    @property
    def dataset_label(self) -> str:
        name = self.request.dataset.name
        # name@version, as everywhere in the platform (and as the registry's lineage reads MLflow inputs)
        return name if self.dataset_version is None else f"{name}@{self.dataset_version}"

    def rows(self, which: np.ndarray) -> tuple[pd.DataFrame, pd.Series]:
        return self.data.X.iloc[which], self.data.y.iloc[which]


def make_plan(
    frame: pd.DataFrame,
    request: TrainRequest | dict[str, Any],
    *,
    dataset_version: int | None = None,
    candidate_params: dict[str, dict[str, Any]] | None = None,
    min_rows: int = MIN_ROWS,
    max_categories: int = MAX_CATEGORIES,
) -> Plan:
    """Validate the request and the data, and split the rows. Needs no MLflow.

    Args:
        frame: the dataset version, as read.
        request: what to train (a TrainRequest or its dict).
        dataset_version: the version ``frame`` is, for the logs and tags.
        candidate_params: fixed parameters per family (e.g. ``{"rf": {"n_estimators": 20}}``),
            over the defaults and out of any search.
        min_rows: fewer rows are refused.
        max_categories: a text column with more distinct values is refused.
    """
    req = request if isinstance(request, TrainRequest) else TrainRequest.model_validate(request)
    version = dataset_version if dataset_version is not None else req.dataset.version
    label = f"dataset {req.dataset.name}" + (f"@{version}" if version is not None else "")
    frame, ids = canonical(frame)
    data = prepare(
        frame,
        req.target,
        req.task,
        features=req.features,
        exclude=req.exclude,
        min_rows=min_rows,
        max_categories=max_categories,
        dataset=label,
    )
    unknown = sorted(set(candidate_params or {}) - {"rf", "gb", "linear"})
    if unknown:
        raise InvalidInput(f"parameters given for unknown candidate(s) {', '.join(unknown)}")
    split = split_rows(data, test_size=req.test_size, seed=req.seed)
    return Plan(
        request=req,
        frame=frame,
        data=data,
        split=split,
        row_ids=ids,
        dataset_version=version,
        candidate_params={k: dict(v) for k, v in (candidate_params or {}).items()},
    )


@dataclass
class Fitted:
    """One candidate family after fitting (and any search) on the fit rows, scored on validation rows."""

    name: str
    params: dict[str, Any]
    validation: dict[str, float]
    fit_seconds: float
    trials: int = 0
    best_trial: int | None = None

    def summary(self, metric: str) -> str:
        tuned = f" after {self.trials} trial(s)" if self.trials else ""
        return f"{self.name}: validation {metric} {self.validation[metric]:.4f}{tuned} ({self.fit_seconds:.1f}s)"


def _objective(value: float, metric: str) -> float:
    if math.isnan(value):
        return math.inf if lower_is_better(metric) else -math.inf
    return value


def fit_candidate(plan: Plan, family: str, *, log: Log | None = None) -> Fitted:
    """Fit one candidate family on the fit rows and score it on the validation rows (CPU only, no MLflow).

    With ``tune_trials``, an Optuna search (TPE, seeded) over the family's parameters picks them by
    the validation metric; its first trial is the defaults, so the search never returns worse.
    """
    log = log or _log
    req = plan.request
    metric = plan.metric
    fixed = plan.candidate_params.get(family, {})
    base = {**DEFAULTS[family], **fixed}
    X_fit, y_fit = plan.rows(plan.split.fit)
    X_val, y_val = plan.rows(plan.split.validation)
    started = time.perf_counter()

    def evaluate(params: dict[str, Any]) -> dict[str, float]:
        model = build_pipeline(family, plan.data, params, req.seed, req.task)
        model.fit(X_fit, y_fit)
        return score(model, X_val, y_val, req.task, plan.data.classes)

    trials = req.tune_trials
    best_trial: int | None = None
    params = base
    if trials:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="minimize" if lower_is_better(metric) else "maximize",
            sampler=optuna.samplers.TPESampler(seed=req.seed),
        )
        study.enqueue_trial(
            {k: v for k, v in _default_point(family, req.task).items() if k not in fixed}, skip_if_exists=True
        )

        def objective(trial: Any) -> float:
            scores = evaluate({**base, **_search_space(trial, family, req.task, fixed)})
            trial.set_user_attr("scores", scores)
            return _objective(scores[metric], metric)

        def progress(study: Any, trial: Any) -> None:
            if (trial.number + 1) % max(1, trials // 5) == 0 or trial.number + 1 == trials:
                log.info(
                    "%s: trial %d/%d, best validation %s %.4f",
                    family,
                    trial.number + 1,
                    trials,
                    metric,
                    study.best_value,
                )

        study.optimize(objective, n_trials=trials, callbacks=[progress])
        best_trial = study.best_trial.number
        params = {**base, **study.best_params}
        validation = study.best_trial.user_attrs["scores"]
    else:
        validation = evaluate(params)
    fitted = Fitted(
        name=family,
        params=model_params(family, req.task, params),
        validation=validation,
        fit_seconds=time.perf_counter() - started,
        trials=trials,
        best_trial=best_trial,
    )
    log.info("%s", fitted.summary(metric))
    return fitted


def _default_point(family: str, task: str) -> dict[str, Any]:
    """The defaults, as a point of the search space (Optuna's first trial)."""
    if family == "rf":
        # scikit-learn's own default of max_features: all features for regression, their root otherwise
        return {"n_estimators": 100, "min_samples_leaf": 1, "max_features": 1.0 if task == "regression" else "sqrt"}
    if family == "gb":
        return {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 3, "subsample": 1.0}
    return {"C": 1.0} if task == "classification" else {"alpha": 1.0}


def select(plan: Plan, fitted: Sequence[Fitted]) -> Fitted:
    """The candidate with the best validation metric (ties: the first in the request's order)."""
    if not fitted:
        raise InvalidInput("no candidate was trained")
    best = fitted[0]
    for f in fitted[1:]:
        if better(f.validation[plan.metric], best.validation[plan.metric], plan.metric):
            best = f
    return best


def refit(plan: Plan, winner: Fitted) -> tuple[Pipeline, dict[str, float]]:
    """The winner refit on all training rows, and its metrics on the held-out rows."""
    model = build_pipeline(winner.name, plan.data, winner.params, plan.request.seed, plan.request.task)
    X_train, y_train = plan.rows(plan.split.train)
    model.fit(X_train, y_train)
    X_held, y_held = plan.rows(plan.split.heldout)
    return model, score(model, X_held, y_held, plan.request.task, plan.data.classes)


# -- the registry ----------------------------------------------------------------------------------


def pip_requirements() -> list[str]:
    """Given explicitly: MLflow otherwise infers them in a subprocess (about 10 s a model)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("scikit-learn", "skops", "numpy", "pandas", "scipy")]


def load_registered(name: str, ref: str | int) -> tuple[int, Any]:
    """A registered model version (by alias or number) read with skops under SKOPS_TRUSTED_TYPES.

    The model's own MLmodel file names the types it wants trusted; that list is ignored, so a model
    logged by hand cannot widen what is rebuilt. Anything but a skops-serialised scikit-learn model
    is refused (no pickle is ever loaded).

    Raises:
        InvalidInput: the version is not a skops scikit-learn model, or names untrusted types.
        mlflow.exceptions.MlflowException: no such model, version or alias.
    """
    import skops.io

    with _quiet_mlflow():
        import mlflow
        import mlflow.models

    client = mlflow.MlflowClient()
    mv = (
        client.get_model_version_by_alias(name, ref)
        if isinstance(ref, str)
        else client.get_model_version(name, str(ref))
    )
    version = int(mv.version)
    uri = f"models:/{name}/{version}"
    flavor = (mlflow.models.get_model_info(uri).flavors or {}).get("sklearn") or {}
    if flavor.get("serialization_format") != "skops" or not flavor.get("pickled_model"):
        raise InvalidInput(f"{name} version {version} is not a scikit-learn model saved with skops: not loaded")
    with tempfile.TemporaryDirectory(prefix="selfserve-model-") as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/{flavor['pickled_model']}", dst_path=tmp)
        untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(SKOPS_TRUSTED_TYPES))
        if untrusted:
            raise InvalidInput(f"{name} version {version} holds types that are not trusted: {', '.join(untrusted)}")
        model = skops.io.load(path, trusted=list(SKOPS_TRUSTED_TYPES))
    return version, model


def set_alias_promote(name: str, version: int, reason: str) -> None:
    """Promote in MLflow directly (outside the platform, e.g. in tests), as the platform does: the
    ``champion`` alias moves to ``version``, and ``challenger`` is dropped when it named that version."""
    import mlflow

    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, CHAMPION, str(version))
    if str(client.get_registered_model(name).aliases.get(CHALLENGER)) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, str(version), "selfserve.promoted_because", reason[:5000])


def _champion(name: str) -> tuple[int, Any] | None:
    """The current champion, or None when there is none (no model or no alias yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return load_registered(name, CHAMPION)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") and (
            "not found" in e.message or "does not exist" in e.message
        ):
            return None
        raise


# -- logging, registering, promoting ------------------------------------------------------------------


def _tags(plan: Plan, project: str, flow_run_id: str | None) -> dict[str, str]:
    tags = {
        "selfserve.project": project,
        "selfserve.dataset": plan.request.dataset.name,
        "selfserve.model": plan.request.model,
    }
    if plan.dataset_version is not None:
        tags["selfserve.dataset_version"] = str(plan.dataset_version)
    if flow_run_id:
        tags["selfserve.flow_run_id"] = flow_run_id
    return tags


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Silence two of MLflow's warnings that say nothing about this data: its type-hint notice when
    ``mlflow.pyfunc`` is first imported, and its hint on integer columns (labels and the logged
    dataset's integer columns are never missing; features are float64 already)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*Any type hint is inferred as AnyType", category=UserWarning)
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
        yield


def _metrics(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in values.items() if not math.isnan(v)}


def finish(
    plan: Plan,
    fitted: Sequence[Fitted],
    *,
    project: str,
    flow_run_id: str | None = None,
    promote: Promote | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Pick the winner, refit it, log every candidate to MLflow, register the winner as ``challenger``,
    score the champion on the same held-out rows, and promote the challenger when it is better.

    MLflow is reached as configured (the tracking URI and credentials of the environment); the
    experiment is ``<project>/<model>`` and the registered model ``<project>.<model>``.

    Args:
        promote: makes a version the champion; default: set the alias in MLflow. The train flow
            passes the platform's promotion, which keeps the history and the audit.

    Returns:
        A dict: ``version``, ``metric``, ``value`` (the challenger's held-out score),
        ``champion_before`` ({version, value} or None), ``promoted``, ``reason``, ``candidates``,
        ``heldout_ids`` (the held-out rows' :func:`row_ids`), and run and model names.
    """
    with _quiet_mlflow():
        import mlflow
        import mlflow.sklearn  # noqa: F401 - imported here, under _quiet_mlflow

    log = log or _log
    promote = promote or set_alias_promote
    req = plan.request
    metric = plan.metric
    timings: dict[str, float] = {}
    t = time.perf_counter()
    winner = select(plan, fitted)
    model, heldout = refit(plan, winner)
    timings["refit"] = time.perf_counter() - t
    log.info(
        "winner %s; refit on %d training rows: held-out %s %.4f",
        winner.name,
        len(plan.split.train),
        metric,
        heldout[metric],
    )

    name = registered_model_name(project, req.model)
    tags = _tags(plan, project, flow_run_id)
    heldout_ids = [str(i) for i in plan.row_ids[plan.split.heldout]]
    t = time.perf_counter()
    experiment = mlflow.set_experiment(experiment_name(project, req.model))
    with _quiet_mlflow():
        from mlflow.data.pandas_dataset import from_pandas

        source = from_pandas(plan.frame, name=plan.dataset_label, targets=req.target)
    X_train, _ = plan.rows(plan.split.train)
    example = X_train.head(5)
    with mlflow.start_run(run_name=f"train {req.model} on {plan.dataset_label}", tags=tags) as parent:
        mlflow.log_params(
            {
                "dataset": req.dataset.name,
                "dataset_version": plan.dataset_version,
                "target": req.target,
                "task": req.task,
                "metric": metric,
                "candidates": ",".join(req.candidates),
                "tune_trials": req.tune_trials,
                "test_size": req.test_size,
                "seed": req.seed,
                "margin": req.margin,
                "rows": len(plan.data.y),
                "features": len(plan.data.X.columns),
                "heldout_rows": len(heldout_ids),
            }
        )
        mlflow.log_input(source, context="training")
        mlflow.log_dict(
            {
                "heldout_ids": heldout_ids,
                "row_ids": "selfserve.ml.training.row_ids of the dataset version's rows",
                "notes": plan.data.notes,
                "stratified": plan.split.stratified,
            },
            "split.json",
        )
        runs: dict[str, str] = {}
        model_uri = ""
        for f in fitted:
            with mlflow.start_run(run_name=f.name, nested=True, tags={**tags, "selfserve.candidate": f.name}) as run:
                runs[f.name] = run.info.run_id
                mlflow.log_params({"candidate": f.name, **f.params, "trials": f.trials})
                mlflow.log_metrics({**_metrics("val_", f.validation), "fit_seconds": f.fit_seconds})
                mlflow.log_input(source, context="training")
                if f is winner:
                    mlflow.set_tag("selfserve.selected", "true")
                    mlflow.log_metrics(_metrics("test_", heldout))
                    model_uri = _log_model(model, example, plan)
        timings["log"] = time.perf_counter() - t
        t = time.perf_counter()
        version = _register(name, model_uri, plan, winner, heldout, tags, runs[winner.name])
        timings["register"] = time.perf_counter() - t
        log.info("registered %s version %d (%s) as %s", name, version, winner.name, CHALLENGER)

        t = time.perf_counter()
        champion_before, promoted, reason = _compare(plan, name, version, heldout[metric])
        if promoted:
            promote(name, version, reason)
        timings["compare"] = time.perf_counter() - t
        mlflow.log_metrics(
            {
                **_metrics("test_", heldout),
                **(
                    {f"champion_{metric}": champion_before["value"]}
                    if champion_before and not math.isnan(champion_before["value"])
                    else {}
                ),
                "promoted": float(promoted),
            }
        )
        mlflow.set_tags({"selfserve.challenger_version": str(version), "selfserve.promoted": str(promoted).lower()})
    log.info("%s: %s", "promoted" if promoted else "not promoted", reason)
    return {
        "model": req.model,
        "registered_model": name,
        "experiment": experiment.name,
        "run_id": parent.info.run_id,
        "dataset": req.dataset.name,
        "dataset_version": plan.dataset_version,
        "metric": metric,
        "lower_is_better": lower_is_better(metric),
        "version": version,
        "candidate": winner.name,
        "value": heldout[metric],
        "heldout": heldout,
        "champion_before": champion_before,
        "promoted": promoted,
        "reason": reason,
        "candidates": [
            {
                "name": f.name,
                "params": f.params,
                "validation": f.validation,
                "trials": f.trials,
                "fit_seconds": round(f.fit_seconds, 3),
                "run_id": runs[f.name],
                "selected": f is winner,
            }
            for f in fitted
        ],
        "heldout_ids": heldout_ids,
        "notes": plan.data.notes,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }


def _log_model(model: Any, example: pd.DataFrame, plan: Plan) -> str:
    import mlflow
    from mlflow.models import infer_signature

    X_train, _ = plan.rows(plan.split.train)
    sample = X_train.head(1000)
    with _quiet_mlflow():
        signature = infer_signature(sample, model.predict(sample))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            serialization_format="skops",
            skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
        )
    return str(info.model_uri)


def _register(
    name: str,
    model_uri: str,
    plan: Plan,
    winner: Fitted,
    heldout: dict[str, float],
    tags: dict[str, str],
    run_id: str,
) -> int:
    import mlflow

    client = mlflow.MlflowClient()
    metric = plan.metric
    mv = mlflow.register_model(
        model_uri,
        name,
        tags={
            **tags,
            "selfserve.candidate": winner.name,
            "selfserve.metric": metric,
            f"selfserve.heldout_{metric}": f"{heldout[metric]:.6g}",
            "selfserve.run_id": run_id,
        },
    )
    version = int(mv.version)
    client.update_model_version(
        name,
        str(version),
        description=f"{winner.name} trained on {plan.dataset_label}: held-out {metric} {heldout[metric]:.4f}",
    )
    client.set_registered_model_alias(name, CHALLENGER, str(version))
    return version


def _compare(plan: Plan, name: str, version: int, value: float) -> tuple[dict[str, Any] | None, bool, str]:
    """(champion before, promote?, why) for challenger ``version`` scoring ``value`` on the held-out rows."""
    metric, margin = plan.metric, plan.request.margin
    try:
        champion = _champion(name)
    except InvalidInput as e:
        return None, False, f"the champion cannot be evaluated ({e.message}); keeping it"
    if champion is None:
        return None, True, f"no champion yet: version {version} ({metric} {value:.4f}) becomes the champion"
    old_version, old_model = champion
    X_held, y_held = plan.rows(plan.split.heldout)
    try:
        old_value = score(old_model, X_held, y_held, plan.request.task, plan.data.classes)[metric]
    except Exception as e:  # noqa: BLE001 - a champion of other columns or another task cannot score these rows
        why = f"{type(e).__name__}: {str(e)[:300]}"
        return (
            {"version": old_version, "value": math.nan},
            False,
            f"the champion (version {old_version}) cannot score the held-out rows ({why}); keeping it: "
            f"promote version {version} by hand if it should replace it",
        )
    before = {"version": old_version, "value": old_value}
    if math.isnan(value):
        return before, False, f"the challenger's {metric} is undefined on the held-out rows"
    if better(value, old_value, metric, margin):
        return (
            before,
            True,
            (
                f"{metric} {value:.4f} beats the champion's (version {old_version}) {old_value:.4f} "
                f"by {abs(value - old_value):.4f}, more than the margin {margin:g}"
            ),
        )
    return (
        before,
        False,
        (
            f"{metric} {value:.4f} does not beat the champion's (version {old_version}) {old_value:.4f} "
            f"by more than the margin {margin:g} ({'lower' if lower_is_better(metric) else 'higher'} is better)"
        ),
    )


# -- all in one, and reading a dataset through the platform --------------------------------------------


def train(
    frame: pd.DataFrame,
    request: TrainRequest | dict[str, Any],
    *,
    project: str,
    dataset_version: int | None = None,
    flow_run_id: str | None = None,
    promote: Promote | None = None,
    candidate_params: dict[str, dict[str, Any]] | None = None,
    min_rows: int = MIN_ROWS,
    max_categories: int = MAX_CATEGORIES,
    log: Log | None = None,
) -> dict[str, Any]:
    """Plan, fit every candidate in turn, and finish: :func:`finish`'s result, with timings of each phase."""
    t = time.perf_counter()
    plan = make_plan(
        frame,
        request,
        dataset_version=dataset_version,
        candidate_params=candidate_params,
        min_rows=min_rows,
        max_categories=max_categories,
    )
    prepared = time.perf_counter() - t
    t = time.perf_counter()
    fitted = [fit_candidate(plan, family, log=log) for family in plan.request.candidates]
    fitting = time.perf_counter() - t
    result = finish(plan, fitted, project=project, flow_run_id=flow_run_id, promote=promote, log=log)
    result["timings"] = {"prepare": round(prepared, 3), "fit": round(fitting, 3), **result["timings"]}
    return result


def resolve_version(client: Client, project: str, ref: DatasetRef) -> int:
    """The version ``ref`` names, the latest one when it names none (so a run reads one fixed version)."""
    if ref.version is not None:
        known = {v.version for v in client.datasets.history(project, ref.name)}
        if ref.version not in known:
            raise InvalidInput(
                f"dataset {ref.name!r} has no version {ref.version}; its versions: {_names(sorted(known))}"
            )
        return ref.version
    current = client.datasets.get(project, ref.name).current_version
    if current is None:
        raise InvalidInput(f"dataset {ref.name!r} has no version yet")
    return int(current)


def load_dataset(client: Client, project: str, name: str, version: int) -> pd.DataFrame:
    """Dataset version ``version`` as a pandas frame, read through the platform (Parquet export)."""
    with tempfile.TemporaryDirectory(prefix="selfserve-train-") as tmp:
        path = client.datasets.export(project, name, Path(tmp) / "data.parquet", version=version, format="parquet")
        return pd.read_parquet(path)
