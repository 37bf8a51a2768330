"""The console's pages, run in-process with Streamlit's AppTest against a live API (no browser)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import ElementList

from selfserve.client import Client
from tests.support import REPO, LiveServer, Platform, free_port

APP = REPO / "services" / "console" / "app.py"
SESSION_CLIENT = "selfserve_client"  # where console_state keeps the logged-in SDK client
PASSWORDS = {"alice": "alice-owns-churn-1", "bob": "bob-builds-models-1", "carol": "carol-is-new-here-1"}

StartApp = Callable[[], AppTest]


def login(url: str, user: str) -> Client:
    c = Client(url=url)
    c.login(user, PASSWORDS[user], save=False)
    return c


@pytest.fixture
def api_url(sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A live API the console reaches through SELFSERVE_URL: alice owns ``churn``, bob is a
    scientist in it, carol is in no project."""
    with LiveServer(sqlite_platform.app) as server, Client(url=server.url) as admin:
        admin.login("admin", sqlite_platform.admin_password, save=False)
        for name, password in PASSWORDS.items():
            admin.users.create(name, password=password)
        with login(server.url, "alice") as alice:
            alice.projects.create("churn", description="Churn prediction")
            alice.members.add("churn", "bob", "scientist")
        monkeypatch.setenv("SELFSERVE_URL", server.url)
        yield server.url


@pytest.fixture
def start_app(api_url: str) -> Iterator[StartApp]:
    """Runs the console's app.py; the SDK clients its sessions still hold are closed afterwards."""
    apps: list[AppTest] = []

    def start() -> AppTest:
        at = AppTest.from_file(APP, default_timeout=30).run()
        assert not at.exception, at.exception
        apps.append(at)
        return at

    yield start
    for at in apps:
        if SESSION_CLIENT in at.session_state:
            at.session_state[SESSION_CLIENT].close()


def sign_in(at: AppTest, user: str, password: str) -> AppTest:
    at.text_input(key="login_user").input(user)
    at.text_input(key="login_password").input(password)
    at.button(key="FormSubmitter:login-Sign in").click().run()
    assert not at.exception, at.exception
    return at


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, at.exception
    return at


def texts(elements: ElementList) -> str:
    return "\n".join(str(e.value) for e in elements)


# -- login ----------------------------------------------------------------------------


def test_first_visit_shows_only_the_login_form(start_app: StartApp) -> None:
    at = start_app()
    assert at.text_input(key="login_user").label == "User name"
    assert at.text_input(key="login_password").label == "Password"
    assert not at.sidebar.selectbox


def test_wrong_password_shows_the_servers_message(start_app: StartApp) -> None:
    at = sign_in(start_app(), "alice", "not-her-password")
    assert "wrong user name or password" in texts(at.error)
    assert at.text_input(key="login_password")  # still on the login form
    assert SESSION_CLIENT not in at.session_state


def test_empty_form_asks_for_both_fields(start_app: StartApp) -> None:
    at = sign_in(start_app(), "", "")
    assert "Enter your user name and password." in texts(at.error)


