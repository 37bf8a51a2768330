from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.unit.cli.conftest import PASSWORD, Cli

CSV = "customer_id,plan,monthly_fee\n1,basic,19.99\n2,pro,49.5\n3,basic,21.0\n"
MORE = "customer_id,plan,monthly_fee\n4,pro,55.0\n"
CONTRACT = """\
columns:
  customer_id: {type: integer, not_null: true, unique: true}
  plan: {type: string, allowed: [basic, pro]}
  monthly_fee: {type: number, min: 0, max: 100}
rows: {min: 1}
"""


@pytest.fixture
def alice(cli: Cli) -> Cli:
    """Alice, logged in, owns project ``churn``."""
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    return cli


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_upload_list_show_history_schema_preview(alice: Cli, tmp_path: Path) -> None:
    first = write(tmp_path, "customers.csv", CSV)
    r = alice.ok("dataset", "upload", "churn", first, "--to", "customers")
    assert r.stdout.startswith("uploaded customers.csv to customers: version 0, 3 rows (")
    v1 = alice.json("dataset", "upload", "churn", write(tmp_path, "more.csv", MORE), "--to", "customers")
    assert v1["version"] == 1 and v1["operation"] == "append" and v1["rows"] == 4 and v1["rows_written"] == 1

    listed = alice.json("dataset", "list", "churn")
    assert [(d["name"], d["current_version"], d["rows"]) for d in listed] == [("customers", 1, 4)]
    assert "customers" in alice.ok("dataset", "list", "churn").stdout

    shown = alice.ok("dataset", "show", "churn", "customers").stdout
    assert "current_version  1" in shown and "columns:" in shown and "monthly_fee" in shown
    assert alice.json("dataset", "show", "churn", "customers")["columns"][1] == {
        "name": "plan",
        "type": "string",
        "nullable": True,
    }

    history = alice.json("dataset", "history", "churn", "customers")
    assert [(v["version"], v["producer"]) for v in history] == [
        (1, {"kind": "upload", "file": "more.csv"}),
        (0, {"kind": "upload", "file": "customers.csv"}),
    ]
    table = alice.ok("dataset", "history", "churn", "customers").stdout
    assert "append" in table and "create" in table and "upload" in table

    schema = alice.json("dataset", "schema", "churn", "customers", "--version", "0")
    assert [(c["name"], c["type"]) for c in schema] == [
        ("customer_id", "long"),
        ("plan", "string"),
        ("monthly_fee", "double"),
    ]

    rows = alice.json("dataset", "preview", "churn", "customers")
    assert rows["row_count"] == 4 and not rows["truncated"]
    assert sorted(rows["rows"]) == [[1, "basic", 19.99], [2, "pro", 49.5], [3, "basic", 21.0], [4, "pro", 55.0]]
    old = alice.json("dataset", "preview", "churn", "customers", "--version", "0", "--limit", "2")
    assert old["rows"] == [[1, "basic", 19.99], [2, "pro", 49.5]] and old["truncated"]
    now = alice.json("dataset", "preview", "churn", "customers", "--as-of", history[0]["created_at"])
    assert now["row_count"] == 4
    table = alice.ok("dataset", "preview", "churn", "customers", "-n", "3").stdout
    assert "customer_id" in table and "19.99" in table
    assert table.rstrip().endswith("3 rows (more rows not shown: raise --limit)")


