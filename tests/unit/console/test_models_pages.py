"""The console's Experiments and Models pages, run in-process with Streamlit's AppTest against a live API.

The unit suite runs without an MLflow server (models are off), so the first tests read the API's real 503. The
others swap the SDK client's ``experiments`` and ``models`` for :class:`FakeRegistry`, a small stand-in for the
platform's MLflow registry that returns the SDK's real schema objects; login, projects and roles still come from
the live API. The real registry behind these pages is driven in ``tests/browser/test_models_page.py`` and
``tests/integration/ml/test_registry.py``.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from selfserve.errors import Conflict, NotFound, SelfServeError
from selfserve.schemas.models import (
    DatasetRef,
    ExperimentPublic,
    ExperimentRun,
    LineageCode,
    LineageRun,
    ModelDetail,
    ModelLineage,
    ModelPublic,
    ModelVersionPublic,
    ModelVersionRef,
    PromotionAction,
    PromotionPublic,
    RunComparison,
)
from tests.unit.console.test_app import (  # noqa: F401  (api_url and start_app are fixtures)
    PASSWORDS,
    SESSION_CLIENT,
    StartApp,
    api_url,
    login,
    sign_in,
    start_app,
    texts,
)

EXPERIMENTS = "views/experiments.py"
MODELS = "views/models.py"
NOW = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)
RUNS = [  # (name, params, metrics, status) of experiment "churn", oldest first
    ("rf-0", {"model": "rf", "depth": "4", "seed": "7"}, {"f1": 0.71, "accuracy": 0.80}, "finished"),
    ("rf-1", {"model": "rf", "depth": "8", "seed": "7"}, {"f1": 0.83, "accuracy": 0.86}, "finished"),
    ("gb-0", {"model": "gb", "seed": "7"}, {"f1": 0.77, "loss": 0.41}, "failed"),
]
FLOW_RUN = "5b7e0d3c-2f1a-4c6e-9d8b-7a6f5e4d3c2b"


def experiment_run(name: str, params: dict[str, str], metrics: dict[str, float], status: str, i: int) -> ExperimentRun:
    return ExperimentRun(
        id=uuid.uuid4().hex,
        name=name,
        experiment="churn",
        status=status,
        start_time=NOW + timedelta(minutes=i),
        end_time=NOW + timedelta(minutes=i, seconds=90),
        duration_seconds=90.0,
        params=params,
        metrics=metrics,
        datasets=[DatasetRef(name="customers", version="3", context="training")],
        model_versions=[],
        flow_run_id=FLOW_RUN,
        user="bob",
    )


class FakeRegistry:
    """Stands in for the platform's MLflow registry behind ``client.experiments`` and ``client.models``: the same
    methods and the SDK's schema objects. Model ``churn`` has versions 1 to 3 (one per run), v1 the champion and
    v3 the challenger; model ``ltv`` has one version and no champion."""

    def __init__(self) -> None:
        self.runs = [experiment_run(*r, i=i) for i, r in enumerate(RUNS)]
        self.experiments = [
            ExperimentPublic(name="churn", mlflow_name="churn/churn", id="1", runs=3, last_run_at=NOW, created_at=NOW),
            ExperimentPublic(
                name="baseline", mlflow_name="churn/baseline", id="2", runs=0, last_run_at=None, created_at=NOW
            ),
        ]
        self.versions: dict[str, list[ModelVersionPublic]] = {
            "churn": [self._version("churn", i + 1, r) for i, r in enumerate(self.runs)],
            "ltv": [self._version("ltv", 1, self.runs[0])],
        }
        for i, r in enumerate(self.runs):
            self.runs[i] = r.model_copy(update={"model_versions": [ModelVersionRef(model="churn", version=i + 1)]})
        self.aliases: dict[str, dict[str, int]] = {"churn": {"champion": 1, "challenger": 3}, "ltv": {}}
        self.promotions: dict[str, list[PromotionPublic]] = {
            "churn": [self._promotion("churn", "promote", 1, None, "first one", "alice")],
            "ltv": [],
        }
        self.refusal: SelfServeError | None = None  # what the next promotion or roll back is refused with
        self.experiments_client = _Experiments(self)
        self.models_client = _Models(self)

    def install(self, at: AppTest, monkeypatch: pytest.MonkeyPatch) -> AppTest:
        """Put the fake into the logged-in session's SDK client."""
        client = at.session_state[SESSION_CLIENT]
        monkeypatch.setattr(client, "experiments", self.experiments_client)
        monkeypatch.setattr(client, "models", self.models_client)
        return at

    def run_named(self, name: str) -> ExperimentRun:
        return next(r for r in self.runs if r.name == name)

    @staticmethod
    def _version(model: str, version: int, run: ExperimentRun) -> ModelVersionPublic:
        return ModelVersionPublic(
            model=model,
            version=version,
            status="ready",
            aliases=[],
            run_id=run.id,
            experiment="churn",
            metric="f1",
            metric_value=run.metrics["f1"],
            metrics=run.metrics,
            created_at=NOW + timedelta(hours=version),
        )

    @staticmethod
    def _promotion(
        model: str, action: PromotionAction, version: int, previous: int | None, reason: str, actor: str
    ) -> PromotionPublic:
        return PromotionPublic(
            model=model, version=version, previous_version=previous, action=action, reason=reason, actor=actor, at=NOW
        )

    def public(self, name: str) -> ModelPublic:
        if name not in self.versions:
            raise NotFound(f"model {name!r} not found in project 'churn'")
        aliases = self.aliases[name]
        return ModelPublic(
            name=name,
            mlflow_name=f"churn.{name}",
            description=f"the {name} model",
            aliases=aliases,
            champion=aliases.get("champion"),
            challenger=aliases.get("challenger"),
            latest_version=max(v.version for v in self.versions[name]),
            created_at=NOW,
            updated_at=NOW,
        )

    def version_list(self, name: str) -> list[ModelVersionPublic]:
        by_version = {v: a for a, v in self.aliases[name].items()}
        return [
            v.model_copy(update={"aliases": [by_version[v.version]] if v.version in by_version else []})
            for v in sorted(self.versions[name], key=lambda v: -v.version)
        ]

    def set_champion(
        self, name: str, action: PromotionAction, version: int, previous: int | None, reason: str
    ) -> PromotionPublic:
        if self.refusal is not None:
            raise self.refusal
        self.aliases[name]["champion"] = version
        if self.aliases[name].get("challenger") == version:
            del self.aliases[name]["challenger"]
        done = self._promotion(name, action, version, previous, reason, "alice")
        self.promotions[name].insert(0, done)
        return done


