"""Routes over real BentoML deployments, through the real stack: MLflow holds the model versions, the
serving runtime runs one BentoML process per deployment, and the API's gateway splits, mirrors,
switches and logs.

One project, two versions of one model and two deployments (``blue`` serves the champion, version
1; ``green`` serves version 2), made once for the module; each test makes its own route.
"""

from __future__ import annotations

import math
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from selfserve import Client, InvalidInput, NotFound, PermissionDenied
from selfserve.errors import PayloadTooLarge, ServiceUnavailable
from selfserve.store import Store
from selfserve.store.tables import ServingDeployment
from tests.pipeline_stack import Stack
from tests.support import log_skops_model

pytestmark = pytest.mark.integration

FEATURES = ["x1", "x2"]


@dataclass
class World:
    stack: Stack
    project: str
    other: str
    alice: Client  # owner
    vera: Client  # viewer
    bob: Client  # owner of the other project
    models: dict[int, Any]  # version -> the fitted model, to compare answers with
    store: Store

    def pid_and_port(self, deployment: str) -> tuple[int, int]:
        with self.store.session() as s:
            dep = s.scalar(select(ServingDeployment).where(ServingDeployment.name == deployment))
            assert dep is not None and dep.pid and dep.port
            return dep.pid, dep.port


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.integers(0, 10, size=n)})