def test_upload_options_and_modes(alice: Cli, tmp_path: Path) -> None:
    semi = write(tmp_path, "latin.txt", "id;city\n1;Zürich\n")
    (tmp_path / "latin.txt").write_bytes("id;city\n1;Zürich\n".encode("latin-1"))
    alice.ok(
        "dataset",
        "upload",
        "churn",
        semi,
        "--to",
        "cities",
        "--format",
        "csv",
        "--delimiter",
        ";",
        "--encoding",
        "latin-1",
    )
    assert alice.json("dataset", "preview", "churn", "cities")["rows"] == [[1, "Zürich"]]

    wider = write(tmp_path, "wider.csv", "id,city,zip\n2,Bern,3000\n")
    r = alice.fails("dataset", "upload", "churn", wider, "--to", "cities")
    assert "new column 'zip'" in r.stderr
    assert alice.json("dataset", "upload", "churn", wider, "--to", "cities", "--evolve")["rows"] == 2
    replaced = alice.json("dataset", "upload", "churn", wider, "--to", "cities", "--mode", "overwrite")
    assert replaced["rows"] == 1

    nd = write(tmp_path, "events.ndjson", '{"id": 1, "kind": "click"}\n{"id": 2, "kind": "view"}\n')
    assert alice.json("dataset", "upload", "churn", nd, "--to", "events")["rows"] == 2


def test_query_and_export(alice: Cli, tmp_path: Path) -> None:
    alice.ok("dataset", "upload", "churn", write(tmp_path, "customers.csv", CSV), "--to", "raw-customers")
    sql = "select plan, count(*) as n from raw_customers group by plan order by plan"
    result = alice.json("dataset", "query", "churn", sql)
    assert [c["name"] for c in result["columns"]] == ["plan", "n"]
    assert result["rows"] == [["basic", 2], ["pro", 1]]
    table = alice.ok("dataset", "query", "churn", sql).stdout
    assert "basic" in table and table.rstrip().endswith("2 rows")
    piped = alice.ok("dataset", "query", "churn", "-", "--limit", "1", "--json", input="select * from raw_customers")
    assert json.loads(piped.stdout)["truncated"] is True

    r = alice.fails("dataset", "query", "churn", "select * from read_csv('/etc/passwd')")
    assert "not allowed" in r.stderr
    assert "nope" in alice.fails("dataset", "query", "churn", "select * from nope").stderr

    out = tmp_path / "out.csv"
    r = alice.ok("dataset", "export", "churn", "raw-customers", str(out))
    assert "exported the latest version of raw-customers" in r.stdout and "(csv," in r.stdout
    assert out.read_text().splitlines()[0].replace('"', "") == "customer_id,plan,monthly_fee"
    parquet = tmp_path / "v0.data"
    alice.ok("dataset", "export", "churn", "raw-customers", str(parquet), "--format", "parquet", "--version", "0")
    assert pq.read_table(parquet).num_rows == 3
    ndjson = tmp_path / "out.ndjson"
    alice.ok("dataset", "export", "churn", "raw-customers", str(ndjson))
    assert json.loads(ndjson.read_text().splitlines()[0])["plan"] == "basic"
    assert (
        "has no data at version 7"
        in alice.fails("dataset", "export", "churn", "raw-customers", str(out), "-v", "7").stderr
    )


