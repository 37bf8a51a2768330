"""Contracts through the SDK: set, get, remove, checked before every commit and on demand."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from selfserve.client import Client
from selfserve.errors import InvalidInput, NotFound, PermissionDenied
from tests.support import Platform, upload_table

# Contracts are checked on Arrow tables; the catalog side is the datasets suite's subject (both DBs).
STORE_INDEPENDENT = True

P = "crm"
CONTRACT = """
columns:
  id: {type: integer, not_null: true, unique: true}
  plan: {type: string, allowed: [basic, pro]}
  age: {type: integer, min: 0, max: 130}
rows: {min: 1}
"""


@pytest.fixture
def owner(platform: Platform, tmp_path: Path) -> Client:
    alice = platform.user("alice")
    alice.projects.create(P)
    upload_table(alice, P, "customers", pa.table({"id": [1, 2], "plan": ["basic", "pro"], "age": [30, 40]}), tmp_path)
    return alice


def test_set_get_and_remove_a_contract(owner: Client) -> None:
    with pytest.raises(NotFound, match="no contract"):
        owner.datasets.get_contract(P, "customers")
    shown = owner.datasets.set_contract(P, "customers", CONTRACT)
    assert shown.has_contract
    assert owner.datasets.get_contract(P, "customers") == CONTRACT
    assert owner.datasets.get(P, "customers").has_contract
    removed = owner.datasets.remove_contract(P, "customers")
    assert not removed.has_contract
    with pytest.raises(NotFound, match="no contract"):
        owner.datasets.get_contract(P, "customers")
    with pytest.raises(NotFound):
        owner.datasets.set_contract(P, "nope", CONTRACT)


def test_a_bad_contract_is_refused_when_set(owner: Client) -> None:
    with pytest.raises(InvalidInput, match="YAML"):
        owner.datasets.set_contract(P, "customers", "columns: [unclosed")
    with pytest.raises(InvalidInput, match="columns.age"):
        owner.datasets.set_contract(P, "customers", "columns:\n  age: {type: integer, min: old}\n")
    assert not owner.datasets.get(P, "customers").has_contract


def test_a_viewer_reads_but_cannot_change_the_contract(platform: Platform, owner: Client) -> None:
    owner.datasets.set_contract(P, "customers", CONTRACT)
    vic = platform.user("vic")
    owner.members.add(P, "vic", "viewer")
    assert vic.datasets.get_contract(P, "customers") == CONTRACT
    with pytest.raises(PermissionDenied):
        vic.datasets.remove_contract(P, "customers")
    assert vic.datasets.check(P, "customers").passed


def test_a_write_failing_the_contract_commits_nothing_and_lists_each_failure(owner: Client, tmp_path: Path) -> None:
    owner.datasets.set_contract(P, "customers", CONTRACT)
    bad = pa.table({"id": [3, 3, None], "plan": ["gold", "pro", "basic"], "age": [200, 20, -1]})
    with pytest.raises(InvalidInput) as e:
        upload_table(owner, P, "customers", bad, tmp_path)
    assert e.value.message.startswith("contract failed")
    failed = {(f["check"], f["column"]) for f in e.value.detail}
    assert failed == {
        ("not_null", "id"),
        ("unique", "id"),
        ("allowed", "plan"),
        ("min", "age"),
        ("max", "age"),
    }
    for f in e.value.detail:
        assert f["message"] in e.value.message and f["failing"] >= 1 and f["total"] == 5
    assert [h.version for h in owner.datasets.history(P, "customers")] == [0]
    assert owner.datasets.get(P, "customers").rows == 2

    good = pa.table({"id": [3], "plan": ["pro"], "age": [50]})
    assert upload_table(owner, P, "customers", good, tmp_path).version == 1


def test_the_contract_holds_for_the_whole_dataset_not_only_the_appended_rows(owner: Client, tmp_path: Path) -> None:
    owner.datasets.set_contract(P, "customers", CONTRACT)
    duplicate = pa.table({"id": [2], "plan": ["basic"], "age": [20]})  # id 2 is already in version 0
    with pytest.raises(InvalidInput, match="share their value") as e:
        upload_table(owner, P, "customers", duplicate, tmp_path)
    assert {(f["check"], f["column"]) for f in e.value.detail} == {("unique", "id")}
    assert owner.datasets.get(P, "customers").current_version == 0
    # An overwrite replaces the rows, so only the new ones count.
    assert upload_table(owner, P, "customers", duplicate, tmp_path, mode="overwrite").version == 1


def test_check_on_demand(owner: Client, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no contract"):
        owner.datasets.check(P, "customers")
    upload_table(owner, P, "customers", pa.table({"id": [2], "plan": ["gold"], "age": [1]}), tmp_path)
    owner.datasets.set_contract(P, "customers", CONTRACT)  # set after the bad rows were written
    report = owner.datasets.check(P, "customers")
    assert not report.passed
    assert {(f.check, f.column) for f in report.failures} == {("unique", "id"), ("allowed", "plan")}
    unique = next(f for f in report.failures if f.check == "unique")
    assert unique.failing == 2 and unique.total == 3 and unique.samples
    assert owner.datasets.check(P, "customers", version=0).passed
    with pytest.raises(NotFound):
        owner.datasets.check(P, "customers", version=9)
