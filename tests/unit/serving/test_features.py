"""Feature views: the online stores (SQLite, and the local Redis on 127.0.0.1:6379), materializing,
the lookup path, the API through the SDK, FeatureSync and the CLI.

What must hold: a switch to a new version is atomic (a reader never sees a mix, and the version it
is told is the one its values come from) and drops the old rows; keys are found whatever type the
request gives them in; duplicate and null keys are refused; values are JSON (dates as ISO text,
NaN as null); only members read a view, and only writers change one.
"""

from __future__ import annotations

import datetime as dt
import decimal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import redis
from typer.testing import CliRunner

from selfserve.client import Client
from selfserve.errors import Conflict, InvalidInput, NotFound, PermissionDenied, ServiceUnavailable
from selfserve.server import API_PREFIX
from selfserve.serving import features
from selfserve.serving.features import (
    FeatureSync,
    OnlineFeatures,
    OnlineStore,
    RedisOnlineStore,
    SQLiteOnlineStore,
    StoredView,
    check_key,
    encode_rows,
    lookup_key,
    online_store_from,
)
from selfserve.settings import Settings
from tests.support import LiveServer, Platform, upload_table

REDIS_URL = "redis://127.0.0.1:6379/0"
PROJECT = "churn"
LOOKUP_PATH = f"{API_PREFIX}/projects/{{project}}/features/{{name}}/{{key}}"


# -- fixtures ----------------------------------------------------------------------------------------


def _redis_store() -> RedisOnlineStore:
    """A Redis store under a prefix of its own, so that tests and other users of the server never meet."""
    return RedisOnlineStore(REDIS_URL, prefix=f"ss-test:{uuid.uuid4().hex[:12]}:fv")


def _clean(store: OnlineStore) -> None:
    if isinstance(store, RedisOnlineStore):
        r = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(r.scan_iter(match=f"{store.prefix}:*"))
            if keys:
                r.delete(*keys)
        finally:
            r.close()
    store.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def online(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    """An empty online store of each kind."""
    store: OnlineStore = SQLiteOnlineStore(tmp_path / "online") if request.param == "sqlite" else _redis_store()
    try:
        yield store
    finally:
        _clean(store)


def wire(platform: Platform, online: OnlineStore | None = None) -> OnlineFeatures:
    """Give the app its feature views as ``create_app`` does: the router and ``app.state.features``.

    An app that serves them already keeps its own, unless ``online`` asks for another store (a
    Redis store under a prefix of the test's own)."""
    from selfserve.server.routes import features as routes

    app = platform.app
    served = {getattr(r, "path", None) for r in app.routes}
    if LOOKUP_PATH not in served:
        app.include_router(routes.router, prefix=API_PREFIX)
    current: OnlineFeatures | None = getattr(app.state, "features", None)
    if current is not None and online is None:
        return current
    if current is not None:
        current.close()
    app.state.features = OnlineFeatures(platform.settings, platform.store, online)
    return app.state.features  # type: ignore[no-any-return]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def fplatform(request: pytest.FixtureRequest, sqlite_platform: Platform) -> Iterator[Platform]:
    """A platform serving feature views from SQLite under its home, or from the local Redis."""
    online = _redis_store() if request.param == "redis" else None
    fs = wire(sqlite_platform, online)
    try:
        yield sqlite_platform
    finally:
        _clean(fs.online)


@pytest.fixture
def splatform(sqlite_platform: Platform) -> Iterator[Platform]:
    """A platform serving feature views from SQLite, for tests whose subject is not the store."""
    fs = wire(sqlite_platform)
    try:
        yield sqlite_platform
    finally:
        fs.close()


def customers(ids: list[int]) -> pa.Table:
    return pa.table(
        {
            "customer_id": ids,
            "plan": [f"plan-{i}" for i in ids],
            "monthly_fee": [float(i) + 0.5 for i in ids],
            "signup": [dt.date(2024, 1, 1) + dt.timedelta(days=i % 300) for i in ids],
        }
    )


def project_id(platform: Platform, name: str = PROJECT) -> int:
    from sqlalchemy import select

    from selfserve.store.tables import Project

    with platform.store.session() as s:
        found = s.scalar(select(Project.id).where(Project.name == name))
    assert found is not None
    return found


@pytest.fixture
def owner(sqlite_platform: Platform) -> Client:
    admin = sqlite_platform.admin()
    alice = sqlite_platform.user("alice", admin_client=admin)
    alice.projects.create(PROJECT)
    return alice


def upload(client: Client, table: pa.Table, tmp_path: Path, name: str = "customer-features", **kw: Any) -> Any:
    return upload_table(client, PROJECT, name, table, tmp_path / "uploads", **kw)


def sync_of(platform: Platform) -> FeatureSync:
    return FeatureSync(platform.app.state.features, platform.app.state.object_store, interval=0.05)


# -- keys and values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "key_type", "want"),
    [
        ("42", "int", "42"),
        (42, "int", "42"),
        (" 042 ", "int", "42"),
        (42.0, "int", "42"),
        ("42.0", "int", "42"),
        ("42.5", "int", None),
        ("abc", "int", None),
        (True, "int", None),
        ("0.50", "float", "0.5"),
        (2, "float", "2.0"),
        ("nan", "float", None),
        ("true", "bool", "true"),
        (0, "bool", "false"),
        ("maybe", "bool", None),
        ("42", "str", "42"),
        (42, "str", "42"),
        ("2024-05-01", "text", "2024-05-01"),
        (dt.date(2024, 5, 1), "text", "2024-05-01"),
        ("42", None, "42"),
    ],
)
def test_a_key_is_found_whatever_type_the_request_gives_it_in(key: Any, key_type: Any, want: str | None) -> None:
    assert lookup_key(key, key_type) == want


