from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.cli.conftest import PASSWORD, Cli

CSV = "customer_id,plan,monthly_fee,churned\n1,basic,19.99,1\n2,pro,49.5,0\n3,basic,21.0,0\n4,pro,55.0,1\n"
FEATURES_SQL = """\
select plan, count(*) as customers, round(avg(monthly_fee), 3) as mean_fee, avg(churned) as churn_rate
from raw_customers group by plan order by plan
"""
POLARS = """\
import polars as pl


def churners(customers: pl.LazyFrame, threshold: pl.LazyFrame) -> pl.LazyFrame:
    limit = threshold.select(pl.col("fee").max()).collect().item()
    return customers.filter((pl.col("churned") == 1) & (pl.col("monthly_fee") > limit))
"""


@pytest.fixture
def alice(cli: Cli, tmp_path: Path) -> Cli:
    """Alice owns ``churn`` with datasets ``raw-customers`` (4 rows) and ``threshold``."""
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    (tmp_path / "customers.csv").write_text(CSV)
    cli.ok("dataset", "upload", "churn", str(tmp_path / "customers.csv"), "--to", "raw-customers")
    (tmp_path / "threshold.csv").write_text("fee\n20\n")
    cli.ok("dataset", "upload", "churn", str(tmp_path / "threshold.csv"), "--to", "threshold")
    return cli


def test_sql_transform_records_its_lineage(alice: Cli, tmp_path: Path) -> None:
    sql = tmp_path / "features.sql"
    sql.write_text(FEATURES_SQL)
    r = alice.ok("transform", "churn", "--sql", str(sql), "--to", "plan-features")
    assert r.stdout.strip() == "transform job 1 wrote 2 rows to plan-features: version 0"
    assert "transform job 1: succeeded" in r.stderr
    rows = alice.json("dataset", "preview", "churn", "plan-features")["rows"]
    assert rows == [["basic", 2, 20.495, 0.5], ["pro", 2, 52.25, 0.5]]
    (latest,) = alice.json("dataset", "history", "churn", "plan-features")
    assert latest["inputs"] == [{"project": "churn", "dataset": "raw-customers", "version": 0}]
    assert latest["producer"]["engine"] == "duckdb"
    table = alice.ok("dataset", "history", "churn", "plan-features").stdout
    assert "raw-customers" in table and "@0" in table  # folded, never cut short

    # SQL from stdin, appended to the same dataset.
    piped = alice.ok(
        "transform", "churn", "--sql", "-", "--to", "plan-features", "--mode", "append", "--json", input=FEATURES_SQL
    )
    assert json.loads(piped.stdout)["result"]["version"] == 1
    assert alice.json("dataset", "show", "churn", "plan-features")["rows"] == 4


def test_polars_transform_with_named_inputs(alice: Cli, tmp_path: Path) -> None:
    code = tmp_path / "churners.py"
    code.write_text(POLARS)
    r = alice.ok(
        "transform",
        "churn",
        "--polars",
        str(code),
        "--function",
        "churners",
        "--input",
        "customers=raw-customers@0",
        "--input",
        "threshold=threshold",
        "--to",
        "churners",
    )
    assert r.stdout.strip() == "transform job 1 wrote 1 row to churners: version 0"
    assert alice.json("dataset", "preview", "churn", "churners")["rows"] == [[4, "pro", 55.0, 1]]
    (latest,) = alice.json("dataset", "history", "churn", "churners")
    assert sorted(i["dataset"] for i in latest["inputs"]) == ["raw-customers", "threshold"]
    assert latest["producer"]["function"] == "churners"


def test_no_wait_then_follow(alice: Cli, tmp_path: Path) -> None:
    sql = tmp_path / "features.sql"
    sql.write_text(FEATURES_SQL)
    r = alice.ok("transform", "churn", "--sql", str(sql), "--to", "plan-features", "--no-wait")
    assert r.stdout.startswith("started transform job 1 into plan-features")
    done = json.loads(alice.ok("dataset", "job", "churn", "1", "--wait", "--json").stdout)
    assert done["status"] == "succeeded" and done["result"]["version"] == 0


def test_transform_errors(alice: Cli, tmp_path: Path) -> None:
    sql = tmp_path / "q.sql"
    sql.write_text("select * from raw_customers")
    code = tmp_path / "t.py"
    code.write_text("def transform(raw_customers):\n    raise ValueError('no good')\n")
    alice.fails("transform", "churn", "--to", "x", code=2)
    alice.fails("transform", "churn", "--sql", str(sql), "--polars", str(code), "--to", "x", code=2)
    alice.fails("transform", "churn", "--sql", str(sql), "--input", "a=b", "--to", "x", code=2)
    alice.fails("transform", "churn", "--sql", str(tmp_path / "missing.sql"), "--to", "x", code=2)
    alice.fails("transform", "churn", "--sql", str(sql), code=2)

    bad = tmp_path / "bad.sql"
    bad.write_text("select * from read_parquet('/etc/passwd')")
    assert "not allowed" in alice.fails("transform", "churn", "--sql", str(bad), "--to", "x").stderr
    bad.write_text("select * from nope")
    assert "nope" in alice.fails("transform", "churn", "--sql", str(bad), "--to", "x").stderr
    r = alice.fails("transform", "churn", "--polars", str(code), "--to", "x")
    assert "no good" in r.stderr
    assert "rows read" not in r.stderr
    assert [d["name"] for d in alice.json("dataset", "list", "churn")] == ["raw-customers", "threshold"]
