from __future__ import annotations

import csv
import io
import json
import runpy
from pathlib import Path

import pytest

from selfserve.errors import InvalidInput, ServiceUnavailable, Unauthenticated
from selfserve.runtime.demo import (
    CUSTOMERS,
    DATA,
    FEATURES,
    FILES_SOURCE,
    INGEST_CRON,
    INGEST_FLOW,
    INGEST_REQUEST,
    PROJECT,
    Seeded,
    demo,
    hourly_ingest,
)
from selfserve.schemas.data import IngestRequest
from selfserve.settings import get_settings
from tests.support import Platform

# The unit suites run without a Prefect server: pipelines are off there.
PIPELINES_OFF = "pipelines are not enabled on this platform (setting pipelines.enabled)"
CREATED = [
    Seeded("project demo", "created"),
    Seeded("dataset demo/customers", "created"),
    Seeded("contract on demo/customers", "created"),
    Seeded("dataset demo/customer-features", "created"),
    Seeded("product demo/customer-features", "created"),
    Seeded("source demo/demo-files", "created"),
]
MODELS_OFF = "models are not enabled on this platform (setting models.enabled)"
SKIPPED_FLOW = Seeded("flow demo/hourly-customers", "skipped", PIPELINES_OFF)
SKIPPED_MODEL = Seeded("model demo/churn", "skipped", MODELS_OFF)
SKIPPED_ROUTE = Seeded("route demo/churn", "skipped", MODELS_OFF)
SKIPPED_MONITOR = Seeded("monitor demo/churn", "skipped", "route churn is not there")


def test_demo_creates_the_demo_content_once(sqlite_platform: Platform) -> None:
    admin = sqlite_platform.admin()
    assert demo(admin) == [*CREATED, SKIPPED_FLOW, SKIPPED_MODEL, SKIPPED_ROUTE, SKIPPED_MONITOR]
    assert demo(admin) == [
        *(Seeded(s.what, "exists") for s in CREATED),
        SKIPPED_FLOW,
        SKIPPED_MODEL,
        SKIPPED_ROUTE,
        SKIPPED_MONITOR,
    ]
    project = admin.projects.get(PROJECT)
    assert project.role == "owner" and project.status == "ready"
    assert [p.name for p in admin.projects.list()] == [PROJECT]
    assert str(Seeded("project demo", "exists")) == "project demo: already there"
    # Seeding twice left one version of each dataset.
    assert [len(admin.datasets.history(PROJECT, name)) for name in (CUSTOMERS, FEATURES)] == [1, 1]
    assert [j.kind for j in admin.jobs.list(PROJECT)] == ["transform"]


def test_the_demo_data_is_the_bundled_sample_with_its_lineage(sqlite_platform: Platform) -> None:
    admin = sqlite_platform.admin()
    demo(admin)
    customers = admin.datasets.get(PROJECT, CUSTOMERS)
    assert customers.rows == 2000 and customers.has_contract and not customers.published
    assert [(c.name, c.type) for c in customers.columns] == [
        ("customer_id", "long"),
        ("signup_date", "date"),
        ("plan", "string"),
        ("monthly_fee", "double"),
        ("tenure_months", "long"),
        ("support_calls", "long"),
        ("region", "string"),
        ("churned", "long"),
    ]
    assert admin.datasets.check(PROJECT, CUSTOMERS).passed

    features = admin.datasets.get(PROJECT, FEATURES)
    assert features.rows == 2000 and features.published
    assert {"calls_per_year", "lifetime_value", "is_new", "churned"} <= {c.name for c in features.columns}
    (version,) = admin.datasets.history(PROJECT, FEATURES)
    assert version.producer["kind"] == "transform"
    assert version.inputs == [{"project": PROJECT, "dataset": CUSTOMERS, "version": 0}]

    # Churn follows the features, so that a model has something to learn.
    rates = admin.datasets.query(
        PROJECT,
        "select support_calls >= 3 as many_calls, avg(churned) as rate from customer_features group by 1 order by 1",
    ).rows
    assert [r[0] for r in rates] == [False, True]
    assert 0.1 < rates[0][1] < rates[1][1] - 0.1

    (product,) = admin.products.search("churn")
    assert (product.project, product.dataset, product.sla_freshness_seconds) == (PROJECT, FEATURES, 7 * 86400)
    assert "features" in product.tags


def test_a_later_bad_version_of_customers_is_refused_by_its_contract(sqlite_platform: Platform, tmp_path: Path) -> None:
    admin = sqlite_platform.admin()
    demo(admin)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "customer_id,signup_date,plan,monthly_fee,tenure_months,support_calls,region,churned\n"
        "1,2025-01-01,gold,10.0,3,0,north,2\n"
    )
    with pytest.raises(InvalidInput, match="contract failed: 2 checks"):
        admin.datasets.upload(PROJECT, CUSTOMERS, bad)
    assert len(admin.datasets.history(PROJECT, CUSTOMERS)) == 1


def test_demo_as_a_user_who_cannot_see_the_project_creates_nothing(sqlite_platform: Platform) -> None:
    admin = sqlite_platform.admin()
    demo(admin)
    alice = sqlite_platform.user("alice", admin_client=admin)
    seeded = demo(alice)
    assert seeded[0] == Seeded("project demo", "exists")
    assert {s.outcome for s in seeded[1:]} == {"skipped"}
    assert str(seeded[1]) == "dataset demo/customers: skipped (project demo belongs to another user)"
    assert alice.projects.list() == []