def test_contract_set_show_check_remove(alice: Cli, tmp_path: Path) -> None:
    alice.ok("dataset", "upload", "churn", write(tmp_path, "customers.csv", CSV), "--to", "customers")
    contract = write(tmp_path, "contract.yaml", CONTRACT)
    assert "contract set on customers" in alice.ok("dataset", "contract", "set", "churn", "customers", contract).stdout
    assert alice.ok("dataset", "contract", "show", "churn", "customers").stdout == CONTRACT
    assert alice.json("dataset", "show", "churn", "customers")["has_contract"] is True
    assert "passes its contract" in alice.ok("dataset", "check", "churn", "customers").stdout
    assert alice.json("dataset", "check", "churn", "customers") == {"passed": True, "failures": []}

    # A write that breaks the contract (of the dataset it would leave) commits nothing and says which checks failed.
    bad = write(tmp_path, "bad.csv", "customer_id,plan,monthly_fee\n1,gold,19.99\n9,pro,250\n")
    r = alice.fails("dataset", "upload", "churn", bad, "--to", "customers")
    assert r.stderr.startswith("error: contract failed: 3 checks on 5 rows\n")
    assert "- column customer_id: 2 of 5 rows share their value with another row" in r.stderr
    assert "- column plan: 1 of 5 rows not in allowed [basic, pro]" in r.stderr
    assert "- column monthly_fee: 1 of 5 rows above max 100" in r.stderr
    assert alice.json("dataset", "show", "churn", "customers")["current_version"] == 0

    # A stricter contract fails on the data already there: `check` lists each failure, exit 1.
    stricter = write(tmp_path, "stricter.yaml", "columns:\n  plan: {type: string, allowed: [basic]}\nrows: {min: 5}\n")
    alice.ok("dataset", "contract", "set", "churn", "customers", stricter)
    r = alice.fails("dataset", "check", "churn", "customers")
    assert r.stderr.startswith("error: the latest version of customers fails 2 contract checks\n")
    assert "- column plan: 1 of 3 rows not in allowed [basic]" in r.stderr
    assert "e.g. customer_id=2, plan=pro" in r.stderr
    r = alice.fails("dataset", "check", "churn", "customers", "--json")
    assert sorted(f["check"] for f in json.loads(r.stdout)["failures"]) == ["allowed", "rows_min"]

    bad_yaml = write(tmp_path, "bad.yaml", "columns:\n  plan: {type: text}\n")
    assert "unknown type 'text'" in alice.fails("dataset", "contract", "set", "churn", "customers", bad_yaml).stderr
    alice.fails("dataset", "contract", "set", "churn", "customers", str(tmp_path / "missing.yaml"), code=2)

    assert alice.ok("dataset", "contract", "remove", "churn", "customers").stdout.strip() == (
        "removed the contract of customers"
    )
    assert "has no contract" in alice.fails("dataset", "contract", "show", "churn", "customers").stderr
    assert "has no contract" in alice.fails("dataset", "check", "churn", "customers").stderr


def test_delete_needs_yes(alice: Cli, tmp_path: Path) -> None:
    alice.ok("dataset", "upload", "churn", write(tmp_path, "customers.csv", CSV), "--to", "customers")
    assert "--yes" in alice.fails("dataset", "delete", "churn", "customers").stderr
    assert alice.ok("dataset", "delete", "churn", "customers", "--yes").stdout.strip() == "deleted dataset customers"
    assert "dataset 'customers' not found" in alice.fails("dataset", "show", "churn", "customers").stderr
    assert alice.ok("dataset", "list", "churn").stdout.strip() == "(none)"


def test_dataset_errors(alice: Cli, tmp_path: Path) -> None:
    csv = write(tmp_path, "customers.csv", CSV)
    alice.fails("dataset", "upload", "churn", str(tmp_path / "missing.csv"), "--to", "x", code=2)
    alice.fails("dataset", "upload", "churn", csv, code=2)  # no --to
    alice.fails("dataset", "upload", "churn", csv, "--to", "x", "--format", "xlsx", code=2)
    alice.fails("dataset", "preview", "churn", "x", "--version", "0", "--as-of", "2025-01-01T00:00:00", code=2)

    assert "path.name" in alice.fails("dataset", "upload", "churn", csv, "--to", "Bad_Name").stderr
    empty = write(tmp_path, "empty.csv", "")
    assert "empty" in alice.fails("dataset", "upload", "churn", empty, "--to", "x").stderr
    assert "not found" in alice.fails("dataset", "show", "churn", "nope").stderr
    assert "not found" in alice.fails("dataset", "list", "nope").stderr
    alice.ok("dataset", "upload", "churn", csv, "--to", "customers")
    assert (
        "is later" in alice.fails("dataset", "preview", "churn", "customers", "--as-of", "2000-01-01T00:00:00").stderr
    )

    # Bob is in no project: churn's datasets are invisible to him.
    alice.add_user("bob")
    alice.login("bob", PASSWORD)
    assert "not found" in alice.fails("dataset", "list", "churn").stderr
    assert "not found" in alice.fails("dataset", "upload", "churn", csv, "--to", "mine").stderr