def test_rows_are_json_with_iso_dates_and_null_for_nan() -> None:
    table = pa.table(
        {
            "id": [1, 2],
            "score": [float("nan"), float("inf")],
            "day": [dt.date(2024, 5, 1), None],
            "at": pa.array([dt.datetime(2024, 5, 1, 12, 30), None], pa.timestamp("us", tz="UTC")),
            "amount": pa.array([decimal.Decimal("1.25"), None], pa.decimal128(5, 2)),
            "tags": [["a", "b"], []],
        }
    )
    [batch] = list(encode_rows(table, "id", "int"))
    assert [k for k, _ in batch] == ["1", "2"]
    import json

    first, second = (json.loads(v) for _, v in batch)
    assert first == {
        "score": None,
        "day": "2024-05-01",
        "at": "2024-05-01T12:30:00+00:00",
        "amount": 1.25,
        "tags": ["a", "b"],
    }
    assert second == {"score": None, "day": None, "at": None, "amount": None, "tags": []}


def test_duplicate_null_and_nan_keys_are_refused_with_the_reason() -> None:
    with pytest.raises(InvalidInput, match=r"key customer_id has 2 duplicate values, e\.g\. (42|7)"):
        check_key(pa.table({"customer_id": [42, 42, 7, 7, 1]}), "customer_id")
    with pytest.raises(InvalidInput, match="key customer_id has 1 duplicate value, e.g. 42$"):
        check_key(pa.table({"customer_id": [42, 42, 1]}), "customer_id")
    with pytest.raises(InvalidInput, match="key id has 2 null values"):
        check_key(pa.table({"id": [1, None, None]}), "id")
    with pytest.raises(InvalidInput, match="key x has 1 NaN value"):
        check_key(pa.table({"x": [1.0, float("nan")]}), "x")
    with pytest.raises(InvalidInput, match="no column 'nope'; its columns: id"):
        check_key(pa.table({"id": [1]}), "nope")
    with pytest.raises(InvalidInput, match="cannot be a key"):
        check_key(pa.table({"id": [[1], [2]]}), "id")
    assert check_key(pa.table({"id": ["a", "b"]}), "id") == "str"
    assert check_key(pa.table({"id": pa.array([1, 2], pa.int32())}), "id") == "int"
    assert check_key(pa.table({"id": [dt.date(2024, 1, 1)]}), "id") == "text"


