"""A built-in flow's parameters are checked when it is deployed, not when its schedule first fires.

Pipelines are off in the unit suite, so a deploy that passes every check reaches the engine check
and answers 503: that is how these tests tell "refused for its input" from "accepted".
"""

from __future__ import annotations

import pytest

from selfserve.client import Client
from selfserve.errors import InvalidInput, NotFound, ServiceUnavailable
from tests.support import Platform


@pytest.fixture
def admin(sqlite_platform: Platform) -> Client:
    c = sqlite_platform.admin()
    c.projects.create("shop")
    return c


@pytest.mark.parametrize(
    ("flow", "parameters", "message"),
    [
        ("ingest", {"source": "db", "to": "orders"}, "exactly one of table or query"),
        ("ingest", {"source": "db", "to": "orders", "table": "t", "query": "select 1"}, "exactly one of table"),
        ("ingest", {"to": "orders", "table": "t"}, "source"),
        ("transform", {"to": "daily"}, "exactly one of sql or polars"),
        ("transform", {"to": "daily", "sql": "select 1", "polars": "def transform(): ..."}, "exactly one of sql"),
        ("transform", {"to": "../up", "sql": "select 1"}, "to"),
    ],
)
def test_parameters_of_the_wrong_shape_are_refused_with_what_is_wrong(
    admin: Client, flow: str, parameters: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        admin.flows.deploy_builtin("shop", flow, "nightly", parameters, cron="0 3 * * *")


def test_an_ingest_from_a_source_the_project_lacks_is_refused(admin: Client) -> None:
    with pytest.raises(NotFound, match="nope"):
        admin.flows.deploy_builtin("shop", "ingest", "nightly", {"source": "nope", "to": "o", "table": "t"})


def test_well_formed_parameters_reach_the_engine(admin: Client) -> None:
    with pytest.raises(ServiceUnavailable, match="pipeline"):
        admin.flows.deploy_builtin("shop", "transform", "nightly", {"to": "daily", "sql": "select 1"})
