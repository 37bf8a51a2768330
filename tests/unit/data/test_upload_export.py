"""Uploads (CSV, JSON, NDJSON, Parquet) and exports through the SDK."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selfserve.client import Client
from selfserve.errors import InvalidInput, NotFound, PayloadTooLarge
from selfserve.settings import get_settings
from tests.support import Platform, make_platform, upload_table

# Uploads and exports are file formats; the catalog side is the datasets suite's subject (both DBs).
STORE_INDEPENDENT = True

P = "sales"


@pytest.fixture
def owner(platform: Platform) -> Client:
    alice = platform.user("alice")
    alice.projects.create(P)
    return alice


def test_upload_csv_json_ndjson_and_parquet(owner: Client, tmp_path: Path) -> None:
    csv = tmp_path / "orders.csv"
    csv.write_text("id;region\n1;eu\n2;us\n")
    v0 = owner.datasets.upload(P, "orders", csv, delimiter=";")
    assert (v0.version, v0.rows) == (0, 2) and v0.producer == {"kind": "upload", "file": "orders.csv"}
    nd = tmp_path / "more.ndjson"
    nd.write_text('{"id": 3, "region": "eu"}\n{"id": 4, "region": "apac"}\n')
    assert owner.datasets.upload(P, "orders", nd).rows == 4
    js = tmp_path / "more.json"
    js.write_text(json.dumps([{"id": 5, "region": "us"}]))
    assert owner.datasets.upload(P, "orders", js).rows == 5
    pq.write_table(pa.table({"id": [6], "region": ["eu"]}), tmp_path / "more.parquet")
    assert owner.datasets.upload(P, "orders", tmp_path / "more.parquet").rows == 6
    assert sorted(r[0] for r in owner.datasets.preview(P, "orders").rows) == [1, 2, 3, 4, 5, 6]
    audit = [e.action for e in owner.audit.list(P)]
    assert audit.count("dataset:upload") == 4


def test_a_file_of_unknown_format_or_bad_content_is_refused(owner: Client, tmp_path: Path) -> None:
    odd = tmp_path / "data.xyz"
    odd.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInput, match="format"):
        owner.datasets.upload(P, "orders", odd)
    assert owner.datasets.upload(P, "orders", odd, format="csv").rows == 1
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file at all")
    with pytest.raises(InvalidInput):
        owner.datasets.upload(P, "orders", broken)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InvalidInput):
        owner.datasets.upload(P, "orders", empty)
    with pytest.raises(InvalidInput):
        owner.datasets.upload(P, "orders", odd, format="xlsx")
    assert [h.version for h in owner.datasets.history(P, "orders")] == [0]


def test_an_upload_over_the_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    monkeypatch.setenv("SELFSERVE_DATA__MAX_UPLOAD_BYTES", "2000")
    get_settings.cache_clear()
    platform = make_platform(tmp_path / "limit-home", db_url)
    try:
        alice = platform.user("alice")
        alice.projects.create(P)
        big = tmp_path / "big.csv"
        big.write_text("id,text\n" + "".join(f"{i},{'x' * 50}\n" for i in range(100)))
        with pytest.raises(PayloadTooLarge, match="2000 bytes"):
            alice.datasets.upload(P, "orders", big)
        with pytest.raises(NotFound):
            alice.datasets.get(P, "orders")
        small = tmp_path / "small.csv"
        small.write_text("id\n1\n")
        assert alice.datasets.upload(P, "orders", small).version == 0
    finally:
        platform.close()


def test_export_each_format_and_version(owner: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "server-tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the server stages files
    upload_table(owner, P, "orders", pa.table({"id": [1, 2], "region": ["eu", "us"]}), tmp_path)
    upload_table(owner, P, "orders", pa.table({"id": [3], "region": ["eu"]}), tmp_path)
    parquet = owner.datasets.export(P, "orders", tmp_path / "out.parquet")
    assert sorted(pq.read_table(parquet).column("id").to_pylist()) == [1, 2, 3]
    old = owner.datasets.export(P, "orders", tmp_path / "old.parquet", version=0)
    assert sorted(pq.read_table(old).column("id").to_pylist()) == [1, 2]
    csv = owner.datasets.export(P, "orders", tmp_path / "out.csv", format="csv").read_text().splitlines()
    assert csv[0] == '"id","region"' and len(csv) == 4
    lines = owner.datasets.export(P, "orders", tmp_path / "out.ndjson", format="json").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == [1, 2, 3]
    with pytest.raises(NotFound):
        owner.datasets.export(P, "orders", tmp_path / "none.parquet", version=5)
    assert not (tmp_path / "none.parquet").exists()
    with pytest.raises(NotFound):
        owner.datasets.export(P, "nope", tmp_path / "none.parquet")
    assert list(scratch.iterdir()) == []  # nothing staged is left behind, after success or failure


def test_columns_delta_cannot_hold_are_converted_or_refused_with_a_reason(owner: Client, tmp_path: Path) -> None:
    import datetime as dt

    csv = tmp_path / "shifts.csv"
    csv.write_text("who,starts\nann,08:30:00\nbob,17:00:00\n")  # a time of day: CSV reading infers time32
    assert owner.datasets.upload(P, "shifts", csv).rows == 2
    assert sorted(owner.datasets.preview(P, "shifts").rows) == [["ann", "08:30:00"], ["bob", "17:00:00"]]

    odd = pa.table(
        {
            "took": pa.array([dt.timedelta(seconds=90), None], pa.duration("ms")),
            "small": pa.array([1, 2], pa.uint8()),
            "nothing": pa.array([None, None], pa.null()),
        }
    )
    upload_table(owner, P, "odd", odd, tmp_path)
    assert [(c.name, c.type) for c in owner.datasets.schema(P, "odd")] == [
        ("took", "double"),
        ("small", "long"),
        ("nothing", "string"),
    ]
    assert sorted(owner.datasets.preview(P, "odd").rows, key=str) == [[90.0, 1, None], [None, 2, None]]

    with pytest.raises(InvalidInput, match="column 'big'"):
        upload_table(owner, P, "big", pa.table({"big": pa.array([2**64 - 1], pa.uint64())}), tmp_path)
    nested = pa.table({"times": pa.array([[dt.time(1, 2)]], pa.list_(pa.time64("us")))})
    with pytest.raises(InvalidInput, match="cannot be stored"):
        upload_table(owner, P, "nested", nested, tmp_path)
    for name in ("big", "nested"):
        with pytest.raises(NotFound):
            owner.datasets.get(P, name)


def test_an_upload_is_limited_by_the_upload_limit_not_the_json_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    monkeypatch.setenv("SELFSERVE_SERVER__MAX_BODY_BYTES", "4000")
    monkeypatch.setenv("SELFSERVE_DATA__MAX_UPLOAD_BYTES", "50000")
    get_settings.cache_clear()
    platform = make_platform(tmp_path / "limit-home", db_url)
    try:
        alice = platform.user("alice")
        alice.projects.create(P)
        mid = tmp_path / "mid.csv"
        mid.write_text("id,text\n" + "".join(f"{i},{'x' * 50}\n" for i in range(300)))  # about 17 KB
        assert alice.datasets.upload(P, "orders", mid).rows == 300
        huge = tmp_path / "huge.csv"
        huge.write_text("id,text\n" + "".join(f"{i},{'x' * 50}\n" for i in range(3000)))  # about 170 KB
        with pytest.raises(PayloadTooLarge):
            alice.datasets.upload(P, "orders", huge)
        with pytest.raises(PayloadTooLarge, match="4000 bytes"):  # JSON bodies keep their own limit
            alice.datasets.query(P, "SELECT 1 AS x -- " + "y" * 5000)
        assert alice.datasets.get(P, "orders").current_version == 0
    finally:
        platform.close()