# -- the online stores -------------------------------------------------------------------------------


def rows(version: int, n: int) -> list[tuple[str, str]]:
    return [(str(i), f'{{"v": {version}, "i": {i}}}') for i in range(n)]


def test_write_then_read_many_keys(online: OnlineStore) -> None:
    assert online.read(1, 1, ["1"]) is None
    assert online.meta(1, 1) is None
    assert online.write(1, 1, 3, "int", [rows(3, 600), rows(3, 1200)[600:]]) == 1200
    assert online.meta(1, 1) == StoredView(3, "int", 1200)
    keys = [str(i) for i in range(0, 1300, 7)]  # more than one SQL IN list or script call
    got = online.read(1, 1, keys)
    assert got is not None
    stored, values = got
    assert stored == StoredView(3, "int", 1200)
    assert values == [f'{{"v": 3, "i": {k}}}' if int(k) < 1200 else None for k in keys]
    assert online.read(1, 1, []) == (stored, [])
    assert online.read(1, 2, ["1"]) is None and online.read(2, 1, ["1"]) is None  # views and projects stay apart
    assert online.views() == {(1, 1)}


def test_a_new_version_replaces_the_old_and_drops_it(online: OnlineStore) -> None:
    online.write(7, 3, 0, "int", [rows(0, 50)])
    online.write(7, 3, 1, "str", [rows(1, 10)])
    got = online.read(7, 3, ["1", "20"])
    assert got == (StoredView(1, "str", 10), ['{"v": 1, "i": 1}', None])
    assert stored_generations(online, 7, 3) == 1

    online.drop(7, 3)
    assert online.read(7, 3, ["1"]) is None and online.views() == set()
    assert stored_generations(online, 7, 3) == 0
    online.drop(7, 3)  # nothing left: no error


def stored_generations(online: OnlineStore, project_id: int, view_id: int) -> int:
    """How many versions of a view the store keeps (tables in SQLite, hashes in Redis)."""
    if isinstance(online, SQLiteOnlineStore):
        import sqlite3

        path = online.root / f"{project_id}.sqlite"
        if not path.exists():
            return 0
        with sqlite3.connect(path) as conn:
            names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        conn.close()
        return sum(1 for n in names if n.startswith(f"fv_{view_id}_"))
    assert isinstance(online, RedisOnlineStore)
    r = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [k.decode() for k in r.scan_iter(match=f"{online.prefix}:{project_id}:{view_id}:*")]
        return sum(1 for k in keys if not k.endswith(":gens"))
    finally:
        r.close()


def test_a_failed_write_keeps_the_old_version(online: OnlineStore) -> None:
    online.write(1, 1, 0, "int", [rows(0, 5)])

    def broken() -> Iterator[list[tuple[str, str]]]:
        yield rows(1, 3)
        raise RuntimeError("the dataset went away")

    with pytest.raises(RuntimeError):
        online.write(1, 1, 1, "int", broken())
    got = online.read(1, 1, ["4"])
    assert got == (StoredView(0, "int", 5), ['{"v": 0, "i": 4}'])
    assert stored_generations(online, 1, 1) == 1