def _register(client: Client, project: str) -> dict[int, Any]:
    """Versions 1 (logistic regression) and 2 (a shallow tree) of ``<project>.clf``, logged with skops
    as the platform's train flow logs them; version 1 is the champion."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    x = frame(300, 0)
    y = ((x["x1"] + 0.3 * x["x2"]) > 1.5).astype(int)
    fitted = {1: LogisticRegression().fit(x, y), 2: DecisionTreeClassifier(max_depth=2).fit(x, y)}
    for version, model in fitted.items():
        assert log_skops_model(client, project, model, x) == version
    client.models.promote(project, "clf", 1, reason="the first one")
    return fitted


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    admin = stack.admin()
    alice, vera, bob = (stack.user(f"{n}-{uuid.uuid4().hex[:4]}", admin) for n in ("alice", "vera", "bob"))
    project, other = stack.project(alice, "serve"), stack.project(bob, "other")
    alice.members.add(project, vera.whoami().user.name, role="viewer")
    admin.quotas.set(project, {"deployments": 3, "rpm": 100_000})
    models = _register(alice, project)
    alice.deployments.create(project, "blue", "clf@champion")
    alice.deployments.create(project, "green", "clf@2")
    for name in ("blue", "green"):
        alice.deployments.wait_ready(project, name, timeout=240)
    store = Store(stack.settings.database_url)
    try:
        yield World(stack, project, other, alice, vera, bob, models, store)
    finally:
        store.dispose()
        stack.close_clients()


def rows(n: int, seed: int = 1) -> list[dict[str, Any]]:
    return frame(n, seed).to_dict(orient="records")  # type: ignore[return-value]


def test_a_deployment_answers_as_its_model_does(world: World) -> None:
    w = world
    blue = w.alice.deployments.get(w.project, "blue")
    assert (blue.state, blue.model, blue.version, blue.model_ref) == ("ready", "clf", 1, "clf@champion")
    assert [(c.name, c.type) for c in blue.inputs] == [("x1", "double"), ("x2", "long")]
    w.alice.routes.create(w.project, "main", "blue")
    batch = rows(25)
    answer = w.alice.routes.predict(w.project, "main", batch)
    assert (answer.target, answer.model, answer.model_version) == ("blue", "clf", 1)
    expected = w.models[1].predict(pd.DataFrame(batch)[FEATURES]).tolist()
    assert answer.predictions == expected
    one = w.alice.routes.predict(w.project, "main", batch[0])
    assert one.predictions == expected[:1] and one.request_id != answer.request_id
    logs = w.alice.deployments.logs(w.project, "blue", tail=50)
    assert logs.lines, "the BentoML server's start-up is in its log"


def _within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_a_canary_gets_its_share_of_traffic(world: World) -> None:
    w = world
    w.alice.routes.create(w.project, "canary", {"blue": 70, "green": 30})
    n = 400
    seen = Counter(w.alice.routes.predict(w.project, "canary", rows(1, i)).target for i in range(n))
    assert set(seen) == {"blue", "green"}
    assert _within(seen["green"], n, 0.30), seen
    stats = w.alice.routes.stats(w.project, "canary")
    assert {t.target: t.requests for t in stats.targets} == dict(seen)
    assert all(t.errors == 0 and t.p50_ms is not None for t in stats.targets)


def test_a_sticky_key_keeps_each_caller_on_one_side(world: World) -> None:
    w = world
    w.alice.routes.create(w.project, "ab", {"blue": 50, "green": 50}, sticky_key="customer_id")
    targets: dict[int, set[str]] = {}
    for rnd in range(3):
        for customer in range(40):
            row = {**rows(1, rnd * 100 + customer)[0], "customer_id": customer}
            targets.setdefault(customer, set()).add(w.alice.routes.predict(w.project, "ab", row).target)
    assert all(len(t) == 1 for t in targets.values()), targets
    sides = Counter(next(iter(t)) for t in targets.values())
    assert set(sides) == {"blue", "green"} and _within(sides["green"], 40, 0.5)
    with pytest.raises(InvalidInput, match=r"rows\[0\]\.customer_id: missing"):
        w.alice.routes.predict(w.project, "ab", rows(1)[0])


def test_a_shadow_sees_every_request_and_never_changes_the_answer(world: World) -> None:
    w = world
    w.alice.routes.create(w.project, "mirror", "blue", shadow="green")
    batch = rows(30, 7)
    ids = []
    for row in batch:
        answer = w.alice.routes.predict(w.project, "mirror", row)
        assert answer.target == "blue"
        assert answer.predictions == w.models[1].predict(pd.DataFrame([row])[FEATURES]).tolist()
        ids.append(answer.request_id)
    # A shadow that hangs costs the live answer nothing: stop green's server and ask again.
    pid, _ = world.pid_and_port("green")
    os.killpg(pid, signal.SIGSTOP)
    try:
        for row in batch[:10]:
            started = time.perf_counter()
            assert w.alice.routes.predict(w.project, "mirror", row).target == "blue"
            assert time.perf_counter() - started < 2.0
    finally:
        os.killpg(pid, signal.SIGCONT)
    logged = _wait_rows(
        w,
        f"SELECT request_id, target, shadow, ok FROM predictions_mirror WHERE request_id IN "
        f"({', '.join(repr(i) for i in ids)})",
        len(ids) * 2,
    )
    live = {r[0] for r in logged if r[1:] == ["blue", False, True]}
    mirrored = {r[0] for r in logged if r[1:] == ["green", True, True]}
    assert live == mirrored == set(ids)
    w.alice.deployments.wait_ready(w.project, "green", timeout=120)


def _wait_rows(w: World, sql: str, want: int, timeout: float = 30.0) -> list[list[Any]]:
    """The query's rows once the prediction log has been flushed far enough (it writes every few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = w.alice.datasets.query(w.project, sql).rows
        except (NotFound, InvalidInput):
            found = []
        if len(found) >= want or time.monotonic() > deadline:
            assert len(found) >= want, f"{len(found)} of {want} rows logged: {sql}"
            return found
        time.sleep(0.5)


def test_blue_green_switch_and_rollback(world: World) -> None:
    w = world
    w.alice.routes.create(w.project, "bg", "blue")
    w.alice.routes.switch(w.project, "bg", "green", reason="green is better")
    assert {w.alice.routes.predict(w.project, "bg", r).target for r in rows(20, 3)} == {"green"}
    w.alice.routes.rollback(w.project, "bg", reason="it was not")
    assert {w.alice.routes.predict(w.project, "bg", r).target for r in rows(20, 4)} == {"blue"}
    assert [h.action for h in w.alice.routes.history(w.project, "bg")] == ["rollback", "switch", "create"]


