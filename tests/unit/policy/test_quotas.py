"""Quotas: parsing limits, refusing work with a message that names the limit, and reserving under concurrency."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from selfserve import schemas
from selfserve.errors import InvalidInput, QuotaExceeded
from selfserve.policy import projects, quotas
from selfserve.policy.authz import Caller
from selfserve.settings import parse_size
from selfserve.store import Store
from selfserve.store.tables import Principal, Project, Usage
from tests.support import Platform

GB = 10**9


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10GB", 10 * GB),
        ("10gb", 10 * GB),
        (" 2 KB ", 2000),
        ("1.5GB", 1_500_000_000),
        ("512MiB", 512 * 2**20),
        ("1TiB", 2**40),
        ("1000", 1000),
        ("7B", 7),
        (1234, 1234),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "10 gigs", "-1GB", "1e9", "10GB10", "ten"])
def test_parse_size_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_parse_value_by_unit() -> None:
    assert quotas.parse_value("storage", "20GB") == 20 * GB
    assert quotas.parse_value("memory", "512MiB") == 512 * 2**20
    assert quotas.parse_value("runs", 4) == 4
    assert quotas.parse_value("runs", "4") == 4
    assert quotas.parse_value("cpu", "0.5") == 0.5
    assert quotas.parse_value("rpm", 0) == 0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("gpus", 1, "unknown quota 'gpus'; quotas are: storage, runs, cpu, memory, deployments, rpm"),
        ("storage", "lots", "invalid value for quota 'storage': 'lots' is not a size like 20GB"),
        ("runs", "many", "invalid value for quota 'runs': 'many' is not a number"),
        ("runs", 1.5, "invalid value for quota 'runs': must be a whole number"),
        ("runs", -1, "invalid value for quota 'runs': must be a finite number >= 0"),
        ("cpu", float("nan"), "invalid value for quota 'cpu': must be a finite number >= 0"),
        ("cpu", float("inf"), "invalid value for quota 'cpu': must be a finite number >= 0"),
        ("runs", 10**400, "invalid value for quota 'runs'"),
        ("storage", "9" * 400 + "GB", "invalid value for quota 'storage'"),
    ],
)
def test_parse_value_refusals_say_what_is_wrong(name: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        quotas.parse_value(name, value)
    assert err.value.message.startswith(message)


def test_parse_limits_needs_at_least_one() -> None:
    with pytest.raises(InvalidInput, match="no quota given"):
        quotas.parse_limits({})
    assert quotas.parse_limits({"storage": "20GB", "runs": 4}) == {"storage": 20 * GB, "runs": 4}


def test_human_sizes() -> None:
    assert quotas.human(10.2 * GB, "bytes") == "10.2 GB"
    assert quotas.human(10 * GB, "bytes") == "10 GB"
    assert quotas.human(0.5 * GB, "bytes") == "500 MB"
    assert quotas.human(999, "bytes") == "999 B"
    assert quotas.human(600, "per-minute") == "600/min"
    assert quotas.human(1.5, "cores") == "1.5 cores"
    assert quotas.human(0.5 * GB, "bytes", scale=10 * GB) == "0.5 GB"
    assert quotas.human(10.2 * GB, "bytes", scale=10 * GB) == "10.2 GB"
    assert quotas.human(1000, "bytes", scale=10 * GB) == "1 KB", "too small for the shared unit: its own"
    assert quotas.human(0, "bytes", scale=10 * GB) == "0 GB"
    assert quotas.human(2, "count") == "2"


# -- check, reserve and usage against a real store ------------------------------------------------


def _make_project(store: Store, name: str = "churn") -> None:
    from selfserve.policy import identity

    with store.session() as s:
        user, _ = identity.create_user(s, "alice", "alice-password-12")
        s.commit()
        caller = Caller(id=user.id, name="alice", kind="user", is_admin=False, token_id=0)
        projects.create(s, caller, schemas.ProjectCreate(name=name), [])


def _project(s: Any, name: str = "churn") -> Project:
    proj = s.scalar(select(Project).where(Project.name == name))
    assert proj is not None
    return proj


@pytest.fixture
def store(platform: Platform) -> Iterator[Store]:
    _make_project(platform.store)
    yield platform.store


def test_defaults_apply_to_a_new_project(store: Store) -> None:
    with store.session() as s:
        assert quotas.limits(s, _project(s)) == {
            "storage": 10 * GB,
            "runs": 2,
            "cpu": 1.0,
            "memory": 2 * GB,
            "deployments": 2,
            "rpm": 600,
        }


def test_check_pooled_quota_message_is_exact(store: Store) -> None:
    with store.begin() as s:
        quotas.set_usage(s, _project(s), "storage", 10.2 * GB)
    with store.session() as s, pytest.raises(QuotaExceeded) as err:
        quotas.check(s, _project(s), "storage", 0.5 * GB)
    assert err.value.message == "storage quota exceeded for project churn: 10.2 GB used + 0.5 GB requested > 10 GB"
    assert err.value.detail == {"resource": "storage", "used": 10.2 * GB, "requested": 0.5 * GB, "limit": 10 * GB}
    assert err.value.status_code == 429


def test_check_allows_up_to_the_limit(store: Store) -> None:
    with store.begin() as s:
        quotas.set_usage(s, _project(s), "storage", 9.5 * GB)
    with store.session() as s:
        quotas.check(s, _project(s), "storage", 0.5 * GB)
        with pytest.raises(QuotaExceeded):
            quotas.check(s, _project(s), "storage", 0.5 * GB + 1)


@pytest.mark.parametrize(
    ("name", "amount", "limit", "message"),
    [
        ("cpu", 2, 1.0, "cpu quota exceeded for project churn: 2 cores requested > 1 core"),
        ("memory", 4 * GB, 2 * GB, "memory quota exceeded for project churn: 4 GB requested > 2 GB"),
        ("rpm", 700, 600, "rpm quota exceeded for project churn: 700/min requested > 600/min"),
    ],
)
def test_per_run_and_rate_limits_compare_the_request_alone(
    store: Store, name: str, amount: float, limit: float, message: str
) -> None:
    with store.session() as s:
        quotas.check(s, _project(s), name, limit)  # at the limit: fine
        with pytest.raises(QuotaExceeded) as err:
            quotas.check(s, _project(s), name, amount)
    assert err.value.message == message
    assert err.value.detail == {"resource": name, "requested": amount, "limit": limit}


def test_per_run_limits_ignore_usage(store: Store) -> None:
    with store.begin() as s:
        quotas.set_usage(s, _project(s), "cpu", 100)
    with store.session() as s:
        quotas.check(s, _project(s), "cpu", 1)


def test_reserve_takes_the_amount_and_refuses_past_the_limit(store: Store) -> None:
    with store.begin() as s:
        quotas.reserve(s, _project(s), "runs", 1)
        quotas.reserve(s, _project(s), "runs", 1)
    with store.session() as s:
        with pytest.raises(QuotaExceeded, match=r"runs quota exceeded for project churn: 2 used \+ 1 requested > 2"):
            quotas.reserve(s, _project(s), "runs", 1)
        s.rollback()
        assert quotas.usage(s, _project(s))["runs"] == 2


def test_add_usage_never_goes_below_zero(store: Store) -> None:
    with store.begin() as s:
        quotas.add_usage(s, _project(s), "runs", 1)
        quotas.add_usage(s, _project(s), "runs", -5)
    with store.session() as s:
        assert quotas.usage(s, _project(s))["runs"] == 0


def test_set_limits_changes_only_the_named_ones(store: Store) -> None:
    with store.begin() as s:
        before = quotas.set_limits(s, _project(s), {"runs": 5})
    assert before == {"runs": 2}
    with store.session() as s:
        lim = quotas.limits(s, _project(s))
    assert lim["runs"] == 5 and lim["storage"] == 10 * GB


def _race(store: Store, amount: float, *, hold: float = 0.5) -> tuple[list[str], float]:
    """Two threads reserve ``amount`` of storage at once; the first holds its transaction open a while."""
    first_reserved = threading.Event()
    outcomes: list[str] = []
    lock = threading.Lock()

    def first() -> None:
        with store.session() as s:
            try:
                quotas.reserve(s, _project(s), "storage", amount)
            except QuotaExceeded:
                with lock:
                    outcomes.append("refused")
                first_reserved.set()
                return
            first_reserved.set()
            time.sleep(hold)  # the second thread tries while this reservation is not yet committed
            s.commit()
            with lock:
                outcomes.append("reserved")

    def second() -> None:
        assert first_reserved.wait(10)
        with store.session() as s:
            try:
                quotas.reserve(s, _project(s), "storage", amount)
                s.commit()
                result = "reserved"
            except QuotaExceeded:
                result = "refused"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    with store.session() as s:
        used = quotas.usage(s, _project(s)).get("storage", 0.0)
    return sorted(outcomes), used


def test_concurrent_reservations_never_over_reserve(store: Store) -> None:
    with store.begin() as s:
        quotas.set_usage(s, _project(s), "storage", 0)
    outcomes, used = _race(store, 6 * GB)
    assert outcomes == ["refused", "reserved"]
    assert used == 6 * GB


def test_concurrent_first_reservations_never_over_reserve(store: Store) -> None:
    """No usage row exists yet: both threads would create it."""
    with store.session() as s:
        assert s.scalar(select(Usage).where(Usage.resource == "storage")) is None
    outcomes, used = _race(store, 6 * GB)
    assert outcomes == ["refused", "reserved"]
    assert used == 6 * GB


def test_concurrent_reservations_that_fit_both_succeed(store: Store) -> None:
    outcomes, used = _race(store, 4 * GB, hold=0.2)
    assert outcomes == ["reserved", "reserved"]
    assert used == 8 * GB


def test_usage_rows_belong_to_their_project(store: Store) -> None:
    with store.session() as s:
        alice = s.scalar(select(Principal).where(Principal.name == "alice"))
        assert alice is not None
        caller = Caller(id=alice.id, name="alice", kind="user", is_admin=False, token_id=0)
        projects.create(s, caller, schemas.ProjectCreate(name="other"), [])
    with store.begin() as s:
        quotas.reserve(s, _project(s, "churn"), "runs", 2)
    with store.session() as s:
        assert quotas.usage(s, _project(s, "other")).get("runs", 0) == 0
        quotas.check(s, _project(s, "other"), "runs", 2)
