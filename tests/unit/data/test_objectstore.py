"""The object store: keys never leave the root; settings choose the implementation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from selfserve.data.objectstore import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    dataset_prefix,
    from_settings,
    project_prefix,
    safe_key,
)
from selfserve.errors import InvalidInput
from selfserve.settings import Settings


@pytest.mark.parametrize(
    "parts",
    [
        ("..",),
        ("a", "..", "b"),
        ("/etc/passwd",),
        ("a//b",),
        ("",),
        ("a", ""),
        (".",),
        ("a\x00b",),
        ("a\\..\\b",),
        ("projects", "../../etc"),
    ],
    ids=[
        "dotdot",
        "inner dotdot",
        "absolute",
        "empty segment",
        "empty",
        "empty part",
        "dot",
        "nul",
        "backslash",
        "escape in a part",
    ],
)
def test_safe_key_refuses_keys_that_could_leave_the_root(parts: tuple[str, ...]) -> None:
    with pytest.raises(InvalidInput, match="invalid storage path"):
        safe_key(*parts)


def test_safe_key_joins_good_parts() -> None:
    assert safe_key("projects", "p", "datasets", "d") == "projects/p/datasets/d"
    assert project_prefix("churn") == "projects/churn"
    assert dataset_prefix("churn", "features") == "projects/churn/datasets/features"
    with pytest.raises(InvalidInput):
        dataset_prefix("churn", "../other")


def test_local_store_round_trip_size_and_delete(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "root")
    store.put_bytes("projects/a/x.bin", b"12345")
    store.put_bytes("projects/a/sub/y.bin", b"123")
    store.put_bytes("projects/b/z.bin", b"1")
    assert store.get_bytes("projects/a/x.bin") == b"12345"
    assert store.size_of("projects/a") == 8 and store.size_of("projects/none") == 0
    assert store.uri("projects/a") == str((tmp_path / "root" / "projects" / "a").resolve())
    store.delete_prefix("projects/a")
    store.delete_prefix("projects/a")  # idempotent
    assert store.size_of("projects/a") == 0 and store.size_of("projects/b") == 1
    with pytest.raises(FileNotFoundError):
        store.get_bytes("projects/a/x.bin")
    store.ensure_prefix("projects/c")
    assert (tmp_path / "root" / "projects" / "c").is_dir()


def test_local_store_does_not_follow_a_link_out_of_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    store = LocalObjectStore(tmp_path / "root")
    store.ensure_prefix("projects/a")
    os.symlink(outside, tmp_path / "root" / "projects" / "a" / "link")
    with pytest.raises(InvalidInput):
        store.get_bytes("projects/a/link/secret.txt")
    with pytest.raises(InvalidInput):
        store.put_bytes("projects/a/link/planted.txt", b"x")
    assert not (outside / "planted.txt").exists()
    assert store.size_of("projects/a") == 0  # the link's target is not counted as the project's


def test_from_settings_chooses_by_url(tmp_path: Path) -> None:
    default = from_settings(Settings(home=tmp_path))
    assert isinstance(default, LocalObjectStore) and default.root == (tmp_path / "storage").resolve()
    local = from_settings(Settings(home=tmp_path, storage={"url": str(tmp_path / "elsewhere")}))
    assert isinstance(local, LocalObjectStore) and local.root == (tmp_path / "elsewhere").resolve()
    s3 = from_settings(
        Settings(
            home=tmp_path,
            storage={
                "url": "s3://bucket/some/prefix/",
                "s3_endpoint_url": "http://127.0.0.1:9000",
                "s3_access_key_id": "AK",
                "s3_secret_access_key": "SK'x",
            },
        )
    )
    assert isinstance(s3, S3ObjectStore) and isinstance(s3, ObjectStore)
    assert (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    assert s3.uri("projects/p") == "s3://bucket/some/prefix/projects/p"
    assert s3.storage_options() == {
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "AK",
        "AWS_SECRET_ACCESS_KEY": "SK'x",
    }
    [secret] = s3.duckdb_setup()
    assert "ENDPOINT '127.0.0.1:9000'" in secret and "USE_SSL false" in secret and "SECRET 'SK''x'" in secret
    with pytest.raises(InvalidInput):
        s3.uri("../other-bucket")
    with pytest.raises(ValueError, match="unsupported storage URL"):
        from_settings(Settings(home=tmp_path, storage={"url": "gs://bucket"}))