def test_a_killed_deployment_is_restarted_and_its_route_recovers(world: World) -> None:
    w = world
    w.alice.routes.create(w.project, "fragile", "green")
    row = rows(1, 9)[0]
    assert w.alice.routes.predict(w.project, "fragile", row).target == "green"
    before = w.alice.deployments.get(w.project, "green").restarts
    pid, _ = w.pid_and_port("green")
    os.kill(pid, signal.SIGKILL)
    outcomes: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            w.alice.routes.predict(w.project, "fragile", row)
            outcomes.append("ok")
            if "503" in outcomes:
                break
        except ServiceUnavailable as e:
            assert "deployment 'green' of route 'fragile' did not answer" in e.message
            outcomes.append("503")
        time.sleep(0.2)
    assert "503" in outcomes, "requests fail with 503 while the deployment is down"
    assert outcomes[-1] == "ok", f"the route did not recover: {outcomes[-5:]}"
    after = w.alice.deployments.get(w.project, "green")
    assert after.state == "ready" and after.restarts == before + 1
    assert w.pid_and_port("green")[0] != pid


def test_callers_and_requests_that_may_not_pass(world: World) -> None:
    w = world
    w.alice.routes.create(w.project, "guarded", "blue")
    row = rows(1)[0]
    with pytest.raises(NotFound, match=f"project '{w.project}' not found"):
        w.bob.routes.predict(w.project, "guarded", row)
    with pytest.raises(PermissionDenied):
        w.vera.routes.predict(w.project, "guarded", row)
    with pytest.raises(NotFound, match="route 'nope' not found"):
        w.alice.routes.predict(w.project, "nope", row)
    with pytest.raises(InvalidInput, match=r"rows\[0\]\.x2: expected a whole number \(long\), got str"):
        w.alice.routes.predict(w.project, "guarded", {"x1": 0.5, "x2": "three"})
    with pytest.raises(InvalidInput, match=r"rows\[1\]\.x1: missing"):
        w.alice.routes.predict(w.project, "guarded", [row, {"x2": 1}])
    with pytest.raises(InvalidInput, match="must add up to 100"):
        w.alice.routes.set(w.project, "guarded", {"blue": 60, "green": 60})
    with pytest.raises(PayloadTooLarge):
        w.alice.routes.predict(w.project, "guarded", {"x1": 1.0, "x2": 1, "pad": "x" * 11_000_000})
    r = httpx.post(
        f"{w.stack.url}/api/v1/projects/{w.project}/routes/guarded/predict",
        content=b'{"rows": [{"x1": ',
        headers={"Authorization": f"Bearer {w.alice.token}", "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and "malformed JSON" in r.json()["error"]["message"]


def test_every_prediction_is_logged_and_labels_attach_later(world: World) -> None:
    w = world
    w.alice.routes.create(w.project, "logged", "blue")
    answers = [w.alice.routes.predict(w.project, "logged", rows(2, i)) for i in range(5)]
    w.alice.routes.feedback(w.project, "logged", {answers[0].request_id: 1, answers[1].request_id: 0})
    logged = _wait_rows(
        w, "SELECT request_id, row, target, model_version, prediction FROM predictions_logged ORDER BY ts, row", 10
    )
    assert [r[0] for r in logged[::2]] == [a.request_id for a in answers]
    assert {(r[2], r[3]) for r in logged} == {("blue", 1)}
    assert [int(r[4]) for r in logged[:2]] == answers[0].predictions
    labels = _wait_rows(w, "SELECT request_id, label FROM feedback_logged ORDER BY label DESC", 2)
    assert labels == [[answers[0].request_id, "1"], [answers[1].request_id, "0"]]
    joined = w.alice.datasets.query(
        w.project,
        "SELECT p.prediction, f.label FROM predictions_logged p JOIN feedback_logged f USING (request_id) "
        "WHERE p.row = 0",
    )
    assert len(joined.rows) == 2


def test_the_cli_deploys_predicts_and_stops_a_deployment(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands people type, on real deployments: create waits until BentoML answers, predict prints
    the answer, delete stops the process."""
    import json

    from typer.testing import CliRunner

    from selfserve.cli import app

    w = world
    monkeypatch.setenv("SELFSERVE_URL", w.stack.url)
    monkeypatch.setenv("SELFSERVE_TOKEN", w.alice.token or "")

    def run(*args: str, code: int = 0) -> Any:
        r = CliRunner().invoke(app, list(args))
        assert r.exit_code == code, f"selfserve {' '.join(args)} -> {r.exit_code}\n{r.output}"
        return r

    made = run("deployment", "create", w.project, "cli-dep", "--model", "clf@2")
    assert "deployment cli-dep of model clf version 2 (clf@2): ready" in made.stdout
    run("route", "create", w.project, "by-cli", "--to", "cli-dep")
    row = rows(1, 11)[0]
    answer = json.loads(run("predict", w.project, "by-cli", "--json", json.dumps({"rows": [row]})).stdout)
    assert (answer["target"], answer["model_version"]) == ("cli-dep", 2)
    assert answer["predictions"] == w.models[2].predict(pd.DataFrame([row])[FEATURES]).tolist()
    printed = run("predict", w.project, "by-cli", json.dumps(row)).stdout
    assert printed.startswith("request ") and "answered by cli-dep (model clf version 2)" in printed
    assert "cli-dep" in run("route", "stats", w.project, "by-cli").stdout
    assert run("deployment", "logs", w.project, "cli-dep", "--tail", "20").stdout.strip()
    _, port = w.pid_and_port("cli-dep")
    run("deployment", "delete", w.project, "cli-dep", code=1)  # the route still uses it
    run("route", "delete", w.project, "by-cli", "--yes")
    run("deployment", "delete", w.project, "cli-dep")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
        except httpx.HTTPError:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"port {port} still answers after the deployment was deleted")
    assert [d.name for d in w.alice.deployments.list(w.project)] == ["blue", "green"]


def test_a_route_fills_rows_from_a_feature_view(world: World, tmp_path: Any) -> None:
    """``{"customer_id": 3}`` is enough: the route looks the customer's features up in the online store,
    and a new version of the dataset reaches the store without anyone asking."""
    import pyarrow as pa

    from tests.support import upload_table

    w = world
    features = frame(50, 21).assign(customer_id=range(50), churned=0)
    upload_table(w.alice, w.project, "customer-features", pa.Table.from_pandas(features), tmp_path)
    view = w.alice.features.create(w.project, "customers", dataset="customer-features", key="customer_id")
    assert (view.state, view.rows) == ("ready", 50)
    w.alice.routes.create(w.project, "by-key", "blue", feature_view="customers")

    answer = w.alice.routes.predict(w.project, "by-key", [{"customer_id": 3}, {"customer_id": 7, "x1": 9.0}])
    expected_rows = features.iloc[[3, 7]][FEATURES].copy()
    expected_rows.loc[expected_rows.index[1], "x1"] = 9.0
    assert answer.predictions == w.models[1].predict(expected_rows).tolist()
    with pytest.raises(InvalidInput, match=r"rows\[0\]\.customer_id: 999 is not in feature view 'customers'"):
        w.alice.routes.predict(w.project, "by-key", {"customer_id": 999})
    with pytest.raises(InvalidInput, match=r"rows\[0\]\.customer_id: missing"):
        w.alice.routes.predict(w.project, "by-key", {"x1": 1.0})

    # A new version (customer 3 moves far up) is materialized by itself within seconds.
    moved = features.assign(x1=features["x1"] + np.where(features["customer_id"] == 3, 50.0, 0.0))
    version = upload_table(
        w.alice, w.project, "customer-features", pa.Table.from_pandas(moved), tmp_path, mode="overwrite"
    )
    deadline = time.monotonic() + 30
    while w.alice.features.get(w.project, "customers").materialized_version != version.version:
        assert time.monotonic() < deadline, "the view did not follow the dataset's new version"
        time.sleep(0.5)
    assert w.alice.features.lookup(w.project, "customers", 3).values["x1"] == pytest.approx(moved.iloc[3]["x1"])
    again = w.alice.routes.predict(w.project, "by-key", {"customer_id": 3})
    assert again.predictions == w.models[1].predict(moved.iloc[[3]][FEATURES]).tolist()


def _wait_run(w: World, flow_run_id: str, timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = w.alice.runs.get(w.project, flow_run_id)
        if run.state in ("completed", "failed", "crashed", "cancelled"):
            return run
        assert time.monotonic() < deadline, f"monitor run still {run.state}"
        time.sleep(1.0)


def test_a_monitor_flags_the_shifted_column_and_alerts(world: World, tmp_path: Any) -> None:
    """The monitor flow on the real stack: the route's logged inputs against the training data, one
    column shifted; the run is kept with its report, and the drift raises an alert."""
    import pyarrow as pa

    from tests.support import upload_table

    w = world
    reference = frame(1000, 31).assign(churned=0)
    upload_table(w.alice, w.project, "training-data", pa.Table.from_pandas(reference), tmp_path)
    w.alice.routes.create(w.project, "watched", "blue")
    live = frame(300, 32)
    live["x1"] = live["x1"] + 3.0  # far outside the reference
    answers = [w.alice.routes.predict(w.project, "watched", live.iloc[i : i + 10].to_dict(orient="records"))
               for i in range(0, 300, 10)]  # fmt: skip
    w.alice.routes.feedback(w.project, "watched", {a.request_id: 1 for a in answers})
    _wait_rows(w, "SELECT count(*) FROM predictions_watched HAVING count(*) >= 300", 1)
    w.alice.monitors.create(
        w.project, "watched", reference="training-data", label="churned", window_seconds=3600, drift_share=0.5
    )
    run = _wait_run(w, w.alice.monitors.run(w.project, "watched"))
    assert run.state == "completed", w.alice.runs.logs(w.project, run.id).lines[-10:]
    (result,) = w.alice.monitors.runs(w.project, "watched")
    assert (result.status, result.rows_current, result.rows_reference) == ("drift", 300, 1000)
    assert {c for c, v in result.columns.items() if v["drifted"]} == {"x1"}
    assert result.has_report and result.drift_share == pytest.approx(0.5)
    (alert,) = w.alice.alerts.list(w.project, route="watched")
    assert alert.kind == "drift" and alert.run_id == result.id and "x1" in alert.message
    html = w.alice.monitors.report(w.project, "watched", tmp_path / "report.html").read_text()
    assert "<html" in html.lower() and "x1" in html


def test_a_monitor_on_a_route_without_traffic_reports_no_data(world: World, tmp_path: Any) -> None:
    import pyarrow as pa

    from tests.support import upload_table

    w = world
    upload_table(w.alice, w.project, "quiet-reference", pa.Table.from_pandas(frame(200, 33)), tmp_path)
    w.alice.routes.create(w.project, "quiet", "blue")
    w.alice.monitors.create(w.project, "quiet", reference="quiet-reference@0", window_seconds=600)
    run = _wait_run(w, w.alice.monitors.run(w.project, "quiet"))
    assert run.state == "completed", w.alice.runs.logs(w.project, run.id).lines[-10:]
    (result,) = w.alice.monitors.runs(w.project, "quiet")
    assert (result.status, result.drift_share, result.rows_current) == ("no_data", None, 0)
    assert w.alice.alerts.list(w.project, route="quiet") == []
