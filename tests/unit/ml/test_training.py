"""The training library against a local MLflow store (SQLite, artifacts in the test's directory).

Champions are checked from the outside: loaded with ``mlflow.pyfunc`` from ``models:/<name>@champion``,
scored with scikit-learn directly on the held-out rows the result names, and compared with what
was logged. Bad inputs must fail before anything reaches MLflow.
"""

from __future__ import annotations

import math
import operator
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn import metrics
from sklearn.datasets import load_breast_cancer, load_diabetes

from selfserve.errors import InvalidInput
from selfserve.ml import training
from selfserve.schemas.training import TrainRequest
from tests.support import Platform, upload_table

with warnings.catch_warnings():
    # mlflow.pyfunc warns about its own type hints when first imported.
    warnings.simplefilter("ignore", UserWarning)
    import mlflow
    import mlflow.pyfunc
    import mlflow.sklearn

P = "churn"
SMALL = {"rf": {"n_estimators": 15}, "gb": {"n_estimators": 15}}  # fast, and still good on these data
WEAK = {"rf": {"n_estimators": 1, "max_depth": 1, "max_features": 1}}


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow database with its tables made (about 5 s), copied by each test instead of made again."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(empty_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[mlflow.MlflowClient]:
    """This test's own tracking store and registry; artifacts under its directory (./mlruns)."""
    db = tmp_path / "mlflow.db"
    shutil.copy(empty_store, db)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
    monkeypatch.setattr("mlflow.tracking._model_registry.utils._registry_uri", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    yield mlflow.MlflowClient()
    assert mlflow.active_run() is None, "a run was left open"


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    return load_breast_cancer(as_frame=True).frame


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    return load_diabetes(as_frame=True).frame


def request(**changes: Any) -> dict[str, Any]:
    base = {"dataset": "cancer", "target": "target", "task": "classification", "model": "clf"}
    return {**base, **changes}


def train(frame: pd.DataFrame, params: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    return training.train(
        frame, request(**changes), project=P, dataset_version=1, candidate_params=SMALL if params is None else params
    )


def heldout(frame: pd.DataFrame, result: dict[str, Any], target: str = "target") -> tuple[pd.DataFrame, pd.Series]:
    """The rows the result names, found by their ids in the frame as the test has it."""
    rows = frame[np.isin(training.row_ids(frame), result["heldout_ids"])]
    assert len(rows) == len(result["heldout_ids"])
    return rows.drop(columns=[target]), rows[target]


def champion_predictions(name: str, X: pd.DataFrame) -> np.ndarray:
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    return np.asarray(model.predict(X.astype("float64")))


def aliases(client: mlflow.MlflowClient, name: str) -> dict[str, int]:
    return {a: int(v) for a, v in client.get_registered_model(name).aliases.items()}


# -- a first model becomes champion; its metric holds from the outside --------------------------------------


def test_classification_champion_scores_what_was_logged(store: mlflow.MlflowClient, cancer: pd.DataFrame) -> None:
    result = train(cancer)
    assert result["promoted"] is True and result["version"] == 1 and result["champion_before"] is None
    assert result["reason"].startswith("no champion yet: version 1")
    assert aliases(store, "churn.clf") == {"champion": 1}  # a champion is no challenger any more

    X, y = heldout(cancer, result)
    assert len(y) == math.ceil(0.2 * len(cancer)) and sorted(y.unique()) == [0, 1]
    f1 = metrics.f1_score(y, champion_predictions("churn.clf", X))
    assert f1 == pytest.approx(result["value"]) and result["metric"] == "f1"

    parent = store.get_run(result["run_id"])
    assert parent.data.metrics["test_f1"] == pytest.approx(f1)
    assert parent.data.tags["selfserve.project"] == P and parent.data.tags["selfserve.dataset"] == "cancer"
    assert parent.data.tags["selfserve.dataset_version"] == "1" and parent.data.tags["selfserve.promoted"] == "true"
    assert [d.dataset.name for d in parent.inputs.dataset_inputs] == ["cancer@1"]
    split = mlflow.artifacts.load_dict(f"{parent.info.artifact_uri}/split.json")
    assert split["heldout_ids"] == result["heldout_ids"] and split["stratified"] is True

    children = store.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result['run_id']}'"
    )
    assert sorted(r.data.tags["selfserve.candidate"] for r in children) == ["gb", "linear", "rf"]
    assert {c["name"]: c["run_id"] for c in result["candidates"]} == {
        r.data.tags["selfserve.candidate"]: r.info.run_id for r in children
    }
    assert all("val_f1" in r.data.metrics and "val_roc_auc" in r.data.metrics for r in children)
    (selected,) = [r for r in children if r.data.tags.get("selfserve.selected") == "true"]
    assert selected.data.tags["selfserve.candidate"] == result["candidate"]
    assert selected.data.metrics["test_f1"] == pytest.approx(f1)
    assert store.get_experiment(parent.info.experiment_id).name == "churn/clf"

    version = store.get_model_version("churn.clf", "1")
    assert version.run_id == selected.info.run_id
    assert version.tags["selfserve.dataset"] == "cancer" and version.tags["selfserve.candidate"] == result["candidate"]
    flavor = mlflow.models.get_model_info("models:/churn.clf/1").flavors["sklearn"]
    assert flavor["serialization_format"] == "skops"


