"""The ``s3`` connector against a moto S3 server over real HTTP."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from selfserve.data.connectors import build, split_secrets
from selfserve.data.connectors.base import Connector
from selfserve.errors import InvalidInput, ServiceUnavailable
from tests.integration.connectors.conftest import read_all
from tests.support import free_port

pytestmark = pytest.mark.integration

KEYS = {"access_key_id": "AKIATESTING", "secret_access_key": "testing-secret"}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def client(endpoint: str, **keys: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=keys.get("access_key_id", KEYS["access_key_id"]),
        aws_secret_access_key=keys.get("secret_access_key", KEYS["secret_access_key"]),
    )


@pytest.fixture
def bucket(endpoint: str, unique: str) -> Iterator[str]:
    name = unique.replace("_", "-")
    s3 = client(endpoint)
    s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for item in s3.list_objects_v2(Bucket=name).get("Contents", []):
            s3.delete_object(Bucket=name, Key=item["Key"])
        s3.delete_bucket(Bucket=name)


def csv_rows(start: int, n: int) -> bytes:
    return ("id,name\n" + "".join(f"{i},n{i}\n" for i in range(start, start + n))).encode()


def connector(endpoint: str, bucket: str, **config: Any) -> Connector:
    values = {"bucket": bucket, "endpoint_url": endpoint, **KEYS, **config}
    cfg, secrets = split_secrets("s3", values)
    return build("s3", cfg, secrets)


def test_one_object_each_format(endpoint: str, bucket: str) -> None:
    s3 = client(endpoint)
    s3.put_object(Bucket=bucket, Key="data/people.csv", Body=csv_rows(0, 25))
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": pa.array(range(25), pa.int16())}), sink)
    s3.put_object(Bucket=bucket, Key="data/people.parquet", Body=sink.getvalue())
    s3.put_object(Bucket=bucket, Key="data/people.ndjson", Body=b"\n".join(b'{"id": %d}' % i for i in range(25)))
    for key, type_ in (
        ("data/people.csv", pa.int64()),
        ("data/people.parquet", pa.int16()),
        ("data/people.ndjson", pa.int64()),
    ):
        c = connector(endpoint, bucket, key=key)
        c.test()
        table, sizes = read_all(c, batch_rows=10)
        assert sizes == [10, 10, 5], key
        assert table.schema.field("id").type == type_
        assert table.column("id").to_pylist() == list(range(25))


def test_prefix_reads_every_data_object(endpoint: str, bucket: str) -> None:
    s3 = client(endpoint)
    s3.put_object(Bucket=bucket, Key="day/part-1.csv", Body=csv_rows(0, 4))
    s3.put_object(Bucket=bucket, Key="day/part-2.csv", Body=csv_rows(4, 4))
    s3.put_object(Bucket=bucket, Key="day/_SUCCESS", Body=b"")
    s3.put_object(Bucket=bucket, Key="day/.part-1.csv.crc", Body=b"crc")
    s3.put_object(Bucket=bucket, Key="other/x.csv", Body=csv_rows(100, 1))
    c = connector(endpoint, bucket, prefix="day/")
    table, _ = read_all(c, batch_rows=3)
    assert table.column("id").to_pylist() == list(range(8))
    table, _ = read_all(c, cursor_column="id", watermark=5)
    assert table.column("id").to_pylist() == [6, 7]
    table, _ = read_all(c, table="other/x.csv")
    assert table.column("id").to_pylist() == [100]


def test_prefix_with_other_columns_is_refused(endpoint: str, bucket: str) -> None:
    s3 = client(endpoint)
    s3.put_object(Bucket=bucket, Key="mix/a.csv", Body=csv_rows(0, 2))
    s3.put_object(Bucket=bucket, Key="mix/b.csv", Body=b"id,colour\n1,red\n")
    with pytest.raises(InvalidInput, match=r"mix/b.csv has other columns than the first object"):
        read_all(connector(endpoint, bucket, prefix="mix/"))


def test_later_object_types_are_conformed(endpoint: str, bucket: str) -> None:
    s3 = client(endpoint)
    s3.put_object(Bucket=bucket, Key="f/a.csv", Body=b"id,v\n1,1.5\n")
    s3.put_object(Bucket=bucket, Key="f/b.csv", Body=b"id,v\n2,3\n")  # v infers as int64 here
    table, _ = read_all(connector(endpoint, bucket, prefix="f/"))
    assert table.schema.field("v").type == pa.float64() and table.column("v").to_pylist() == [1.5, 3.0]


def test_missing_objects(endpoint: str, bucket: str) -> None:
    with pytest.raises(InvalidInput, match="no such object"):
        read_all(connector(endpoint, bucket, key="nope.csv"))
    with pytest.raises(InvalidInput, match="no data objects under"):
        read_all(connector(endpoint, bucket, prefix="empty/"))
    with pytest.raises(InvalidInput, match="does not exist"):
        read_all(connector(endpoint, "no-such-bucket-x", key="a.csv"))


def test_bad_content_names_the_object(endpoint: str, bucket: str) -> None:
    client(endpoint).put_object(Bucket=bucket, Key="bad.csv", Body=b"a,b\n1,2\n3\n")
    with pytest.raises(InvalidInput, match=rf"s3://{bucket}/bad.csv: line 3"):
        read_all(connector(endpoint, bucket, key="bad.csv"))


def test_wrong_secret_is_masked(endpoint: str, bucket: str) -> None:
    client(endpoint).put_object(Bucket=bucket, Key="a.csv", Body=csv_rows(0, 1))
    iam = boto3.client(
        "iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    user = f"{bucket}-reader"
    iam.create_user(UserName=user)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    # From now on the moto server checks signatures (for this module's server; reset below).
    httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
    try:
        good = {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}
        assert read_all(connector(endpoint, bucket, key="a.csv", **good))[0].num_rows == 1
        wrong = {"access_key_id": key["AccessKeyId"], "secret_access_key": "Wr0ng-Secret-Key"}
        with pytest.raises(InvalidInput, match="S3 refused the credentials") as err:
            read_all(connector(endpoint, bucket, key="a.csv", **wrong))
        assert "Wr0ng-Secret-Key" not in str(err.value)
    finally:
        httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"inf").raise_for_status()
        iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
        iam.delete_user_policy(UserName=user, PolicyName="read")
        iam.delete_user(UserName=user)


def test_unreachable(closed_port: int) -> None:
    c = connector(f"http://127.0.0.1:{closed_port}", "abc", key="a.csv")
    with pytest.raises(ServiceUnavailable, match="cannot reach S3"):
        c.test()


def test_bad_config(endpoint: str) -> None:
    with pytest.raises(InvalidInput, match="bucket"):
        connector(endpoint, "x", key="a.csv")
    with pytest.raises(InvalidInput, match="key or a prefix, not both"):
        connector(endpoint, "abc", key="a", prefix="b")
    with pytest.raises(InvalidInput, match="cannot tell the format"):
        read_all(connector(endpoint, "abc", key="a.bin"))
