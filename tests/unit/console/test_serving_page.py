"""The console's Serving page, run in-process with Streamlit's AppTest against a live API.

No BentoML here: deployments are rows in the state the serving runtime leaves them in (as in
``tests/unit/serving/test_serving_api.py``). ``v1`` and ``v2`` are ready but no process answers on
their ports, so every request the gateway forwards fails with a 503 and the traffic figures (requests,
errors, latency) are the gateway's real ones; ``v3`` failed. Routes are made through the SDK. Answers
from real BentoML processes behind this page are in ``tests/browser/test_serving_page.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from selfserve.errors import ServiceUnavailable
from selfserve.store.tables import ServingDeployment
from tests import support
from tests.support import Platform, free_port
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

PAGE = "views/serving.py"
PROJECT = "churn"
READY_AT = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)


def add_deployment(platform: Platform, name: str, version: int, state: str, **fields: Any) -> None:
    support.add_deployment(platform, PROJECT, name, version=version, state=state, **fields)


@pytest.fixture
def served(api_url: str, sqlite_platform: Platform) -> Iterator[str]:  # noqa: F811
    """In churn: deployments v1 and v2 (ready, no process answering), v3 (failed), and route ``score``
    sending 90% to v1 and 10% to v2. Carol is a viewer of churn."""
    admin = sqlite_platform.admin()
    admin.quotas.set(PROJECT, {"deployments": 4})
    add_deployment(sqlite_platform, "v1", 1, "ready", port=free_port(), ready_at=READY_AT)
    add_deployment(sqlite_platform, "v2", 2, "ready", port=free_port(), ready_at=READY_AT, restarts=1)
    add_deployment(
        sqlite_platform, "v3", 3, "failed", restarts=2, last_error="ModuleNotFoundError: No module named 'xgb'"
    )
    with login(api_url, "alice") as alice:
        alice.routes.create(PROJECT, "score", {"v1": 90, "v2": 10})
        alice.members.add(PROJECT, "carol", "viewer")
    yield api_url


def open_serving(at: AppTest) -> AppTest:
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def submit(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, at.exception
    return at


def frame(at: AppTest, column: str) -> Any:
    """The page's dataframe that has ``column``, as pandas."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def weight(at: AppTest, deployment: str) -> Any:
    return next(n for n in at.number_input if n.label == deployment)


def labelled(widgets: Any, label: str) -> Any:
    return next(w for w in widgets if w.label == label)


def buttons(at: AppTest) -> list[str]:
    return [b.label for b in at.main.button]


def charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart")) + len(at.get("arrow_vega_lite_chart"))


# -- what the page shows ------------------------------------------------------------------------------


def test_routes_splits_and_deployments_are_listed(start_app: StartApp, served: str) -> None:  # noqa: F811
    at = open_serving(sign_in(start_app(), "bob", PASSWORDS["bob"]))
    assert at.title[0].value.endswith("Serving")
    routes = frame(at, "Split").set_index("Route")
    assert routes.loc["score", "Split"] == "v1 90% · v2 10%"
    assert routes.loc["score", "Revision"] == 1
    assert routes.loc["score", "Sticky key"] == "" and routes.loc["score", "Shadow"] == ""
    assert at.selectbox(key="serving_route").value == "score"
    assert charts(at) == 1  # the split, as a bar; no traffic yet
    assert f"POST /api/v1/projects/{PROJECT}/routes/score/predict" in texts(at.caption)
    assert not at.warning  # both targets are ready

    deployments = frame(at, "Restarts").set_index("Deployment")
    assert deployments["Model"].to_dict() == {"v1": "clf@1", "v2": "clf@2", "v3": "clf@3"}
    assert deployments["State"].to_dict() == {"v1": "ready", "v2": "ready", "v3": "failed"}
    assert deployments["Restarts"].to_dict() == {"v1": 0, "v2": 1, "v3": 2}
    assert list(deployments.loc["v1", "Routes"]) == ["score"] and list(deployments.loc["v3", "Routes"]) == []
    assert deployments.loc["v3", "Last error"].startswith("ModuleNotFoundError")
    assert deployments.loc["v1", "Ready since"] == READY_AT
    assert "2 of 3 deployments ready." in texts(at.caption)

    # The selected deployment, with its state as a badge; a failed one says why.
    assert "**v1** serves **clf v1** :green-badge[ready]" in texts(at.markdown)
    assert "used by score" in texts(at.caption)
    at.selectbox(key="serving_deployment").set_value("v3").run()
    assert not at.exception, at.exception
    assert ":red-badge[failed]" in texts(at.markdown)
    assert "No module named 'xgb'" in texts(at.error)