def test_regression_champion_scores_what_was_logged(store: mlflow.MlflowClient, diabetes: pd.DataFrame) -> None:
    result = train(diabetes, task="regression", model="reg", dataset="diabetes@1", test_size=0.25, seed=7)
    assert result["metric"] == "rmse" and result["lower_is_better"] is True and result["promoted"] is True
    X, y = heldout(diabetes, result)
    assert len(y) == math.ceil(0.25 * len(diabetes))
    rmse = metrics.root_mean_squared_error(y, champion_predictions("churn.reg", X))
    assert rmse == pytest.approx(result["value"])
    assert store.get_run(result["run_id"]).data.metrics["test_rmse"] == pytest.approx(rmse)
    assert set(result["heldout"]) == {"rmse", "mae", "r2"}
    assert all(set(c["validation"]) == {"rmse", "mae", "r2"} for c in result["candidates"])
    # the winner is the candidate with the lowest validation rmse
    best = min(result["candidates"], key=lambda c: c["validation"]["rmse"])
    assert best["name"] == result["candidate"] and best["selected"]


# -- challengers that lose, and one that wins ----------------------------------------------------------


def test_only_a_better_challenger_replaces_the_champion(store: mlflow.MlflowClient, cancer: pd.DataFrame) -> None:
    weak = train(cancer, WEAK, candidates=["rf"])
    assert weak["promoted"] is True and weak["value"] < 0.95

    strong = train(cancer, candidates=["linear"])
    assert strong["promoted"] is True and strong["version"] == 2
    assert strong["champion_before"] == {"version": 1, "value": pytest.approx(weak["value"])}
    assert strong["reason"].startswith(f"f1 {strong['value']:.4f} beats the champion's (version 1)")
    assert aliases(store, "churn.clf") == {"champion": 2}

    worse = train(cancer, WEAK, candidates=["rf"])
    assert worse["promoted"] is False and worse["version"] == 3
    assert "does not beat the champion's (version 2)" in worse["reason"]
    assert worse["champion_before"]["value"] == pytest.approx(strong["value"])
    assert aliases(store, "churn.clf") == {"champion": 2, "challenger": 3}
    X, y = heldout(cancer, worse)
    assert metrics.f1_score(y, champion_predictions("churn.clf", X)) == pytest.approx(strong["value"])
    assert store.get_run(worse["run_id"]).data.metrics == {
        "test_f1": pytest.approx(worse["value"]),
        "test_accuracy": pytest.approx(worse["heldout"]["accuracy"]),
        "test_roc_auc": pytest.approx(worse["heldout"]["roc_auc"]),
        "champion_f1": pytest.approx(strong["value"]),
        "promoted": 0.0,
    }

    # As good again (same data, seed and model: the same score) is not better; a margin asks for more still.
    tie = train(cancer, candidates=["linear"])
    assert tie["promoted"] is False and tie["value"] == pytest.approx(strong["value"])
    assert "by more than the margin 0 (higher is better)" in tie["reason"]
    assert aliases(store, "churn.clf")["champion"] == 2


def test_the_margin_is_direction_aware(store: mlflow.MlflowClient, diabetes: pd.DataFrame) -> None:
    weak = train(diabetes, WEAK, task="regression", model="reg", candidates=["rf"])
    strong = train(diabetes, task="regression", model="reg", candidates=["linear"], margin=1000.0)
    assert strong["value"] < weak["value"]  # lower rmse: better, but not by 1000
    assert strong["promoted"] is False and "by more than the margin 1000 (lower is better)" in strong["reason"]
    better = train(diabetes, task="regression", model="reg", candidates=["linear"], margin=1.0)
    assert better["promoted"] is True and aliases(store, "churn.reg") == {"champion": 3}


