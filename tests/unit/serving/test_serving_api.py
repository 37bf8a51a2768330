"""Routes, the gateway's refusals and the prediction log through the API, on a fresh control plane.

No BentoML here: deployments are rows in the state the serving runtime leaves them in (the real
runtime and real BentoML processes are in tests/integration/serving). A deployment that is not
ready is what the gateway must answer 503 for, so that path is real here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from selfserve import Client, Conflict, InvalidInput, NotFound, PermissionDenied
from selfserve.errors import PayloadTooLarge, QuotaExceeded, RateLimited, ServiceUnavailable, Unauthenticated
from tests.support import Platform, add_deployment


@dataclass
class World:
    platform: Platform
    admin: Client
    alice: Client  # owner of p
    vera: Client  # viewer of p
    bob: Client  # owner of q, nothing in p
    p: str
    q: str


@pytest.fixture
def world(platform: Platform) -> Iterator[World]:
    admin = platform.admin()
    alice, vera, bob = (platform.user(n, admin_client=admin) for n in ("alice", "vera", "bob"))
    p, q = f"p-{uuid.uuid4().hex[:6]}", f"q-{uuid.uuid4().hex[:6]}"
    alice.projects.create(p)
    bob.projects.create(q)
    alice.members.add(p, "vera", role="viewer")
    admin.quotas.set(p, {"deployments": 3})
    for name in ("v1", "v2", "v3"):
        add_deployment(platform, p, name)
    yield World(platform, admin, alice, vera, bob, p, q)


def test_route_lifecycle_with_history_and_rollback(world: World) -> None:
    a, p = world.alice, world.p
    created = a.routes.create(p, "score", "v1")
    assert (created.spec.targets, created.revision) == ({"v1": 100}, 1)
    assert created.predict_path == f"/api/v1/projects/{p}/routes/score/predict"
    a.routes.set(p, "score", {"v1": 90, "v2": 10})
    a.routes.set(p, "score", {"v1": 50, "v2": 50}, sticky_key="customer_id", shadow="v3")
    switched = a.routes.switch(p, "score", "v2", reason="v2 wins")
    assert switched.spec.targets == {"v2": 100}
    assert (switched.spec.sticky_key, switched.spec.shadow) == ("customer_id", "v3"), "switch keeps key and shadow"
    back = a.routes.rollback(p, "score", reason="oops")
    assert back.spec.targets == {"v1": 50, "v2": 50} and back.revision == 5
    history = a.routes.history(p, "score")
    assert [(h.revision, h.action) for h in history] == [
        (5, "rollback"),
        (4, "switch"),
        (3, "set"),
        (2, "set"),
        (1, "create"),
    ]
    assert (history[0].reason, history[0].actor) == ("oops", "alice")
    assert [r.name for r in a.routes.list(p)] == ["score"]
    # The deployments know who uses them; one in use cannot be deleted.
    assert {d.name: d.routes for d in a.deployments.list(p)} == {"v1": ["score"], "v2": ["score"], "v3": ["score"]}
    with pytest.raises(Conflict, match="in use by route"):
        a.deployments.delete(p, "v1")
    a.routes.delete(p, "score")
    a.deployments.delete(p, "v1")
    assert [d.name for d in a.deployments.list(p)] == ["v2", "v3"]
    assert {i.resource: i.amount for i in a.quotas.usage(p).items}["deployments"] == 2
    audit = {e.action for e in world.admin.audit.list(p, limit=100)}
    assert {"route:create", "route:set", "route:switch", "route:rollback", "route:delete", "deployment:delete"} <= audit


def test_route_changes_that_cannot_work_are_refused(world: World) -> None:
    a, p = world.alice, world.p
    with pytest.raises(InvalidInput, match="no deployment 'nope'"):
        a.routes.create(p, "score", {"v1": 50, "nope": 50})
    with pytest.raises(InvalidInput, match="must add up to 100, not 110"):
        a.routes.create(p, "score", {"v1": 90, "v2": 20})
    with pytest.raises(InvalidInput, match="no feature view 'customers'"):
        a.routes.create(p, "score", "v1", feature_view="customers")
    a.routes.create(p, "score", "v1")
    with pytest.raises(Conflict, match="already exists"):
        a.routes.create(p, "score", "v2")
    with pytest.raises(Conflict, match="nothing to roll back to"):
        a.routes.rollback(p, "score")
    with pytest.raises(InvalidInput, match="is also a target"):
        a.routes.set(p, "score", {"v1": 100}, shadow="v1")
    with pytest.raises(NotFound, match="route 'other' not found"):
        a.routes.get(p, "other")
    assert a.routes.get(p, "score").revision == 1, "nothing refused was recorded"


def test_roles_and_projects_bound_what_callers_reach(world: World) -> None:
    a, p = world.alice, world.p
    a.routes.create(p, "score", "v1")
    # A viewer reads routes and deployments, changes nothing, and may not predict.
    assert world.vera.routes.get(p, "score").name == "score"
    assert [d.name for d in world.vera.deployments.list(p)] == ["v1", "v2", "v3"]
    with pytest.raises(PermissionDenied):
        world.vera.routes.set(p, "score", "v2")
    with pytest.raises(PermissionDenied):
        world.vera.routes.predict(p, "score", {"age": 1, "income": 2.0})
    with pytest.raises(PermissionDenied):
        world.vera.deployments.delete(p, "v2")
    # Another project's owner does not learn the project exists.
    for call in (
        lambda: world.bob.routes.get(p, "score"),
        lambda: world.bob.routes.predict(p, "score", {"age": 1, "income": 2.0}),
        lambda: world.bob.deployments.get(p, "v1"),
        lambda: world.bob.routes.feedback(p, "score", {"r1": 1}),
    ):
        with pytest.raises(NotFound, match=f"project '{p}' not found"):
            call()
    # A token scoped to q does not reach p even for a member of both.
    world.alice.members.add(p, "bob", role="engineer")
    scoped = world.platform.client(world.bob.tokens.create("q-only", project=world.q).token)
    with pytest.raises(NotFound):
        scoped.routes.predict(p, "score", {"age": 1, "income": 2.0})
    with pytest.raises(Unauthenticated):
        world.platform.client("ss_nope").routes.predict(p, "score", {"age": 1})


def test_bad_predict_requests_get_clear_errors(world: World) -> None:
    a, p = world.alice, world.p
    a.routes.create(p, "score", "v1")
    with pytest.raises(NotFound, match="route 'nothere' not found"):
        a.routes.predict(p, "nothere", {"age": 1, "income": 2.0})
    with pytest.raises(InvalidInput, match="rows"):
        a.routes.predict(p, "score", [])
    with pytest.raises(InvalidInput, match=r"rows\[0\]\.income: expected a number \(double\), got str"):
        a.routes.predict(p, "score", {"age": 1, "income": "lots"})
    with pytest.raises(InvalidInput, match=r"rows\[1\]\.age: missing"):
        a.routes.predict(p, "score", [{"age": 1, "income": 2.0}, {"income": 2.0}])
    with pytest.raises(InvalidInput, match=r"rows\[0\]\.zip: not an input"):
        a.routes.predict(p, "score", {"age": 1, "income": 2.0, "zip": "x"})
    too_many = [{"age": 1, "income": 2.0}] * (world.platform.settings.serving.max_rows + 1)
    with pytest.raises(InvalidInput, match="at most"):
        a.routes.predict(p, "score", too_many)
    http = httpx.Client(base_url="http://selfserve.test", transport=world.platform.transport)
    headers = {"Authorization": f"Bearer {a.token}", "Content-Type": "application/json"}
    path = f"/api/v1/projects/{p}/routes/score/predict"
    huge = (
        b'{"rows": [{"age": 1, "income": 2.0, "pad": "'
        + b"x" * (world.platform.settings.server.max_body_bytes)
        + b'"}]}'
    )
    r = http.post(path, content=huge, headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = http.post(path, content=b'{"rows": [', headers=headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    with pytest.raises(PayloadTooLarge):
        a._request("routes.predict", project=p, name="score", json={"rows": [{"x": "y" * 11_000_000}]})


def test_a_target_that_is_not_ready_answers_503_and_is_logged(world: World) -> None:
    a, p = world.alice, world.p
    a.routes.create(p, "score", "v1")
    with pytest.raises(ServiceUnavailable, match="deployment 'v1' of route 'score' did not answer: it is starting"):
        a.routes.predict(p, "score", [{"age": 1, "income": 2.0}, {"age": 2, "income": 3.0}])
    assert a.routes.feedback(p, "score", {"abc123": 1, "def456": "yes"}).accepted == 2
    predlog = world.platform.app.state.gateway.predlog
    assert predlog.flush() == 4
    logged = a.datasets.query(p, "SELECT row, target, ok, error, inputs FROM predictions_score ORDER BY row")
    assert [r[:3] for r in logged.rows] == [[0, "v1", False], [1, "v1", False]]
    assert "it is starting" in logged.rows[0][3] and '"income":3.0' in logged.rows[1][4]
    labels = a.datasets.query(p, "SELECT request_id, label FROM feedback_score ORDER BY request_id")
    assert labels.rows == [["abc123", "1"], ["def456", '"yes"']]
    stats = a.routes.stats(p, "score")
    assert [(t.target, t.requests, t.errors) for t in stats.targets] == [("v1", 1, 1)]


def test_the_requests_per_minute_quota_is_enforced(world: World) -> None:
    a, p = world.alice, world.p
    a.routes.create(p, "score", "v1")
    world.admin.quotas.set(p, {"rpm": 2})
    world.platform.app.state.gateway.forget(p)
    for _ in range(2):
        with pytest.raises(ServiceUnavailable):
            a.routes.predict(p, "score", {"age": 1, "income": 2.0})
    with pytest.raises(RateLimited, match="over its quota of 2 requests per minute"):
        a.routes.predict(p, "score", {"age": 1, "income": 2.0})


def test_the_deployments_quota_holds(world: World) -> None:
    with pytest.raises(QuotaExceeded, match="deployments quota exceeded"):
        world.alice.deployments.create(world.p, "v4", "clf@champion")


def test_metrics_are_for_admins(world: World) -> None:
    a, p = world.alice, world.p
    a.routes.create(p, "score", "v1")
    with pytest.raises(ServiceUnavailable):
        a.routes.predict(p, "score", {"age": 1, "income": 2.0})
    with pytest.raises(PermissionDenied):
        a.routes.metrics()
    text = world.admin.routes.metrics()
    assert f'selfserve_route_errors_total{{project="{p}",route="score",shadow="false",target="v1"}} 1.0' in text