class _Experiments:
    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry

    def list(self, project: str) -> list[ExperimentPublic]:
        return self.registry.experiments

    def runs(
        self, project: str, experiment: str, *, sort: str | None = None, desc: bool = False, limit: int = 50
    ) -> builtins.list[ExperimentRun]:
        found = [r for r in self.registry.runs if r.experiment == experiment]
        found.sort(key=lambda r: r.start_time or NOW, reverse=True)
        if sort is not None:  # runs without the metric last, whichever the order
            found.sort(key=lambda r: (sort not in r.metrics, -r.metrics.get(sort, 0) if desc else r.metrics.get(sort)))
        return found[:limit]

    def compare(self, project: str, run_ids: Sequence[str]) -> RunComparison:
        by_id = {r.id: r for r in self.registry.runs}
        runs = [by_id[i] for i in run_ids]
        params = sorted({k for r in runs for k in r.params})
        return RunComparison(
            runs=runs,
            params=params,
            metrics=sorted({k for r in runs for k in r.metrics}),
            differing_params=[k for k in params if len({r.params.get(k) for r in runs}) > 1],
        )


class _Models:
    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry

    def list(self, project: str) -> list[ModelPublic]:
        return [self.registry.public(n) for n in sorted(self.registry.versions)]

    def get(self, project: str, name: str, *, versions: int = 10) -> ModelDetail:
        return ModelDetail(
            **self.registry.public(name).model_dump(),
            versions=self.registry.version_list(name)[:versions],
            promotions=self.registry.promotions[name],
        )

    def promote(self, project: str, name: str, version: int, *, reason: str = "") -> PromotionPublic:
        previous = self.registry.aliases[name].get("champion")
        if previous == version:
            raise Conflict(f"version {version} is already the champion of model {name!r}")
        return self.registry.set_champion(name, "promote", version, previous, reason)

    def rollback(self, project: str, name: str, *, reason: str = "") -> PromotionPublic:
        current = self.registry.aliases[name].get("champion")
        promoted = next(
            (p for p in self.registry.promotions[name] if p.action == "promote" and p.version == current), None
        )
        if promoted is None or promoted.previous_version is None:
            raise Conflict(
                f"model {name!r} has no previous champion to roll back to (its champion is version {current})"
            )
        return self.registry.set_champion(name, "rollback", promoted.previous_version, current, reason)

    def lineage(self, project: str, name: str, version: int) -> ModelLineage:
        v = next(v for v in self.registry.version_list(name) if v.version == version)
        run = next(r for r in self.registry.runs if r.id == v.run_id)
        return ModelLineage(
            model=name,
            version=version,
            status=v.status,
            aliases=v.aliases,
            created_at=v.created_at,
            datasets=run.datasets,
            run=LineageRun(
                id=run.id,
                name=run.name,
                experiment=run.experiment,
                status=run.status,
                start_time=run.start_time,
                end_time=run.end_time,
                params=run.params,
                metrics=run.metrics,
                user=run.user,
            ),
            code=LineageCode(flow_run_id=FLOW_RUN, deployment="nightly-train", entrypoint="train.py:train"),
            deployments=[],
            promotions=[p for p in self.registry.promotions[name] if p.version == version],
        )