@pytest.mark.parametrize(
    ("a", "b", "metric", "margin", "wins"),
    [
        (0.9, 0.8, "f1", 0.0, True),
        (0.8, 0.8, "f1", 0.0, False),
        (0.85, 0.8, "f1", 0.1, False),
        (10.0, 12.0, "rmse", 0.0, True),
        (12.0, 10.0, "rmse", 0.0, False),
        (10.0, 12.0, "mae", 2.0, False),
        (0.5, 0.4, "r2", 0.0, True),
        (math.nan, 0.4, "roc_auc", 0.0, False),
        (0.4, math.nan, "roc_auc", 0.0, True),
    ],
)
def test_better(a: float, b: float, metric: str, margin: float, wins: bool) -> None:
    assert training.better(a, b, metric, margin) is wins


def test_a_champion_that_cannot_score_the_new_columns_stays(store: mlflow.MlflowClient, cancer: pd.DataFrame) -> None:
    train(cancer, candidates=["linear"])
    result = train(cancer, candidates=["linear"], exclude=["mean radius"])
    assert result["promoted"] is False and result["champion_before"]["version"] == 1
    assert "the champion (version 1) cannot score the held-out rows" in result["reason"]
    assert "mean radius" in result["reason"] and "promote version 2 by hand" in result["reason"]
    assert aliases(store, "churn.clf") == {"champion": 1, "challenger": 2}


# -- nothing is unpickled, not even what the registry holds ----------------------------------------------


def test_a_champion_saved_with_pickle_is_never_loaded(store: mlflow.MlflowClient, cancer: pd.DataFrame) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = cancer.drop(columns=["target"]), cancer["target"]
    mlflow.set_experiment("churn/by-hand")
    with warnings.catch_warnings(), mlflow.start_run():
        warnings.simplefilter("ignore")  # MLflow's own warning about pickle
        info = mlflow.sklearn.log_model(
            LogisticRegression(max_iter=5000).fit(X, y),
            name="model",
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
        )
    mlflow.register_model(info.model_uri, "churn.clf")
    store.set_registered_model_alias("churn.clf", "champion", "1")

    with pytest.raises(InvalidInput, match="churn.clf version 1 is not a scikit-learn model saved with skops"):
        training.load_registered("churn.clf", "champion")
    result = train(cancer, candidates=["linear"])
    assert result["promoted"] is False and result["champion_before"] is None
    assert "the champion cannot be evaluated (churn.clf version 1 is not a scikit-learn model" in result["reason"]
    assert aliases(store, "churn.clf")["champion"] == 1


def test_trusted_types_named_by_the_model_itself_are_not_believed(
    store: mlflow.MlflowClient, cancer: pd.DataFrame
) -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    from sklearn.svm import LinearSVC

    X, y = cancer.drop(columns=["target"]), cancer["target"]
    model = make_pipeline(FunctionTransformer(operator.neg), StandardScaler(), LinearSVC()).fit(X, y)
    mlflow.set_experiment("churn/by-hand")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", skops_trusted_types=["_operator.neg"], pip_requirements=["scikit-learn"]
        )
    mlflow.register_model(info.model_uri, "churn.odd")
    with pytest.raises(InvalidInput, match="churn.odd version 1 holds types that are not trusted: _operator.neg"):
        training.load_registered("churn.odd", 1)


# -- bad inputs: a clear error, nothing logged or registered ----------------------------------------------


def _frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "tenure": rng.integers(1, 60, n),
            "fee": rng.normal(50, 10, n),
            "plan": rng.choice(["basic", "standard", "premium"], n),
            "churned": rng.integers(0, 2, n),
        }
    )


def _with(frame: pd.DataFrame, **columns: Any) -> pd.DataFrame:
    return frame.assign(**columns)


