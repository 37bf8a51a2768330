"""The platform on S3 (a moto server over HTTP): the store itself, project prefixes, queries,
transforms and products, and the sandbox's walls where the storage credentials reach every project."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from selfserve.data.objectstore import S3ObjectStore, dataset_prefix
from selfserve.data.sandbox import Sandbox, TableRef
from selfserve.errors import InvalidInput
from tests.support import MotoS3, Platform, upload_table

pytestmark = pytest.mark.integration

SECRET_MARK = "bob-private-5521"


def keys(s3: MotoS3, bucket: str, prefix: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_the_s3_store_round_trip_size_and_delete(moto_s3: MotoS3, bucket: str) -> None:
    store = S3ObjectStore(
        bucket,
        "base",
        endpoint_url=moto_s3.url,
        access_key_id=moto_s3.ACCESS_KEY,
        secret_access_key=moto_s3.SECRET_KEY,
    )
    store.put_bytes("projects/a/x.bin", b"12345")
    store.put_bytes("projects/a/sub/y.bin", b"123")
    store.put_bytes("projects/ab/z.bin", b"1")  # shares the text prefix "projects/a", not the folder
    assert store.get_bytes("projects/a/x.bin") == b"12345"
    assert store.size_of("projects/a") == 8 and store.size_of("projects/ab") == 1
    with pytest.raises(FileNotFoundError):
        store.get_bytes("projects/a/none.bin")
    for i in range(1005):  # more than one page of listing and of deletion
        store.put_bytes(f"projects/many/{i}", b"x")
    assert store.size_of("projects/many") == 1005
    store.delete_prefix("projects/many")
    store.delete_prefix("projects/a")
    assert store.size_of("projects/many") == 0 and store.size_of("projects/a") == 0
    assert keys(moto_s3, bucket, "base/") == ["base/projects/ab/z.bin"]


def test_a_project_has_its_prefix_from_creation_to_deletion(
    s3_platform: Platform, moto_s3: MotoS3, bucket: str, tmp_path: Path
) -> None:
    alice = s3_platform.user("alice")
    alice.projects.create("sales")
    assert keys(moto_s3, bucket, "root/projects/sales/") == ["root/projects/sales/.keep"]
    upload_table(alice, "sales", "orders", pa.table({"id": [1, 2]}), tmp_path)
    found = keys(moto_s3, bucket, "root/projects/sales/datasets/orders/")
    assert any(k.endswith(".parquet") for k in found) and any("_delta_log/" in k for k in found)
    alice.projects.delete("sales")
    assert keys(moto_s3, bucket, "root/projects/sales/") == []


@pytest.fixture
def two_projects(s3_platform: Platform, tmp_path: Path) -> tuple[Platform, str]:
    admin = s3_platform.admin()
    alice = s3_platform.user("alice", admin_client=admin)
    bob = s3_platform.user("bob", admin_client=admin)
    alice.projects.create("sales")
    bob.projects.create("churn")
    upload_table(alice, "sales", "orders", pa.table({"id": [1, 2, 3], "amount": [1.0, 2.0, 3.0]}), tmp_path)
    upload_table(bob, "churn", "private", pa.table({"note": [SECRET_MARK]}), tmp_path)
    store = s3_platform.app.state.object_store
    other = next(k for k in keys_of(store, dataset_prefix("churn", "private")) if k.endswith(".parquet"))
    return s3_platform, other


def keys_of(store: S3ObjectStore, prefix: str) -> list[str]:
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=store.key(prefix) + "/")
    return [f"s3://{store.bucket}/{o['Key']}" for page in pages for o in page.get("Contents", [])]


def test_queries_and_transforms_read_s3(two_projects: tuple[Platform, str]) -> None:
    platform, _ = two_projects
    admin = platform.admin()  # admins may act in every project
    assert admin.datasets.query("sales", "SELECT sum(amount) FROM orders").rows == [[6.0]]
    admin.datasets.transform("sales", "big", sql="SELECT * FROM orders WHERE amount > 1")
    assert admin.datasets.get("sales", "big").rows == 2
    code = "import polars as pl\n\ndef transform(orders):\n    return orders.with_columns(pl.col('amount') * 2)\n"
    admin.datasets.transform("sales", "doubled", polars=code)
    assert sorted(r[1] for r in admin.datasets.preview("sales", "doubled").rows) == [2.0, 4.0, 6.0]
    assert admin.datasets.history("sales", "doubled")[0].inputs == [
        {"project": "sales", "dataset": "orders", "version": 0}
    ]


def test_another_projects_s3_objects_are_refused_through_the_api(two_projects: tuple[Platform, str]) -> None:
    platform, other = two_projects
    admin = platform.admin()
    bucket = other.split("/")[2]
    for sql in [
        f"SELECT * FROM read_parquet('{other}')",
        f"SELECT * FROM '{other}'",
        f"SELECT * FROM glob('s3://{bucket}/*')",
        f"SELECT * FROM read_text('s3://{bucket}/root/projects/churn/.keep')",
        f"SELECT * FROM delta_scan('s3://{bucket}/root/projects/churn/datasets/private')",
    ]:
        with pytest.raises(InvalidInput) as e:
            admin.datasets.query("sales", sql)
        assert SECRET_MARK not in e.value.message


def test_the_connection_holds_the_storage_secret_but_reads_only_the_offered_objects(
    two_projects: tuple[Platform, str],
) -> None:
    """Wall 2 on S3, without wall 1: the secret reaches the whole bucket, allowed_paths does not."""
    import duckdb

    platform, other = two_projects
    store = platform.app.state.object_store
    own = [k for k in keys_of(store, dataset_prefix("sales", "orders")) if k.endswith(".parquet")]
    box = Sandbox(store, [TableRef("orders", tuple(own), pa.schema([("id", pa.int64()), ("amount", pa.float64())]))])
    try:
        assert box.con.execute("SELECT count(*) FROM orders").fetchall() == [(3,)]
        for sql in [
            f"SELECT * FROM read_parquet('{other}')",
            f"SELECT * FROM read_parquet('s3://{store.bucket}/root/projects/churn/**/*.parquet')",
            f"SELECT * FROM glob('s3://{store.bucket}/*')",
            f"COPY (SELECT 1) TO 's3://{store.bucket}/root/projects/churn/planted.csv'",
        ]:
            with pytest.raises(duckdb.Error):
                box.con.execute(sql).fetchall()
        # Even the engine's own view of its secret never shows the secret key.
        shown = str(box.con.execute("SELECT * FROM duckdb_secrets()").fetchall())
        assert store.secret_access_key and store.secret_access_key not in shown and "redacted" in shown
    finally:
        box.close()
    assert not any(k.endswith("planted.csv") for k in keys_of(store, "projects/churn"))