def test_unreachable_api_is_reported_not_raised(start_app: StartApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFSERVE_URL", f"http://127.0.0.1:{free_port()}")
    at = sign_in(start_app(), "alice", PASSWORDS["alice"])
    assert "cannot reach the selfserve API" in texts(at.error)


def test_sign_out_returns_to_the_login_form(start_app: StartApp) -> None:
    at = sign_in(start_app(), "alice", PASSWORDS["alice"])
    next(b for b in at.sidebar.button if b.label == "Sign out").click().run()
    assert at.text_input(key="login_password")
    assert SESSION_CLIENT not in at.session_state


def test_an_ended_session_asks_to_sign_in_again(start_app: StartApp, api_url: str) -> None:
    at = sign_in(start_app(), "alice", PASSWORDS["alice"])
    session_token = at.session_state[SESSION_CLIENT].whoami().token
    with login(api_url, "alice") as elsewhere:
        elsewhere.tokens.revoke(session_token.id)
    at.run()
    assert at.text_input(key="login_password")
    assert "Your session ended" in texts(at.info)


def test_an_api_gone_away_is_reported_and_sign_out_stays(
    start_app: StartApp, sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LiveServer(sqlite_platform.app) as short_lived:
        monkeypatch.setenv("SELFSERVE_URL", short_lived.url)
        at = sign_in(start_app(), "alice", PASSWORDS["alice"])
        assert at.sidebar.selectbox[0].value == "churn"
    at.run()
    assert not at.exception, at.exception
    assert "cannot reach the selfserve API" in texts(at.sidebar.error)
    assert "Sign out" in [b.label for b in at.sidebar.button]


# -- overview -------------------------------------------------------------------------


def test_owner_sees_the_project_and_requests_more_quota(start_app: StartApp) -> None:
    at = sign_in(start_app(), "alice", PASSWORDS["alice"])
    assert at.sidebar.selectbox[0].value == "churn"
    assert at.title[0].value.endswith("churn")
    assert len(at.progress) == 3  # storage, runs, deployments
    assert {m.label for m in at.metric} >= {"Status", "Your role", "CPU", "Memory", "RPM"}
    assert "Request more quota" in [e.label for e in at.expander]
    assert "No quota requests yet." in texts(at.caption)

    next(s for s in at.selectbox if s.label == "Resource").set_value("storage")
    next(t for t in at.text_input if t.label == "New limit").input("20GB")
    next(t for t in at.text_area if t.label == "Reason").input("a bigger training set")
    click(at, "Send request")
    assert "Quota request #1 sent" in texts(at.toast)
    requests = at.dataframe[0].value
    assert requests["Change"].tolist() == ["Storage → 20 GB"]
    assert requests["Status"].tolist() == ["pending"]


def test_a_bad_quota_value_shows_the_servers_message(start_app: StartApp) -> None:
    at = sign_in(start_app(), "alice", PASSWORDS["alice"])
    next(t for t in at.text_input if t.label == "New limit").input("lots")
    click(at, "Send request")
    assert "'lots' is not a size like 20GB" in texts(at.error)
    assert not at.toast


def test_user_without_projects_creates_one(start_app: StartApp) -> None:
    at = sign_in(start_app(), "carol", PASSWORDS["carol"])
    assert "Welcome" in at.title[0].value
    assert "No projects yet." in texts(at.sidebar.caption)

    at.text_input[0].input("Bad Name")
    click(at, "Create project")
    assert "invalid" in texts(at.error)

    at.text_input[0].input("fraud")
    click(at, "Create project")
    assert at.sidebar.selectbox[0].value == "fraud"
    assert at.title[0].value.endswith("fraud")


# -- members --------------------------------------------------------------------------


def test_scientist_sees_members_but_cannot_manage_them(start_app: StartApp) -> None:
    at = sign_in(start_app(), "bob", PASSWORDS["bob"])
    assert at.sidebar.selectbox[0].value == "churn"
    assert "Request more quota" not in [e.label for e in at.expander]
    assert "Only project owners can request more quota." in texts(at.caption)

    at.switch_page("views/members.py").run()
    assert not at.exception, at.exception
    assert {"alice", "bob"} <= set(at.dataframe[0].value["User"])
    assert not at.tabs
    assert "Only project owners can add, change or remove members." in texts(at.caption)


def test_owner_adds_changes_and_removes_a_member(start_app: StartApp) -> None:
    at = sign_in(start_app(), "alice", PASSWORDS["alice"])
    at.switch_page("views/members.py").run()
    assert [t.label for t in at.tabs] == ["Add", "Change role", "Remove"]
    assert at.selectbox(key="add_role").value == "viewer"  # the smallest role is offered first
    assert "service" not in at.selectbox(key="add_role").options

    at.text_input(key="add_user").input("carol")
    click(at, "Add member")
    assert "Added carol to churn as viewer." in texts(at.toast)
    assert "carol" in set(at.dataframe[0].value["User"])

    at.selectbox(key="change_user").set_value("carol")
    at.selectbox(key="change_role_to").set_value("engineer")
    click(at, "Change role")
    assert "carol is now engineer in churn." in texts(at.toast)
    assert at.dataframe[0].value.set_index("User").loc["carol", "Role"] == "engineer"

    at.selectbox(key="remove_user").set_value("carol")
    click(at, "Remove member")
    assert "Tick the box to confirm." in texts(at.error)
    at.checkbox[0].check()
    click(at, "Remove member")
    assert "Removed carol from churn." in texts(at.toast)
    assert "carol" not in set(at.dataframe[0].value["User"])


def test_the_servers_refusal_is_shown(start_app: StartApp) -> None:
    at = sign_in(start_app(), "alice", PASSWORDS["alice"])
    at.switch_page("views/members.py").run()
    at.selectbox(key="change_user").set_value("alice")
    at.selectbox(key="change_role_to").set_value("viewer")
    click(at, "Change role")
    assert "must keep at least one owner" in texts(at.error)

    at.text_input(key="add_user").input("nobody")
    click(at, "Add member")
    assert "user 'nobody' not found" in texts(at.error)


# -- audit ----------------------------------------------------------------------------


def test_audit_lists_events_and_filters_them(start_app: StartApp) -> None:
    at = sign_in(start_app(), "alice", PASSWORDS["alice"])
    at.switch_page("views/audit.py").run()
    assert not at.exception, at.exception
    assert {"project:create", "member:add"} <= set(at.dataframe[0].value["Action"])

    at.text_input(key="audit_user").input("system").run()
    assert set(at.dataframe[0].value["Who"]) == {"system"}

    at.text_input(key="audit_user").input("nobody").run()
    assert not at.dataframe
    assert "No events match these filters" in texts(at.info)


def test_audit_is_refused_to_roles_without_audit_read(start_app: StartApp) -> None:
    at = sign_in(start_app(), "bob", PASSWORDS["bob"])
    at.switch_page("views/audit.py").run()
    assert not at.exception, at.exception
    assert "role 'scientist' may not audit:read in project 'churn'" in texts(at.error)
    assert not at.dataframe


# -- data -----------------------------------------------------------------------------------

CUSTOMERS_CSV = """\
customer_id,plan,monthly_fee,signup_date
1,basic,19.99,2024-01-05
2,pro,49.5,2024-03-02
3,basic,21.0,2025-02-11
"""


@pytest.fixture
def churn_data(api_url: str, tmp_path: Path) -> str:
    """In ``churn``: dataset ``customers`` (3 rows, with a contract), ``plan-stats`` made from it by SQL,
    and two sources: ``health`` answers, ``gone`` does not."""
    csv = tmp_path / "customers.csv"
    csv.write_text(CUSTOMERS_CSV)
    with login(api_url, "alice") as alice:
        alice.datasets.upload("churn", "customers", csv)
        alice.datasets.set_contract("churn", "customers", "columns:\n  plan: {type: string}\n")
        alice.datasets.transform(
            "churn", "plan-stats", sql="select plan, count(*) as customers from customers group by plan order by plan"
        )
        alice.sources.add("churn", "health", "file", {"url": f"{api_url}/api/v1/health", "format": "json"})
        alice.sources.add("churn", "gone", "file", {"url": f"http://127.0.0.1:{free_port()}/x.csv"})
    return api_url


def open_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def test_data_page_lists_datasets_and_shows_one(start_app: StartApp, churn_data: str) -> None:
    at = open_page(sign_in(start_app(), "bob", PASSWORDS["bob"]), "views/data.py")
    assert at.title[0].value.endswith("Data")
    assert [t.label for t in at.tabs] == [
        "Datasets",
        "Preview",
        "Schema",
        "Profile",
        "History & lineage",
        "Sources",
        "Jobs",
    ]
    listed = at.dataframe[0].value
    assert listed["Dataset"].tolist() == ["customers", "plan-stats"]
    assert listed.set_index("Dataset").loc["customers", "Rows"] == 3
    assert bool(listed.set_index("Dataset").loc["customers", "Contract"])

    # customers v0: metrics, preview, schema and a profile chart per column.
    assert at.selectbox(key="data_dataset").value == "customers"
    assert at.selectbox(key="data_version_customers").value == 0
    assert {m.label: m.value for m in at.metric} == {
        "Version": "v0",
        "Rows": "3",
        "Size": at.metric[2].value,
        "Columns": "4",
    }
    preview = at.dataframe[1].value
    assert preview["plan"].tolist() == ["basic", "pro", "basic"]
    schema = at.dataframe[2].value
    assert schema["Column"].tolist() == ["customer_id", "plan", "monthly_fee", "signup_date"]
    assert schema["Type"].tolist() == ["long", "string", "double", "date"]
    profile = at.dataframe[3].value.set_index("Column")
    assert profile.loc["plan", "Distinct"] == 2 and profile.loc["customer_id", "Max"] == 3
    charts = at.get("vega_lite_chart")
    titles = sorted(json.loads(c.proto.spec)["title"] for c in charts)
    assert titles == ["customer_id", "monthly_fee", "plan", "signup_date"]
    assert "Made by **upload of customers.csv**" in texts(at.markdown)


def test_data_page_shows_the_lineage_of_a_transform(start_app: StartApp, churn_data: str) -> None:
    at = open_page(sign_in(start_app(), "alice", PASSWORDS["alice"]), "views/data.py")
    at.selectbox(key="data_dataset").set_value("plan-stats").run()
    assert not at.exception, at.exception
    assert at.dataframe[1].value.to_dict("list") == {"plan": ["basic", "pro"], "customers": [2, 1]}
    history = at.dataframe[4].value
    assert history["Made by"].tolist() == ["duckdb transform"] and history["Inputs"].tolist() == ["customers@0"]
    assert "Read `customers@0`." in texts(at.markdown)
    assert any("group by plan" in c.value for c in at.code)
    (graph,) = at.get("graphviz_chart")
    assert '"customers@0" -> "plan-stats@0"' in graph.proto.spec

    # Jobs: the transform that made it.
    jobs = at.dataframe[-1].value
    assert jobs[["Kind", "Status", "Into"]].values.tolist() == [["transform", "succeeded", "plan-stats"]]


def test_data_page_tests_sources(start_app: StartApp, churn_data: str) -> None:
    at = open_page(sign_in(start_app(), "alice", PASSWORDS["alice"]), "views/data.py")
    assert "**gone** · file" in texts(at.markdown) and "**health** · file" in texts(at.markdown)
    at.button(key="test_source_health").click().run()
    assert "file source 'health' is reachable" in texts(at.success)
    at.button(key="test_source_gone").click().run()
    assert "127.0.0.1" in texts(at.error)


def test_data_page_of_an_empty_project(start_app: StartApp) -> None:
    at = open_page(sign_in(start_app(), "alice", PASSWORDS["alice"]), "views/data.py")
    assert "No datasets yet" in texts(at.info) and "No sources yet" in texts(at.info)
    assert "No ingest or transform jobs yet." in texts(at.caption)
    assert not at.dataframe


# -- products ---------------------------------------------------------------------------------


def test_products_request_grant_and_revoke(start_app: StartApp, churn_data: str) -> None:
    with login(churn_data, "alice") as alice:
        alice.products.publish(
            "churn", "plan-stats", description="Customers per plan", tags=["churn"], sla_freshness="24h"
        )
    with login(churn_data, "carol") as carol:
        carol.projects.create("fraud")

    # Carol finds the product and asks for it for her project.
    at = open_page(sign_in(start_app(), "carol", PASSWORDS["carol"]), "views/products.py")
    catalog = at.dataframe[0].value
    assert catalog["Product"].tolist() == ["churn/plan-stats"]
    assert catalog["SLA"].tolist() == ["24h"] and catalog["Freshness"].tolist() == ["fresh"]
    at.text_area(key="request_reason").input("fraud scores need it")
    click(at, "Request access")
    assert "Access to churn/plan-stats requested for fraud (request #1)." in texts(at.toast)
    assert at.dataframe[0].value["Your access"].tolist() == ["requested"]
    at.text_input(key="products_search").input("nothing like this").run()
    assert "No product matches" in texts(at.info)
    # Carol owns no product of fraud's that anyone asked for.
    assert "No requests yet." in texts(at.caption)

    # Alice, an owner of churn, grants it, then revokes it.
    at = open_page(sign_in(start_app(), "alice", PASSWORDS["alice"]), "views/products.py")
    requests = at.dataframe[1].value
    assert requests[["For project", "Status", "Reason"]].values.tolist() == [
        ["fraud", "requested", "fraud scores need it"]
    ]
    assert at.button(key="decide_revoke").disabled
    at.button(key="decide_grant").click().run()
    assert "Request #1 from fraud for churn/plan-stats is granted." in texts(at.toast)
    assert at.dataframe[1].value["Status"].tolist() == ["granted"]
    assert at.button(key="decide_grant").disabled and not at.button(key="decide_revoke").disabled
    at.button(key="decide_revoke").click().run()
    assert "is revoked" in texts(at.toast)


def test_products_requests_are_for_owners_only(start_app: StartApp, churn_data: str) -> None:
    at = open_page(sign_in(start_app(), "bob", PASSWORDS["bob"]), "views/products.py")
    assert "Nothing is published yet" in texts(at.info)
    assert "Only the owners of **churn** decide requests" in texts(at.caption)


def test_products_request_refused_by_the_server(start_app: StartApp, churn_data: str) -> None:
    with login(churn_data, "alice") as alice:
        alice.products.publish("churn", "customers")
    at = open_page(sign_in(start_app(), "alice", PASSWORDS["alice"]), "views/products.py")
    click(at, "Request access")  # for churn, which owns it
    assert "already belongs to project 'churn'" in texts(at.error)
    assert not at.toast