BAD = [
    pytest.param(
        _frame(),
        {"target": "churn"},
        "target column 'churn' is not in dataset customers@1; its columns are: tenure, fee, plan, churned",
        id="target-missing",
    ),
    pytest.param(
        _with(_frame(), note=[f"free text {i}" for i in range(60)]),
        {},
        "feature column(s) of dataset customers@1 cannot be used: 'note' is text with 60 distinct values "
        "(more than 50): it cannot be one-hot encoded. Exclude them",
        id="free-text",
    ),
    pytest.param(
        _with(_frame(), signup=pd.date_range("2024-01-01", periods=60), tags=[[1]] * 60),
        {},
        "cannot be used: 'signup' is a date/time; 'tags' is of mixed values",
        id="date-and-lists",
    ),
    pytest.param(_frame(12), {}, "dataset customers@1 has 12 row(s); training needs at least 20", id="too-few-rows"),
    pytest.param(
        _with(_frame(), churned=[0] * 30 + [1] * 29 + [2]),
        {},
        "class(es) 2 of target column 'churned' have a single row; each class needs at least 2",
        id="single-sample-class",
    ),
    pytest.param(
        _with(_frame(), churned="no"), {}, "target column 'churned' has one class only ('no')", id="one-class"
    ),
    pytest.param(
        _with(_frame(), churned=[0.0, None] * 30),
        {},
        "target column 'churned' has 30 null value(s) of 60: drop or fill them",
        id="null-target",
    ),
    pytest.param(
        _with(_frame(), churned=["yes", "no"] * 30),
        {"task": "regression"},
        "target column 'churned' is not numeric (object): a regression needs numbers",
        id="text-target-regression",
    ),
    pytest.param(_frame(), {"features": ["fee", "nope"]}, "column(s) nope not in dataset customers@1", id="feature"),
    pytest.param(
        _with(_frame(), churned=[0, 1, 2, 3, 4] * 12),
        {"test_size": 0.05},
        "test_size 0.05 of 60 rows holds out 3 row(s) for 5 classes: each class needs a held-out row",
        id="too-few-heldout",
    ),
]


@pytest.mark.parametrize(("frame", "changes", "message"), BAD)
def test_bad_inputs_are_refused_before_anything_is_logged(
    store: mlflow.MlflowClient, frame: pd.DataFrame, changes: dict[str, Any], message: str
) -> None:
    changes = {"dataset": "customers", "target": "churned", **changes}
    with pytest.raises(InvalidInput) as caught:
        training.train(frame, request(**changes), project=P, dataset_version=1, candidate_params=SMALL)
    assert message in caught.value.message
    assert store.search_registered_models() == []
    assert [e.name for e in store.search_experiments()] == ["Default"]


def test_features_are_imputed_and_encoded_as_said(store: mlflow.MlflowClient) -> None:
    frame = _frame(80)
    frame["fee"] = frame["fee"].where(frame.index % 7 != 0)  # 12 nulls
    frame["plan"] = frame["plan"].where(frame.index % 9 != 0)  # 9 nulls
    frame["paperless"] = pd.array([True, False, None, True] * 20, dtype="boolean")
    frame["customer_id"] = range(80)
    result = training.train(
        frame,
        request(target="churned", model="imputed", exclude=["customer_id"]),
        project=P,
        dataset_version=4,
        candidate_params=SMALL,
    )
    assert result["notes"] == [
        "fee: 12 null(s) filled with the median of the training rows",
        "plan: one-hot encoded (3 value(s); 9 null(s) as a category of their own)",
        "paperless: one-hot encoded (2 value(s); 20 null(s) as a category of their own)",
    ]
    champion = mlflow.pyfunc.load_model("models:/churn.imputed@champion")
    assert [c.name for c in champion.metadata.get_input_schema().inputs] == ["tenure", "fee", "plan", "paperless"]
    rows = frame.drop(columns=["churned", "customer_id"]).head(3).astype({"tenure": "float64"})
    rows["paperless"] = rows["paperless"].astype(object).where(rows["paperless"].notna(), None)
    assert len(champion.predict(rows)) == 3


# -- splits and searches are repeatable -----------------------------------------------------------------


def test_splits_are_seeded_stratified_and_disjoint(cancer: pd.DataFrame) -> None:
    one = training.make_plan(cancer, request(), dataset_version=1)
    two = training.make_plan(cancer, request(), dataset_version=1)
    other = training.make_plan(cancer, request(seed=1), dataset_version=1)
    assert np.array_equal(one.split.heldout, two.split.heldout)
    assert not np.array_equal(one.split.heldout, other.split.heldout)
    s = one.split
    assert set(s.train).isdisjoint(s.heldout) and set(s.fit).isdisjoint(s.validation)
    assert sorted([*s.train, *s.heldout]) == list(range(len(cancer)))
    assert sorted([*s.fit, *s.validation]) == sorted(s.train)
    share = cancer["target"].mean()
    assert one.data.y.iloc[s.heldout].mean() == pytest.approx(share, abs=0.01)


