from __future__ import annotations

import csv
import io
import runpy
from pathlib import Path

import pytest

from selfserve.errors import InvalidInput, Unauthenticated
from selfserve.runtime.demo import CUSTOMERS, DATA, FEATURES, PROJECT, Seeded, demo
from tests.support import Platform

CREATED = [
    Seeded("project demo", "created"),
    Seeded("dataset demo/customers", "created"),
    Seeded("contract on demo/customers", "created"),
    Seeded("dataset demo/customer-features", "created"),
    Seeded("product demo/customer-features", "created"),
]


def test_demo_creates_the_demo_content_once(sqlite_platform: Platform) -> None:
    admin = sqlite_platform.admin()
    assert demo(admin) == CREATED
    assert demo(admin) == [Seeded(s.what, "exists") for s in CREATED]
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
    assert [s.outcome for s in demo(admin)] == ["exists", "exists", "created", "exists", "created"]


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