@pytest.fixture
def carol_views_churn(api_url: str) -> str:  # noqa: F811  (the fixture imported above)
    with login(api_url, "alice") as alice:
        alice.members.add("churn", "carol", "viewer")
    return api_url


def open_page(
    at: AppTest, page: str, registry: FakeRegistry | None = None, monkeypatch: pytest.MonkeyPatch | None = None
) -> AppTest:
    if registry is not None and monkeypatch is not None:
        registry.install(at, monkeypatch)
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def buttons(at: AppTest) -> list[str]:
    return [b.label for b in at.main.button]


def frame(at: AppTest, column: str) -> Any:
    """The page's dataframe that has ``column``, as pandas (a Styler's data, as the pages style some tables)."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def confirm(at: AppTest, reason: str = "") -> AppTest:
    at.text_input(key="models_reason").input(reason)
    at.button(key="FormSubmitter:models_confirm-Confirm").click().run()
    assert not at.exception, at.exception
    return at


# -- without a model registry --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "title", "unavailable"),
    [
        (EXPERIMENTS, "Experiments", "Experiments are not available on this platform right now"),
        (MODELS, "Models", "Models are not available on this platform right now"),
    ],
)
def test_disabled_models_are_an_info_not_an_error(
    start_app: StartApp,  # noqa: F811
    page: str,
    title: str,
    unavailable: str,
) -> None:
    at = open_page(sign_in(start_app(), "alice", PASSWORDS["alice"]), page)
    assert at.title[0].value.endswith(title)
    info = texts(at.info)
    assert unavailable in info
    assert "models are not enabled on this platform" in info
    assert not at.error
    assert not at.dataframe
    assert not buttons(at)


# -- experiments, with the stand-in registry ---------------------------------------------------------------


def test_runs_show_status_duration_key_params_and_metrics(
    start_app: StartApp,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = open_page(sign_in(start_app(), "carol", PASSWORDS["carol"]), EXPERIMENTS)  # in no project
    assert "not a member of any project" in texts(at.info)

    at = open_page(sign_in(start_app(), "bob", PASSWORDS["bob"]), EXPERIMENTS, FakeRegistry(), monkeypatch)
    assert at.selectbox(key="experiments_experiment").value == "churn"
    runs = frame(at, "Key params")
    assert runs["Run"].tolist() == ["gb-0", "rf-1", "rf-0"]  # newest first
    runs = runs.set_index("Run")
    assert runs["Status"].to_dict() == {"gb-0": "failed", "rf-1": "finished", "rf-0": "finished"}
    assert runs.loc["rf-1", "Duration"] == "1m 30s"
    # Only the parameters that tell the runs apart: seed is 7 in every run.
    assert runs.loc["rf-1", "Key params"] == "depth=8, model=rf"
    assert runs.loc["gb-0", "Key params"] == "model=gb"
    assert runs.loc["rf-1", "f1"] == 0.83 and runs.loc["gb-0", "loss"] == 0.41
    assert runs.loc["rf-1", "Datasets"] == "customers@3" and runs.loc["rf-1", "Registered as"] == "churn v2"


def test_runs_sort_by_a_chosen_metric(start_app: StartApp, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    at = open_page(sign_in(start_app(), "alice", PASSWORDS["alice"]), EXPERIMENTS, FakeRegistry(), monkeypatch)
    assert at.selectbox(key="experiments_sort").options == ["Newest first", "accuracy", "f1", "loss"]
    assert at.toggle(key="experiments_desc").disabled
    at.selectbox(key="experiments_sort").set_value("f1").run()
    assert frame(at, "Key params")["Run"].tolist() == ["rf-1", "gb-0", "rf-0"]
    at.toggle(key="experiments_desc").set_value(False).run()
    assert not at.exception, at.exception
    assert frame(at, "Key params")["Run"].tolist() == ["rf-0", "gb-0", "rf-1"]
    at.selectbox(key="experiments_sort").set_value("loss").run()
    assert frame(at, "Key params")["Run"].tolist() == ["gb-0", "rf-1", "rf-0"]  # the runs without it last


def test_chosen_runs_are_compared_in_a_chart_and_side_by_side(
    start_app: StartApp,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = FakeRegistry()
    at = open_page(sign_in(start_app(), "alice", PASSWORDS["alice"]), EXPERIMENTS, registry, monkeypatch)
    chosen = at.multiselect(key="experiments_compare_churn")
    assert chosen.value == [r.id for r in reversed(registry.runs)]  # the first three in the table
    (chart,) = at.get("vega_lite_chart")
    assert "xOffset" in chart.proto.spec
    params = frame(at, "rf-0")
    assert params.index.tolist() == ["depth", "model", "seed"]
    assert params.loc["depth"].to_dict() == {"gb-0": "", "rf-1": "8", "rf-0": "4"}
    assert "Marked: the 2 that differ." in texts(at.caption)

    chosen.set_value([registry.run_named("rf-0").id, registry.run_named("rf-1").id]).run()
    assert not at.exception, at.exception
    params = frame(at, "rf-0")
    assert params.columns.tolist() == ["rf-0", "rf-1"]
    assert params.loc["seed"].tolist() == ["7", "7"]
    assert "Marked: the 1 that differs." in texts(at.caption)

    at.multiselect(key="experiments_compare_churn").set_value([registry.run_named("rf-0").id]).run()
    assert "Choose two to ten runs to compare them." in texts(at.caption)
    assert not at.get("vega_lite_chart")


def test_an_experiment_without_runs_and_a_project_without_experiments(
    start_app: StartApp,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = FakeRegistry()
    at = open_page(sign_in(start_app(), "alice", PASSWORDS["alice"]), EXPERIMENTS, registry, monkeypatch)
    at.selectbox(key="experiments_experiment").set_value("baseline").run()
    assert not at.exception, at.exception
    assert "No runs in **baseline** yet." in texts(at.caption)
    assert not at.dataframe

    registry.experiments.clear()
    at.run()
    assert "No experiments yet." in texts(at.info)


# -- models, with the stand-in registry --------------------------------------------------------------------


def test_models_show_aliases_versions_and_lineage(
    start_app: StartApp,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = FakeRegistry()
    at = open_page(sign_in(start_app(), "bob", PASSWORDS["bob"]), MODELS, registry, monkeypatch)
    models = frame(at, "Champion").set_index("Model")
    assert models.loc["churn", "Champion"] == 1 and models.loc["churn", "Challenger"] == 3
    assert models.loc["ltv", "Latest version"] == 1

    versions = frame(at, "Aliases").set_index("Version")
    assert versions.index.tolist() == [3, 2, 1]
    assert list(versions.loc[1, "Aliases"]) == ["champion"] and list(versions.loc[3, "Aliases"]) == ["challenger"]
    assert versions.loc[2, "Run"] == registry.run_named("rf-1").id
    assert versions.loc[2, "Metric"] == "f1 = 0.83"
    assert versions.loc[2, "Metrics"] == "accuracy=0.86, f1=0.83"

    # The champion's lineage is shown first: dataset version -> run <- code; version -> (no) deployments.
    assert at.selectbox(key="models_version").value == 1
    (graph,) = at.get("graphviz_chart")
    dot = graph.proto.spec
    assert '"customers@3" -> "run rf-0\\nchurn"' in dot and '"churn v1\\nchampion"' in dot
    assert '"flow nightly-train\\ntrain.py:train" -> "run rf-0\\nchurn"' in dot
    assert "not deployed yet" in dot
    assert "Flow deployment: `nightly-train`" in texts(at.markdown)
    history = frame(at, "Replaced")
    assert history[["Action", "Version", "By"]].values.tolist() == [["promote", 1, "alice"]]

    at.selectbox(key="models_version").set_value(2).run()
    assert '"customers@3" -> "run rf-1\\nchurn"' in at.get("graphviz_chart")[0].proto.spec
    at.selectbox(key="models_model").set_value("ltv").run()
    assert not at.exception, at.exception
    assert frame(at, "Aliases")["Version"].tolist() == [1]
    assert "No promotions yet." in texts(at.caption)


def test_owner_promotes_after_confirming_and_rolls_back(
    start_app: StartApp,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = FakeRegistry()
    at = open_page(sign_in(start_app(), "alice", PASSWORDS["alice"]), MODELS, registry, monkeypatch)
    assert at.button(key="models_promote").disabled  # v1, selected, is the champion already
    at.selectbox(key="models_version").set_value(3).run()
    assert not at.button(key="models_promote").disabled

    # Promoting asks first; cancelling changes nothing.
    at.button(key="models_promote").click().run()
    assert "Make version 3 the champion of **churn**? Version 1, the champion now" in texts(at.warning)
    at.button(key="FormSubmitter:models_confirm-Cancel").click().run()
    assert not at.warning and registry.aliases["churn"]["champion"] == 1

    at.button(key="models_promote").click().run()
    confirm(at, "beats v1 on f1")
    assert "churn v3 is the champion now (was v1)." in texts(at.toast)
    assert registry.aliases["churn"] == {"champion": 3}  # the challenger became champion
    assert not at.warning
    assert frame(at, "Champion").set_index("Model").loc["churn", "Champion"] == 3
    assert frame(at, "Replaced")[["Action", "Version", "Replaced", "Reason"]].values.tolist()[0] == [
        "promote",
        3,
        1,
        "beats v1 on f1",
    ]

    at.button(key="models_rollback").click().run()
    assert "Version 3 stops being the champion and version 1 becomes champion again." in texts(at.warning)
    confirm(at)
    assert "Rolled back churn: v1 is the champion again (was v3)." in texts(at.toast)
    assert registry.aliases["churn"]["champion"] == 1


def test_a_refused_promotion_shows_the_platforms_message(
    start_app: StartApp,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = FakeRegistry()
    at = open_page(sign_in(start_app(), "bob", PASSWORDS["bob"]), MODELS, registry, monkeypatch)
    at.selectbox(key="models_version").set_value(2).run()
    at.button(key="models_promote").click().run()
    registry.refusal = Conflict("version 2 of model 'churn' is pending_registration, not ready")
    confirm(at)
    assert "version 2 of model 'churn' is pending_registration, not ready" in texts(at.error)
    assert not at.toast
    assert registry.aliases["churn"]["champion"] == 1

    registry.refusal = None
    at.button(key="models_rollback").click().run()
    assert "the champion before it becomes champion again" in texts(at.warning)  # v1 replaced none
    confirm(at)
    assert "model 'churn' has no previous champion to roll back to (its champion is version 1)" in texts(at.error)


def test_viewer_sees_models_and_lineage_but_no_promotion(
    start_app: StartApp,  # noqa: F811
    carol_views_churn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = open_page(sign_in(start_app(), "carol", PASSWORDS["carol"]), MODELS, FakeRegistry(), monkeypatch)
    assert frame(at, "Champion")["Model"].tolist() == ["churn", "ltv"]
    assert len(frame(at, "Aliases")) == 3
    assert at.get("graphviz_chart")
    assert not buttons(at)  # no Promote to champion, no Roll back champion
    assert "may look at its models, not promote them or roll them back" in texts(at.caption)


def test_no_models_yet(start_app: StartApp, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    registry = FakeRegistry()
    registry.versions.clear()
    at = open_page(sign_in(start_app(), "alice", PASSWORDS["alice"]), MODELS, registry, monkeypatch)
    assert "No registered models yet." in texts(at.info)
    assert not at.dataframe