def test_the_rows_held_out_do_not_depend_on_the_order_they_are_read_in(cancer: pd.DataFrame) -> None:
    shuffled = cancer.sample(frac=1.0, random_state=3)
    doubled = pd.concat([cancer, cancer.head(5)])  # repeated rows get ids of their own
    plans = [training.make_plan(f, request(), dataset_version=1) for f in (cancer, shuffled)]
    one, two = (set(p.row_ids[p.split.heldout]) for p in plans)
    assert one == two and len(one) == 114
    ids = training.row_ids(doubled)
    assert len(set(ids)) == len(doubled) and sum("-" in i for i in ids) == 5
    assert np.array_equal(np.sort(training.row_ids(shuffled)), np.sort(training.row_ids(cancer)))


def test_an_optuna_search_is_repeatable_and_starts_from_the_defaults(cancer: pd.DataFrame) -> None:
    fixed = {"gb": {"n_estimators": 10}}
    plan = training.make_plan(cancer, request(tune_trials=4), dataset_version=1, candidate_params=fixed)
    first = training.fit_candidate(plan, "gb")
    again = training.fit_candidate(plan, "gb")
    assert first.trials == 4 and first.params == again.params and first.validation == again.validation
    assert first.params["n_estimators"] == 10  # fixed: not searched
    defaults = training.fit_candidate(
        training.make_plan(cancer, request(), dataset_version=1, candidate_params=fixed), "gb"
    )
    assert first.validation["f1"] >= defaults.validation["f1"]


def test_the_request_is_checked() -> None:
    assert TrainRequest.model_validate(request()).metric == "f1"
    assert TrainRequest.model_validate(request(task="regression")).metric == "rmse"
    assert TrainRequest.model_validate(request(dataset="cancer@3")).dataset.version == 3
    for changes, message in [
        ({"metric": "rmse"}, "metric 'rmse' is not one of classification's: f1, accuracy, roc_auc"),
        ({"candidates": ["rf", "rf"]}, "each candidate may be named once"),
        ({"candidates": ["xgb"]}, "Input should be 'rf', 'gb' or 'linear'"),
        ({"dataset": "cancer@latest"}, "invalid dataset reference 'cancer@latest'"),
        ({"model": "My_Model"}, "invalid name 'My_Model'"),
        ({"tune_trials": 201}, "less than or equal to 200"),
        ({"margin": -0.1}, "greater than or equal to 0"),
        ({"exclude": ["target"]}, "the target 'target' is also excluded"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            TrainRequest.model_validate(request(**changes))


# -- reading a pinned version through the platform ---------------------------------------------------------


def test_the_latest_version_is_pinned_and_read(sqlite_platform: Platform, tmp_path: Path) -> None:
    alice = sqlite_platform.user("alice")
    alice.projects.create(P)
    upload_table(alice, P, "customers", pa.table({"x": [1, 2], "y": [0, 1]}), tmp_path)
    upload_table(alice, P, "customers", pa.table({"x": [3], "y": [1]}), tmp_path)
    ref = TrainRequest.model_validate(request(dataset="customers", target="y")).dataset
    assert training.resolve_version(alice, P, ref) == 1
    assert sorted(training.load_dataset(alice, P, "customers", 1)["x"]) == [1, 2, 3]  # in no fixed order
    assert sorted(training.load_dataset(alice, P, "customers", 0)["x"]) == [1, 2]
    with pytest.raises(InvalidInput, match="dataset 'customers' has no version 7; its versions: 0, 1"):
        training.resolve_version(alice, P, ref.model_copy(update={"version": 7}))


def test_the_demo_model_trains_on_the_demo_features(store: mlflow.MlflowClient) -> None:
    """What `selfserve up` seeds: the demo's train request on its feature dataset makes a champion
    that beats always answering "churned" on the held-out customers."""
    import duckdb

    from selfserve.runtime.demo import DATA, FEATURES_SQL, TRAIN_REQUEST

    con = duckdb.connect()
    con.execute("create table customers as select * from read_csv(?)", [str(DATA / "customers.csv")])
    frame = con.execute(FEATURES_SQL).df()
    result = training.train(frame, TRAIN_REQUEST, project="demo", dataset_version=0, candidate_params=SMALL)
    assert result["promoted"] is True and result["metric"] == "f1"
    X, y = heldout(frame, result, target="churned")
    model = mlflow.pyfunc.load_model("models:/demo.churn@champion")
    assert "customer_id" not in model.metadata.get_input_schema().input_names()
    X = X.drop(columns=["customer_id"])
    numbers = X.select_dtypes("number").columns
    X[numbers] = X[numbers].astype("float64")  # the signature declares every number a double
    f1 = metrics.f1_score(y, np.asarray(model.predict(X)))
    assert f1 == pytest.approx(result["value"])
    assert f1 > metrics.f1_score(y, np.ones_like(y))
