"""The gateway's decisions without a server: target choice, row checks, the rate limiter, the stats,
and the route spec's rules."""

from __future__ import annotations

import math
import random

import pytest
from pydantic import ValidationError

from selfserve.client._serving import parse_targets
from selfserve.errors import InvalidInput
from selfserve.schemas.serving import RouteCreate, RouteSpec, parse_model_ref
from selfserve.serving.gateway import RateLimiter, ResolvedRoute, Stats, Target, check_rows, ranges_of

STORE_INDEPENDENT = True


def _route(targets: dict[str, int], name: str = "score") -> ResolvedRoute:
    spec = RouteSpec(targets=targets)
    return ResolvedRoute(1, "p", name, spec, {}, 600, 0.0, ranges_of(targets))


def _within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """``count`` successes of ``n`` draws is within ``sigmas`` standard deviations of a binomial(n, p)."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_random_split_follows_the_weights() -> None:
    random.seed(7)
    route = _route({"v7": 90, "v8": 10})
    n = 20_000
    to_v8 = sum(route.pick() == "v8" for _ in range(n))
    assert _within(to_v8, n, 0.10), to_v8
    assert 0.08 < to_v8 / n < 0.12


def test_a_target_of_weight_zero_gets_nothing() -> None:
    route = _route({"v7": 100, "v8": 0})
    assert {route.pick() for _ in range(2000)} == {"v7"}
    assert {route.pick(f"k{i}") for i in range(2000)} == {"v7"}


def test_sticky_keys_keep_their_target_and_split_by_weight() -> None:
    route = _route({"a": 50, "b": 30, "c": 20})
    first = {k: route.pick(k) for k in range(6000)}
    again = {k: route.pick(k) for k in reversed(range(6000))}
    assert first == again
    counts = {t: sum(v == t for v in first.values()) for t in "abc"}
    for target, weight in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert _within(counts[target], 6000, weight), counts
    # The same key on a rebuilt route (another process, a later minute) lands on the same target.
    assert all(_route({"a": 50, "b": 30, "c": 20}).pick(k) == first[k] for k in range(0, 6000, 7))


def test_sticky_assignment_depends_on_the_route() -> None:
    a, b = _route({"x": 50, "y": 50}, "one"), _route({"x": 50, "y": 50}, "two")
    assert any(a.pick(k) != b.pick(k) for k in range(200)), "two routes split one population independently"


def test_moving_weight_moves_only_the_keys_that_must_move() -> None:
    before, after = _route({"v7": 90, "v8": 10}), _route({"v7": 80, "v8": 20})
    moved = [k for k in range(5000) if before.pick(k) != after.pick(k)]
    assert all(before.pick(k) == "v7" and after.pick(k) == "v8" for k in moved)
    assert _within(len(moved), 5000, 0.10)


TARGET = Target("clf-v1", "clf", 3, "ready", "http://x", (("age", "long"), ("income", "double"), ("plan", "string")))


def test_rows_are_checked_against_the_models_inputs() -> None:
    rows = [{"age": 30, "income": 1.5, "plan": "a"}, {"age": 41.0, "income": 2, "plan": "b", "customer_id": 9}]
    assert check_rows(rows, TARGET, {"customer_id"}) == [
        {"age": 30, "income": 1.5, "plan": "a"},
        {"age": 41.0, "income": 2, "plan": "b"},
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"income": 1.0, "plan": "a"}, "rows[0].age: missing"),
        ({"age": 3, "income": 1.0, "plan": "a", "extra": 1}, "rows[0].extra: not an input of model clf v3"),
        ({"age": "30", "income": 1.0, "plan": "a"}, "rows[0].age: expected a whole number (long), got str '30'"),
        ({"age": 30.5, "income": 1.0, "plan": "a"}, "rows[0].age: expected a whole number"),
        ({"age": True, "income": 1.0, "plan": "a"}, "rows[0].age: expected a whole number"),
        ({"age": 3, "income": "x", "plan": "a"}, "rows[0].income: expected a number (double)"),
        ({"age": 3, "income": 1.0, "plan": 5}, "rows[0].plan: expected a string"),
        ({"age": 3, "income": None, "plan": "a"}, "rows[0].income: missing"),
    ],
)
def test_a_bad_row_is_refused_naming_the_field(row: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        check_rows([row], TARGET, set())
    assert message in e.value.message
    assert e.value.detail["row"] == 0


def test_infinite_values_are_refused() -> None:
    with pytest.raises(InvalidInput, match="rows.0..income"):
        check_rows([{"age": 1, "income": float("inf"), "plan": "a"}], TARGET, set())


def test_the_rate_limiter_counts_a_sliding_minute() -> None:
    limiter = RateLimiter()
    t0 = 6000.0  # the start of a minute
    assert all(limiter.allow(1, 5, t0 + i)[0] for i in range(5))
    allowed, retry = limiter.allow(1, 5, t0 + 10)
    assert not allowed and 0 < retry <= 50
    assert limiter.allow(2, 5, t0 + 10)[0], "projects are counted apart"
    # Half-way through the next minute half of the last minute's requests still count.
    assert [limiter.allow(1, 5, t0 + 90)[0] for _ in range(3)] == [True, True, False]
    assert limiter.allow(1, 5, t0 + 200)[0], "two minutes later the window is empty"


def test_stats_give_counts_errors_and_percentiles() -> None:
    stats = Stats()
    for i in range(100):
        stats.add(1, "score", "v7", False, float(i + 1), ok=i % 10 != 0)
    stats.add(1, "score", "v9", True, 5.0, ok=True)
    targets, timeline = stats.view(1, "score", 300)
    live = next(t for t in targets if t.target == "v7")
    assert (live.requests, live.errors, live.p50_ms, live.p95_ms, live.p99_ms) == (100, 10, 50.0, 95.0, 99.0)
    assert next(t for t in targets if t.target == "v9").shadow
    assert {row["target"] for row in timeline} == {"v7", "v9 (shadow)"}
    assert stats.view(2, "score", 300) == ([], [])


@pytest.mark.parametrize(
    ("targets", "shadow", "message"),
    [
        ({"a": 90, "b": 20}, None, "must add up to 100, not 110"),
        ({"a": 50}, None, "must add up to 100, not 50"),
        ({}, None, "at least 1"),
        ({"a": 100}, "a", "is also a target"),
        ({"a": 101, "b": -1}, None, "less than or equal to 100"),
    ],
)
def test_a_route_spec_that_cannot_split_traffic_is_refused(
    targets: dict[str, int], shadow: str | None, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        RouteSpec(targets=targets, shadow=shadow)


def test_route_names_leave_room_for_their_datasets() -> None:
    RouteCreate(name="r" * 40, targets={"a": 100})
    with pytest.raises(ValidationError, match="40 characters at most"):
        RouteCreate(name="r" * 41, targets={"a": 100})


def test_model_references() -> None:
    assert parse_model_ref("clf@champion") == ("clf", "champion")
    assert parse_model_ref("clf@7") == ("clf", 7)
    assert parse_model_ref("clf") == ("clf", "champion")
    for bad in ("clf@", "Clf@1", "clf@0", "clf@../x", "clf/7"):
        with pytest.raises(ValueError, match="invalid model reference"):
            parse_model_ref(bad)


def test_target_lists_from_the_command_line() -> None:
    assert parse_targets(["clf-v7"]) == {"clf-v7": 100}
    assert parse_targets(["clf-v7=90", "clf-v8=10"]) == {"clf-v7": 90, "clf-v8": 10}
    for bad, message in ((["a=1", "a=2"], "given twice"), (["a=x"], "invalid weight"), (["a", "b"], "invalid target")):
        with pytest.raises(InvalidInput, match=message):
            parse_targets(bad)