def test_the_log_lines_are_asked_for_when_the_expander_opens(start_app: StartApp, served: str) -> None:  # noqa: F811
    at = open_serving(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    assert "serving runtime" not in texts(at.error) + texts(at.warning)  # closed: not asked
    at.session_state["serving_logs_v1"] = True
    at.run()
    assert not at.exception, at.exception
    # No serving runtime runs in this suite: the page says so instead of showing lines.
    assert "the serving runtime is not answering" in texts(at.error) + texts(at.warning) + texts(at.info)


def test_the_traffic_of_a_route_without_requests_is_an_empty_state(start_app: StartApp, served: str) -> None:  # noqa: F811
    at = open_serving(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    assert "No traffic on **score** in the last 15 minutes yet." in texts(at.info)
    assert not any("Target" in df.value.columns for df in at.dataframe)
    assert "Refresh" in buttons(at)


def test_traffic_per_minute_and_per_target(start_app: StartApp, served: str) -> None:  # noqa: F811
    with login(served, "alice") as alice:
        alice.routes.set(PROJECT, "score", {"v1": 50, "v2": 50})
        for i in range(20):
            with pytest.raises(ServiceUnavailable):
                alice.routes.predict(PROJECT, "score", {"age": 30 + i, "income": i / 10})
    at = open_serving(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    assert charts(at) == 4  # the split, requests, errors and latency
    summary = frame(at, "Error rate").set_index("Target")
    assert summary["Requests"].sum() == 20
    assert (summary["Errors"] == summary["Requests"]).all()
    assert (summary["p50"] > 0).all()
    assert "20 requests, 20 error" in texts(at.caption)
    at.selectbox(key="serving_window").set_value(60)
    at.button(key="serving_refresh").click().run()
    assert not at.exception, at.exception
    assert "in the last 1 hour" in texts(at.caption)


# -- changing routes ----------------------------------------------------------------------------------


def test_owner_changes_the_split_through_the_form(start_app: StartApp, served: str) -> None:  # noqa: F811
    at = open_serving(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    assert [weight(at, d).value for d in ("v1", "v2", "v3")] == [90, 10, 0]

    # Weights that do not add up to 100 are refused on the page, before the API is asked.
    weight(at, "v1").set_value(60)
    weight(at, "v2").set_value(30)
    submit(at, "Save split")
    assert "The weights add up to 90%, not 100%." in texts(at.error)
    assert not at.toast

    weight(at, "v2").set_value(20)
    weight(at, "v3").set_value(20)
    labelled(at.text_input, "Sticky key").input("age")
    submit(at, "Save split")
    assert "Route score sends v1 60% · v2 20% · v3 20% now (revision 2)." in texts(at.toast)
    routes = frame(at, "Split").set_index("Route")
    assert routes.loc["score", "Split"] == "v1 60% · v2 20% · v3 20%"
    assert routes.loc["score", "Sticky key"] == "age"
    # v3 is one of the targets now, and it is failed: the page says what that means.
    assert "Deployment **v3** has failed" in texts(at.warning)
    # The form starts from the new revision.
    assert [weight(at, d).value for d in ("v1", "v2", "v3")] == [60, 20, 20]
    with login(served, "alice") as alice:
        route = alice.routes.get(PROJECT, "score")
    assert (route.spec.targets, route.spec.sticky_key, route.revision) == ({"v1": 60, "v2": 20, "v3": 20}, "age", 2)


def test_the_apis_refusal_of_a_split_is_shown(start_app: StartApp, served: str) -> None:  # noqa: F811
    at = open_serving(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    labelled(at.selectbox, "Shadow").set_value("v2")
    submit(at, "Save split")
    assert "the shadow 'v2' is also a target" in texts(at.error)
    assert not at.toast

    weight(at, "v2").set_value(0)
    weight(at, "v1").set_value(100)
    submit(at, "Save split")
    assert "Route score sends v1 100% now (revision 2)." in texts(at.toast)
    assert frame(at, "Split").set_index("Route").loc["score", "Shadow"] == "v2"
    assert "**v2** gets a copy of every request" in texts(at.caption)


def test_switch_roll_back_and_the_history(start_app: StartApp, served: str) -> None:  # noqa: F811
    at = open_serving(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    assert labelled(at.button, "Roll back").disabled  # one spec only

    at.selectbox(key="serving_switch_to").set_value("v2")
    at.text_input(key="serving_reason").input("v2 wins the test")
    submit(at, "Switch")
    assert "Route score sends every request to v2 now (revision 2)." in texts(at.toast)
    assert frame(at, "Split").set_index("Route").loc["score", "Split"] == "v2 100%"

    submit(at, "Roll back")
    assert "Rolled back route score: it sends v1 90% · v2 10% again." in texts(at.toast)
    history = frame(at, "Action")
    assert history[["Revision", "Action", "Split", "By"]].values.tolist() == [
        [3, "rollback", "v1 90% · v2 10%", "alice"],
        [2, "switch", "v2 100%", "alice"],
        [1, "create", "v1 90% · v2 10%", "alice"],
    ]
    assert history["Reason"].tolist()[1] == "v2 wins the test"


def test_a_route_is_created_from_the_page(start_app: StartApp, served: str) -> None:  # noqa: F811
    at = open_serving(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    at.text_input(key="serving_new_route_name").input("Not A Name")
    submit(at, "Create route")
    assert "invalid" in texts(at.error)

    at.text_input(key="serving_new_route_name").input("backup")
    at.selectbox(key="serving_new_route_target").set_value("v2")
    submit(at, "Create route")
    assert "Route backup sends every request to v2." in texts(at.toast)
    assert frame(at, "Split").set_index("Route").loc["backup", "Split"] == "v2 100%"
    assert at.selectbox(key="serving_route").value == "backup"  # the new route is the one shown


# -- deployments --------------------------------------------------------------------------------------


def test_owner_deletes_an_unused_deployment_and_sees_the_apis_refusals(
    start_app: StartApp,  # noqa: F811
    served: str,
) -> None:
    at = open_serving(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    # v1 is in use by a route: it cannot be deleted.
    assert at.button(key="serving_delete").disabled

    at.selectbox(key="serving_deployment").set_value("v3").run()
    at.button(key="serving_delete").click().run()
    assert "Tick the box to confirm." in texts(at.error)
    at.checkbox(key="serving_delete_sure_v3").check().run()
    at.button(key="serving_delete").click().run()
    assert not at.exception, at.exception
    assert "Deployment v3 is deleted." in texts(at.toast)
    assert list(frame(at, "Restarts")["Deployment"]) == ["v1", "v2"]

    # Deploying needs the model registry, which the unit suite runs without: the API's reason is shown.
    at.text_input(key="serving_new_name").input("v4")
    at.text_input(key="serving_new_model").input("clf@champion")
    submit(at, "Deploy")
    assert "models are not enabled on this platform" in texts(at.error)
    at.text_input(key="serving_new_name").input("v4")
    at.text_input(key="serving_new_model").input("Not a model!")
    submit(at, "Deploy")
    assert "invalid model reference" in texts(at.error)
    assert not at.toast


def test_a_deployment_on_its_way_is_followed_until_ready(
    start_app: StartApp,  # noqa: F811
    served: str,
    sqlite_platform: Platform,
) -> None:
    add_deployment(sqlite_platform, "v4", 4, "starting")
    with login(served, "alice") as alice:
        alice.routes.create(PROJECT, "next", "v4")
    at = open_serving(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    at.selectbox(key="serving_route").set_value("next")
    at.selectbox(key="serving_deployment").set_value("v4").run()
    assert not at.exception, at.exception
    assert "Deployment **v4** is starting: requests sent to it fail until it is ready." in texts(at.warning)
    assert "**v4** serves **clf v4** :blue-badge[starting]" in texts(at.markdown)

    with sqlite_platform.store.begin() as s:
        dep = s.scalar(select(ServingDeployment).where(ServingDeployment.name == "v4"))
        assert dep is not None
        dep.state, dep.ready_at = "ready", READY_AT
    at.run()
    assert not at.exception, at.exception
    assert ":green-badge[ready]" in texts(at.markdown)
    assert not at.warning
    assert frame(at, "Restarts").set_index("Deployment").loc["v4", "State"] == "ready"


def test_viewer_sees_everything_but_no_forms(start_app: StartApp, served: str) -> None:  # noqa: F811
    at = open_serving(sign_in(start_app(), "carol", PASSWORDS["carol"]))
    assert frame(at, "Split").set_index("Route").loc["score", "Split"] == "v1 90% · v2 10%"
    assert len(frame(at, "Restarts")) == 3
    assert not at.number_input and not at.text_input
    assert buttons(at) == ["Refresh"]
    assert {e.label for e in at.expander} == {"History of score", "Last 100 log lines"}
    captions = texts(at.caption)
    assert "may look at its routes, not change them" in captions
    assert "may look at its deployments, not create or delete them" in captions


def test_a_project_without_deployments(start_app: StartApp) -> None:  # noqa: F811
    at = open_serving(sign_in(start_app(), "alice", PASSWORDS["alice"]))
    info = texts(at.info)
    assert "No routes yet." in info and "Deploy a model first" in info
    assert "No deployments yet." in info
    assert not at.dataframe
    assert at.text_input(key="serving_new_model")  # the owner may deploy: the form is open
