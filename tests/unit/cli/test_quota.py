from __future__ import annotations

from selfserve.policy import quotas
from selfserve.policy.projects import require_project
from tests.unit.cli.conftest import PASSWORD, Cli


def use_storage(cli: Cli, project: str, amount: float) -> None:
    """Account storage as the data layer does when a dataset is written."""
    with cli.platform.store.begin() as session:
        quotas.add_usage(session, require_project(session, project), "storage", amount)


def limits(cli: Cli, project: str) -> dict[str, float]:
    return {i["resource"]: i["limit"] for i in cli.json("quota", "show", project)["items"]}


def test_show_and_set(cli: Cli) -> None:
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    use_storage(cli, "churn", 2.5e9)

    table = cli.ok("quota", "show", "churn").stdout
    for resource in quotas.RESOURCES:
        assert resource in table
    assert "2.5 GB / 10 GB" in table and "25%" in table
    shown = {i["resource"]: i for i in cli.json("quota", "show", "churn")["items"]}
    assert shown["storage"]["usage"] == 2.5e9 and shown["storage"]["limit"] == 10e9
    assert shown["cpu"]["usage"] is None

    assert "quota:set" in cli.fails("quota", "set", "churn", "storage=20GB").stderr  # admins only
    cli.login_admin()
    table = cli.ok("quota", "set", "churn", "storage=20GB", "runs=4").stdout
    assert "2.5 GB / 20 GB" in table and "0 / 4" in table
    assert limits(cli, "churn") == {**limits(cli, "churn"), "storage": 20e9, "runs": 4}
    assert cli.json("quota", "set", "churn", "cpu=2")["items"][2] == {
        "resource": "cpu",
        "description": "CPU cores per run",
        "unit": "cores",
        "limit": 2.0,
        "usage": None,
        "shown": "2 cores",
    }


def test_set_usage_errors(cli: Cli) -> None:
    cli.login_admin()
    cli.ok("project", "create", "churn")
    # Malformed pairs are usage errors, found before any call to the API.
    for bad in ("storage", "=4", "runs="):
        r = cli.fails("quota", "set", "churn", bad, code=2)
        assert f"'{bad}' is not RESOURCE=VALUE" in r.output
    assert "Missing argument" in cli.fails("quota", "set", "churn", code=2).output
    assert "unknown quota 'disk'" in cli.fails("quota", "set", "churn", "disk=1").stderr
    assert "'abc' is not a number" in cli.fails("quota", "set", "churn", "runs=abc").stderr
    assert "'lots' is not a size" in cli.fails("quota", "set", "churn", "storage=lots").stderr
    assert limits(cli, "churn")["runs"] == 2  # nothing changed


def test_request_approve_deny(cli: Cli) -> None:
    cli.add_user("alice")
    cli.login("alice", PASSWORD)
    cli.ok("project", "create", "churn")
    r = cli.ok("quota", "request", "churn", "storage=50GB", "runs=4", "--reason", "bigger data")
    assert "quota request 1 for churn (storage=50000000000, runs=4) is pending" in r.stdout
    second = cli.json("quota", "request", "churn", "deployments=5")
    assert second["id"] == 2 and second["status"] == "pending" and second["changes"] == {"deployments": 5}

    table = cli.ok("quota", "requests", "--project", "churn", "--status", "pending").stdout
    assert "bigger data" in table and "alice" in table
    assert [q["id"] for q in cli.json("quota", "requests", "--project", "churn")] == [2, 1]
    assert "quota:approve" in cli.fails("quota", "requests").stderr  # every project's: admins only
    assert "quota:approve" in cli.fails("quota", "approve", "1").stderr

    cli.login_admin()
    assert [q["id"] for q in cli.json("quota", "requests", "--status", "pending")] == [2, 1]
    r = cli.ok("quota", "approve", "1", "--note", "granted for Q3")
    assert r.stdout.strip() == "approved quota request 1 for churn (storage=50000000000, runs=4)"
    assert limits(cli, "churn")["storage"] == 50e9 and limits(cli, "churn")["runs"] == 4
    denied = cli.json("quota", "deny", "2", "--note", "not yet")
    assert denied["status"] == "denied" and denied["note"] == "not yet" and denied["decided_by"] == "admin"
    assert limits(cli, "churn")["deployments"] == 2

    assert "already approved" in cli.fails("quota", "approve", "1").stderr
    assert "already denied" in cli.fails("quota", "approve", "2").stderr
    assert "quota request 9 not found" in cli.fails("quota", "deny", "9").stderr
    assert [q["id"] for q in cli.json("quota", "requests", "--status", "approved")] == [1]
    assert cli.ok("quota", "requests", "--status", "pending").stdout.strip() == "(none)"
    assert "'bogus' is not one of" in cli.fails("quota", "requests", "--status", "bogus", code=2).output