def test_demo_redoes_only_what_is_missing(sqlite_platform: Platform) -> None:
    admin = sqlite_platform.admin()
    demo(admin)
    admin.products.unpublish(PROJECT, FEATURES)
    admin.datasets.remove_contract(PROJECT, CUSTOMERS)
    admin.sources.remove(PROJECT, FILES_SOURCE)
    assert [s.outcome for s in demo(admin)] == [
        "exists",
        "exists",
        "created",
        "exists",
        "created",
        "created",
        "skipped",
        "skipped",
        "skipped",
        "skipped",
    ]


def test_demo_needs_a_login(sqlite_platform: Platform) -> None:
    with pytest.raises(Unauthenticated):
        demo(sqlite_platform.client())


def test_the_bundled_sample_is_what_its_script_makes() -> None:
    sample = (DATA / "customers.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(sample)))
    assert len(rows) == 2000
    assert [r["customer_id"] for r in rows[:2]] == ["100001", "100002"]
    script = runpy.run_path(str(DATA / "make_customers.py"))  # defines, does not write
    assert script["csv_text"]() == sample


def test_the_flow_step_says_why_it_skips_when_pipelines_are_off(sqlite_platform: Platform) -> None:
    admin = sqlite_platform.admin()
    seeded = demo(admin)
    assert seeded[-4:] == [SKIPPED_FLOW, SKIPPED_MODEL, SKIPPED_ROUTE, SKIPPED_MONITOR]
    assert str(seeded[-4]) == f"flow demo/hourly-customers: skipped ({PIPELINES_OFF})"
    assert admin.flows.list(PROJECT) == []
    # The source stays: it is data, usable by hand (`selfserve ingest`) once an admin opens its directory.
    source = admin.sources.get(PROJECT, FILES_SOURCE)
    assert (source.kind, source.config["path"]) == ("file", str(DATA.resolve()))


class FlowsSpy:
    """Stands in for ``client.flows`` and ``client.runs`` where pipelines would need a Prefect server."""

    def __init__(self, flows: object) -> None:
        self.real = flows
        self.deployed: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def get(self, project: str, name: str) -> object:
        return self.real.get(project, name)  # type: ignore[attr-defined]

    def deploy_builtin(self, *args: object, **kwargs: object) -> None:
        self.deployed.append((args, kwargs))

    def list(self, project: str, limit: int = 50) -> list[object]:  # as runs.list: pipelines answer
        return []


def test_the_flow_step_deploys_the_hourly_ingest_when_pipelines_are_on(
    sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = sqlite_platform.admin()
    demo(admin)
    spy = FlowsSpy(admin.flows)
    monkeypatch.setattr(admin, "flows", spy)
    monkeypatch.setattr(admin, "runs", spy)

    # The server may not read the bundled file until an admin opens its directory: no failing schedule.
    skipped = hourly_ingest(admin)
    assert skipped.outcome == "skipped" and "data.file_roots" in skipped.reason
    assert str(skipped).startswith("flow demo/hourly-customers: skipped (the server cannot read source demo-files")
    assert spy.deployed == []

    monkeypatch.setenv("SELFSERVE_DATA__FILE_ROOTS", json.dumps([str(DATA)]))
    get_settings.cache_clear()
    assert hourly_ingest(admin) == Seeded("flow demo/hourly-customers", "created")
    ((args, kwargs),) = spy.deployed
    assert args == (PROJECT, "ingest", INGEST_FLOW)
    assert kwargs["parameters"] == INGEST_REQUEST and kwargs["cron"] == INGEST_CRON == "0 * * * *"
    request = IngestRequest.model_validate(INGEST_REQUEST)
    assert (request.source, request.to, request.mode) == (FILES_SOURCE, CUSTOMERS, "overwrite")
    # Each scheduled run does this ingest: the same 2000 rows the demo uploaded, passing the contract.
    options = {k: v for k, v in INGEST_REQUEST.items() if k not in ("source", "to")}
    job = admin.datasets.ingest(PROJECT, FILES_SOURCE, CUSTOMERS, **options)
    assert job.status == "succeeded", job
    assert admin.datasets.get(PROJECT, CUSTOMERS).rows == 2000
    assert admin.datasets.preview(PROJECT, CUSTOMERS).rows == admin.datasets.preview(PROJECT, CUSTOMERS, version=0).rows


def test_the_flow_step_skips_when_the_engine_goes_away(
    sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = sqlite_platform.admin()
    demo(admin)
    spy = FlowsSpy(admin.flows)

    def engine_down(*args: object, **kwargs: object) -> None:
        raise ServiceUnavailable("the pipeline engine is not reachable: ConnectError")

    monkeypatch.setattr(spy, "deploy_builtin", engine_down)
    monkeypatch.setattr(admin, "flows", spy)
    monkeypatch.setattr(admin, "runs", spy)
    monkeypatch.setenv("SELFSERVE_DATA__FILE_ROOTS", json.dumps([str(DATA)]))
    get_settings.cache_clear()
    assert hourly_ingest(admin) == Seeded(
        "flow demo/hourly-customers", "skipped", "the pipeline engine is not reachable: ConnectError"
    )