def test_a_write_cleans_up_after_one_that_was_killed(online: OnlineStore) -> None:
    online.write(1, 1, 0, "int", [rows(0, 5)])
    if isinstance(online, SQLiteOnlineStore):
        import sqlite3

        with sqlite3.connect(online.root / "1.sqlite") as conn:
            conn.execute("CREATE TABLE fv_1_deadbeef (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.close()
    else:
        assert isinstance(online, RedisOnlineStore)
        r = redis.Redis.from_url(REDIS_URL)
        r.sadd(f"{online.prefix}:1:1:gens", "deadbeef")
        r.hset(f"{online.prefix}:1:1:deadbeef", "1", "{}")
        r.close()
    assert stored_generations(online, 1, 1) == 2
    online.write(1, 1, 1, "int", [rows(1, 5)])
    assert stored_generations(online, 1, 1) == 1


def test_readers_never_see_a_half_written_version(online: OnlineStore) -> None:
    """While versions are written one after another, every read gets the rows of the one version it is told."""
    n = 2000
    online.write(1, 1, 0, "int", [rows(0, n)])
    keys = [str(i) for i in range(0, n, 97)] + ["1999"]
    stop = threading.Event()
    problems: list[str] = []
    seen: set[int] = set()

    def reader() -> None:
        while not stop.is_set():
            got = online.read(1, 1, keys)
            assert got is not None
            stored, values = got
            seen.add(stored.version)
            versions = {int(v.split('"v": ')[1].split(",")[0]) if v else None for v in values}
            if versions != {stored.version}:
                problems.append(f"version {stored.version} read values of {versions}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for version in range(1, 6):
            online.write(1, 1, version, "int", [rows(version, n)[i : i + 250] for i in range(0, n, 250)])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not problems, problems[:5]
    assert len(seen) >= 2
    assert stored_generations(online, 1, 1) == 1


def test_the_settings_choose_the_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = online_store_from(Settings(home=home))
    assert isinstance(store, SQLiteOnlineStore) and store.root == home / "online"
    assert not (home / "online").exists()  # nothing is created before the first write
    redis_store = online_store_from(Settings(home=home, serving={"redis_url": REDIS_URL}))  # type: ignore[arg-type]
    assert isinstance(redis_store, RedisOnlineStore)
    redis_store.close()
    forced = online_store_from(Settings(home=home, serving={"online_store": "sqlite", "redis_url": REDIS_URL}))  # type: ignore[arg-type]
    assert isinstance(forced, SQLiteOnlineStore)
    with pytest.raises(InvalidInput, match="redis_url is not set"):
        online_store_from(Settings(home=home, serving={"online_store": "redis"}))  # type: ignore[arg-type]


@pytest.mark.integration
def test_an_unreachable_redis_is_a_503_that_hides_the_password() -> None:
    from tests.support import free_port

    store = RedisOnlineStore(f"redis://user:s3cret@127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        with pytest.raises(ServiceUnavailable) as e:
            store.read(1, 1, ["1"])
        assert "s3cret" not in e.value.message and "***" in e.value.message
    finally:
        store.close()


# -- views through the API ---------------------------------------------------------------------------


def test_create_materializes_and_lookup_reads_by_key(fplatform: Platform, owner: Client, tmp_path: Path) -> None:
    table = customers([42, 7, 1000]).append_column("score", pa.array([float("nan"), 0.25, None]))
    upload(owner, table, tmp_path)
    view = owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    kind = fplatform.app.state.features.kind
    assert (view.name, view.state, view.materialized_version, view.rows, view.store) == (
        "customers",
        "ready",
        0,
        3,
        kind,
    )
    assert view.materialized_at is not None and view.last_error is None and view.created_by == "alice"

    row = owner.features.lookup(PROJECT, "customers", 42)
    assert (row.view, row.key, row.version) == ("customers", "42", 0)
    assert row.values == {"plan": "plan-42", "monthly_fee": 42.5, "signup": "2024-02-12", "score": None}
    assert owner.features.lookup(PROJECT, "customers", "0007").values["plan"] == "plan-7"

    with pytest.raises(NotFound, match="key '8' not found in feature view 'customers'"):
        owner.features.lookup(PROJECT, "customers", 8)
    with pytest.raises(NotFound, match="key 'abc' not found.*customer_id is an integer column"):
        owner.features.lookup(PROJECT, "customers", "abc")
    with pytest.raises(NotFound, match="feature view 'nope' not found"):
        owner.features.lookup(PROJECT, "nope", 42)

    assert [v.name for v in owner.features.list(PROJECT)] == ["customers"]
    assert owner.features.get(PROJECT, "customers") == view


def test_the_gateway_reads_many_keys_at_once(splatform: Platform, owner: Client, tmp_path: Path) -> None:
    upload(owner, customers([1, 2, 3]), tmp_path)
    owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    fs: OnlineFeatures = splatform.app.state.features
    pid = project_id(splatform)
    key, version, values = fs.lookup_many(pid, "customers", ["1", 2, 3.0, "9", "x", "1"])
    assert (key, version) == ("customer_id", 0)
    assert [v["plan"] if v else None for v in values] == ["plan-1", "plan-2", "plan-3", None, None, "plan-1"]
    assert fs.key_of(pid, "customers") == "customer_id"
    with pytest.raises(NotFound):
        fs.lookup_many(pid, "nope", ["1"])
    with pytest.raises(NotFound):
        fs.key_of(pid, "nope")


def test_create_refusals(splatform: Platform, owner: Client, tmp_path: Path) -> None:
    upload(owner, customers([1, 2]), tmp_path)
    with pytest.raises(NotFound, match="dataset 'missing' not found"):
        owner.features.create(PROJECT, "customers", dataset="missing", key="customer_id")
    with pytest.raises(InvalidInput, match="no column 'id' to be the key; its columns: customer_id, plan"):
        owner.features.create(PROJECT, "customers", dataset="customer-features", key="id")
    owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    with pytest.raises(Conflict, match="'customers' already exists"):
        owner.features.create(PROJECT, "customers", dataset="customer-features", key="plan")
    with pytest.raises(InvalidInput):
        owner.features.create(PROJECT, "Bad Name", dataset="customer-features", key="plan")
    assert [v.name for v in owner.features.list(PROJECT)] == ["customers"]


def test_duplicate_keys_leave_the_view_failed_with_the_reason(
    splatform: Platform, owner: Client, tmp_path: Path
) -> None:
    upload(owner, customers([42, 42, 42, 1]), tmp_path)
    view = owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    assert (view.state, view.materialized_version, view.rows) == ("failed", None, 0)
    assert view.last_error == "key customer_id has 1 duplicate value, e.g. 42"
    with pytest.raises(Conflict, match="holds no data yet"):
        owner.features.lookup(PROJECT, "customers", 1)
    with pytest.raises(InvalidInput, match="duplicate value"):
        owner.features.materialize(PROJECT, "customers")

    upload(owner, customers([5, 6]), tmp_path, mode="overwrite")
    fixed = owner.features.materialize(PROJECT, "customers")
    assert (fixed.state, fixed.materialized_version, fixed.rows, fixed.last_error) == ("ready", 1, 2, None)
    assert owner.features.lookup(PROJECT, "customers", 6).version == 1


def test_null_keys_are_refused(splatform: Platform, owner: Client, tmp_path: Path) -> None:
    upload(owner, pa.table({"id": [1, None, 3], "x": [1, 2, 3]}), tmp_path, name="t")
    view = owner.features.create(PROJECT, "v", dataset="t", key="id")
    assert view.state == "failed" and view.last_error == "key id has 1 null value; every row needs a key"


def test_string_keys_and_views_without_other_columns(splatform: Platform, owner: Client, tmp_path: Path) -> None:
    upload(owner, pa.table({"code": ["a/b", "007", "x y"]}), tmp_path, name="codes")
    owner.features.create(PROJECT, "codes", dataset="codes", key="code")
    assert owner.features.lookup(PROJECT, "codes", "007").values == {}
    assert owner.features.lookup(PROJECT, "codes", "x y").key == "x y"
    with pytest.raises(NotFound):
        owner.features.lookup(PROJECT, "codes", "7")  # a text key is matched as it is


def test_members_read_writers_change_others_never_learn(splatform: Platform, owner: Client, tmp_path: Path) -> None:
    upload(owner, customers([1, 2]), tmp_path)
    owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    admin = splatform.admin()
    viewer = splatform.user("vera", admin_client=admin)
    owner.members.add(PROJECT, "vera", "viewer")
    assert viewer.features.lookup(PROJECT, "customers", 1).values["plan"] == "plan-1"
    assert [v.name for v in viewer.features.list(PROJECT)] == ["customers"]
    with pytest.raises(PermissionDenied):
        viewer.features.create(PROJECT, "other", dataset="customer-features", key="customer_id")
    with pytest.raises(PermissionDenied):
        viewer.features.materialize(PROJECT, "customers")
    with pytest.raises(PermissionDenied):
        viewer.features.delete(PROJECT, "customers")

    outsider = splatform.user("otto", admin_client=admin)
    with pytest.raises(NotFound, match="project 'churn' not found"):
        outsider.features.lookup(PROJECT, "customers", 1)

    # Alice's token limited to another project of hers reads nothing of this one.
    owner.projects.create("other")
    scoped = splatform.client(owner.tokens.create("scoped", project="other").token)
    with pytest.raises(NotFound, match="project 'churn' not found"):
        scoped.features.lookup(PROJECT, "customers", 1)
    with pytest.raises(NotFound, match="project 'churn' not found"):
        scoped.features.list(PROJECT)


def test_lookup_over_http_and_the_audit_trail(splatform: Platform, owner: Client, tmp_path: Path) -> None:
    upload(owner, customers([1, 2]), tmp_path)
    owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    owner.features.materialize(PROJECT, "customers")
    # Not closed: closing an httpx client closes its transport, which the platform shares.
    http = httpx.Client(base_url="http://selfserve.test", transport=splatform.transport)
    headers = {"Authorization": f"Bearer {owner.token}"}
    ok = http.get(f"{API_PREFIX}/projects/{PROJECT}/features/customers/2", headers=headers)
    assert ok.status_code == 200
    assert ok.json() == {
        "view": "customers",
        "key": "2",
        "version": 0,
        "values": {"plan": "plan-2", "monthly_fee": 2.5, "signup": "2024-01-03"},
    }
    missing = http.get(f"{API_PREFIX}/projects/{PROJECT}/features/customers/3", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert http.get(f"{API_PREFIX}/projects/{PROJECT}/features/customers/2").status_code == 401
    owner.features.delete(PROJECT, "customers")
    actions = [(e.action, e.target) for e in owner.audit.list(project=PROJECT) if e.action.startswith("feature:")]
    assert actions == [
        ("feature:delete", "feature/customers"),
        ("feature:materialize", "feature/customers"),
        ("feature:create", "feature/customers"),
    ]


def test_delete_removes_the_online_rows(fplatform: Platform, owner: Client, tmp_path: Path) -> None:
    upload(owner, customers([1, 2]), tmp_path)
    owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    fs: OnlineFeatures = fplatform.app.state.features
    assert len(fs.online.views()) == 1
    owner.features.delete(PROJECT, "customers")
    assert fs.online.views() == set()
    with pytest.raises(NotFound, match="feature view 'customers' not found"):
        owner.features.lookup(PROJECT, "customers", 1)
    with pytest.raises(NotFound):
        owner.features.delete(PROJECT, "customers")
    # A view created again under the name starts from its dataset, not from the old rows.
    upload(owner, customers([3]), tmp_path, mode="overwrite")
    again = owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    assert (again.materialized_version, again.rows) == (1, 1)
    with pytest.raises(NotFound):
        owner.features.lookup(PROJECT, "customers", 1)


def test_a_view_a_route_reads_from_is_not_deleted(splatform: Platform, owner: Client, tmp_path: Path) -> None:
    from selfserve.store.tables import ServingRoute

    upload(owner, customers([1]), tmp_path)
    owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    with splatform.store.begin() as s:
        spec = {"targets": {"dep": 100}, "feature_view": "customers"}
        s.add(ServingRoute(project_id=project_id(splatform), name="score", spec=spec, created_by="alice"))
    with pytest.raises(Conflict, match="fills the requests of route\\(s\\) score"):
        owner.features.delete(PROJECT, "customers")
    assert owner.features.lookup(PROJECT, "customers", 1).version == 0


# -- following the dataset ---------------------------------------------------------------------------


def test_feature_sync_materializes_a_new_dataset_version(fplatform: Platform, owner: Client, tmp_path: Path) -> None:
    upload(owner, customers([1, 2]), tmp_path)
    owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    sync = sync_of(fplatform)
    assert sync.run_once() == []  # nothing new

    upload(owner, customers([3]), tmp_path)  # version 1: appended
    with pytest.raises(NotFound):
        owner.features.lookup(PROJECT, "customers", 3)
    assert sync.run_once() == [f"{PROJECT}/customers"]
    view = owner.features.get(PROJECT, "customers")
    assert (view.state, view.materialized_version, view.rows) == ("ready", 1, 3)
    row = owner.features.lookup(PROJECT, "customers", 3)
    assert (row.version, row.values["plan"]) == (1, "plan-3")
    assert owner.features.lookup(PROJECT, "customers", 1).version == 1


def test_feature_sync_thread_follows_writes(splatform: Platform, owner: Client, tmp_path: Path) -> None:
    upload(owner, customers([1]), tmp_path)
    owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    sync = sync_of(splatform)
    sync.start()
    try:
        upload(owner, customers([2]), tmp_path)
        deadline = time.monotonic() + 30
        while owner.features.get(PROJECT, "customers").materialized_version != 1:
            assert time.monotonic() < deadline, "the sync thread did not materialize version 1"
            time.sleep(0.05)
    finally:
        sync.stop()
    assert owner.features.lookup(PROJECT, "customers", 2).version == 1


def test_a_key_whose_type_changes_is_still_found(fplatform: Platform, owner: Client, tmp_path: Path) -> None:
    upload(owner, pa.table({"id": [1, 2], "x": [10, 20]}), tmp_path, name="t")
    owner.features.create(PROJECT, "v", dataset="t", key="id")
    fs: OnlineFeatures = fplatform.app.state.features
    # Another process's reader, which keeps what it knows of the view: only the store's answer tells the change.
    reader = OnlineFeatures(fplatform.settings, fplatform.store, fs.online, meta_seconds=3600)
    pid = project_id(fplatform)
    assert reader.lookup_many(pid, "v", ["1"])[1:] == (0, [{"x": 10}])
    upload(owner, pa.table({"id": ["a", "1"], "x": [30, 40]}), tmp_path, name="t", mode="overwrite", evolve=True)
    assert sync_of(fplatform).run_once() == [f"{PROJECT}/v"]
    assert reader.lookup_many(pid, "v", ["a", "01", "1"])[1:] == (1, [{"x": 30}, None, {"x": 40}])


def test_a_refused_version_keeps_the_old_rows_served(
    splatform: Platform, owner: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(owner, customers([1, 2]), tmp_path)
    owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    sync = sync_of(splatform)
    upload(owner, customers([2]), tmp_path)  # version 1 repeats key 2
    assert sync.run_once() == []
    view = owner.features.get(PROJECT, "customers")
    assert (view.state, view.materialized_version) == ("failed", 0)
    assert view.last_error == "key customer_id has 1 duplicate value, e.g. 2"
    assert owner.features.lookup(PROJECT, "customers", 2).version == 0  # still served

    calls: list[int] = []
    real = features.check_key

    def counting(table: Any, key: str) -> Any:
        calls.append(1)
        return real(table, key)

    monkeypatch.setattr(features, "check_key", counting)
    assert sync.run_once() == []
    assert calls == []  # the refused version is not read again
    upload(owner, customers([7, 8]), tmp_path, mode="overwrite")
    assert sync.run_once() == [f"{PROJECT}/customers"]
    assert calls == [1]
    view = owner.features.get(PROJECT, "customers")
    assert (view.state, view.materialized_version, view.rows, view.last_error) == ("ready", 2, 2, None)


def test_repair_drops_orphans_and_rewrites_lost_rows(fplatform: Platform, owner: Client, tmp_path: Path) -> None:
    upload(owner, customers([1, 2]), tmp_path)
    owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    fs: OnlineFeatures = fplatform.app.state.features
    [(pid, view_id)] = fs.online.views()
    fs.online.write(pid, view_id + 100, 0, "int", [rows(0, 3)])  # a view deleted while the API was down
    fs.online.drop(pid, view_id)  # rows lost (a flushed Redis)

    assert sync_of(fplatform).repair() == [f"{PROJECT}/customers"]
    assert fs.online.views() == {(pid, view_id)}
    assert owner.features.lookup(PROJECT, "customers", 2).values["plan"] == "plan-2"


def test_deleting_the_project_leaves_nothing_served(splatform: Platform, owner: Client, tmp_path: Path) -> None:
    upload(owner, customers([1, 2]), tmp_path)
    owner.features.create(PROJECT, "customers", dataset="customer-features", key="customer_id")
    fs: OnlineFeatures = splatform.app.state.features
    owner.projects.delete(PROJECT)
    assert len(fs.online.views()) == 1
    sync_of(splatform).repair()
    assert fs.online.views() == set()


# -- the CLI -----------------------------------------------------------------------------------------


def test_cli(splatform: Platform, owner: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from selfserve.cli import feature

    upload(owner, customers([42, 7]), tmp_path)
    runner = CliRunner()
    with LiveServer(splatform.app) as server:
        monkeypatch.setenv("SELFSERVE_URL", server.url)
        monkeypatch.setenv("SELFSERVE_TOKEN", owner.token or "")

        def ok(*args: str) -> str:
            r = runner.invoke(feature.app, list(args))
            assert r.exit_code == 0, f"exit {r.exit_code}: {r.output}\n{r.exception!r}"
            return r.stdout

        out = ok("create", PROJECT, "customers", "--dataset", "customer-features", "--key", "customer_id")
        assert out.startswith("created feature view customers keyed by customer_id: version 0 of customer-features")
        assert "customers" in ok("list", PROJECT)
        assert "ready" in ok("show", PROJECT, "customers")
        values = ok("get", PROJECT, "customers", "42")
        assert "plan-42" in values and "monthly_fee" in values
        assert json.loads(ok("get", PROJECT, "customers", "7", "--json"))["values"]["plan"] == "plan-7"
        assert ok("materialize", PROJECT, "customers").startswith("materialized customers: version 0")

        missing = runner.invoke(feature.app, ["get", PROJECT, "customers", "8"])
        assert missing.exit_code == 1 and "key '8' not found" in missing.stderr
        refused = runner.invoke(feature.app, ["delete", PROJECT, "customers"])
        assert refused.exit_code == 1 and "--yes" in refused.stderr
        assert ok("delete", PROJECT, "customers", "--yes") == "deleted feature view customers\n"

        upload(owner, customers([1, 1]), tmp_path, name="dups")
        failed = runner.invoke(feature.app, ["create", PROJECT, "dups", "--dataset", "dups", "--key", "customer_id"])
        assert failed.exit_code == 1
        assert "created feature view dups, but it serves no data: key customer_id has 1 duplicate" in failed.stderr
