"""The console in real Chromium, driven by Playwright, against a live API and a real `streamlit run`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from selfserve.client import Client
from tests.support import REPO, LiveServer, Platform, free_port, wait_http

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ALICE_PASSWORD = "alice-owns-churn-1"
BOB_PASSWORD = "bob-builds-models-1"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def console(sqlite_platform: Platform, tmp_path: Path) -> Iterator[str]:
    """A live API with alice owning ``churn`` (bob a scientist in it, dataset ``customers`` in it), and the
    console in front of it."""
    with LiveServer(sqlite_platform.app) as api:
        with Client(url=api.url) as admin:
            admin.login("admin", sqlite_platform.admin_password, save=False)
            admin.users.create("alice", password=ALICE_PASSWORD)
            admin.users.create("bob", password=BOB_PASSWORD)
        with Client(url=api.url) as alice:
            alice.login("alice", ALICE_PASSWORD, save=False)
            alice.projects.create("churn", description="Churn prediction for the subscriptions team")
            alice.members.add("churn", "bob", "scientist")
            csv = tmp_path / "customers.csv"
            csv.write_text("customer_id,plan,monthly_fee\n1,basic,19.99\n2,pro,49.5\n3,basic,21.0\n")
            alice.datasets.upload("churn", "customers", csv)

        port = free_port()
        # SELFSERVE_HOME and SELFSERVE_CONFIG_DIR come from the test's (isolated) environment; HOME keeps
        # the developer's ~/.streamlit out of the run.
        env = {**os.environ, "SELFSERVE_URL": api.url, "HOME": str(tmp_path / "streamlit-home")}
        log_path = tmp_path / "console.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streamlit",
                    "run",
                    "services/console/app.py",
                    "--server.headless",
                    "true",
                    "--server.address",
                    "127.0.0.1",
                    "--server.port",
                    str(port),
                    "--server.fileWatcherType",
                    "none",
                    "--client.toolbarMode",
                    "minimal",
                    "--browser.gatherUsageStats",
                    "false",
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            try:
                wait_http(f"http://127.0.0.1:{port}/_stcore/health")
            except TimeoutError:
                pytest.fail(f"the console did not start:\n{log_path.read_text(errors='replace')}")
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        console_log = log_path.read_text(errors="replace")
        assert "Traceback" not in console_log, console_log


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium)")
def test_console_login_overview_data_members_audit(console: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots: list[Path] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(console)

            # A wrong password shows the server's message, not a traceback.
            user_box = page.get_by_label("User name")
            password_box = page.get_by_label("Password", exact=True)  # not the show-password button
            user_box.fill("alice")
            password_box.fill("not-her-password")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_text("wrong user name or password")).to_be_visible(timeout=15_000)
            shots.append(tmp_path / "login.png")
            page.screenshot(path=shots[-1], full_page=True)

            # The right one opens the console on the project's Overview.
            password_box.fill(ALICE_PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            sidebar = page.get_by_test_id("stSidebar")
            expect(sidebar.get_by_role("combobox", name="Project")).to_have_value("churn · owner", timeout=15_000)
            main = page.get_by_test_id("stMain")
            expect(main.get_by_role("heading", name="churn", level=1)).to_be_visible()
            expect(main).to_contain_text("Churn prediction for the subscriptions team")
            expect(main.get_by_test_id("stProgress")).to_have_count(3)  # storage, runs, deployments
            expect(main).to_contain_text(re.compile(r"Storage · [\d.]+ KB / 10 GB"))  # the customers dataset
            expect(main).to_contain_text("Limits")
            expect(main.get_by_text("Request more quota")).to_be_visible()  # alice owns churn
            shots.append(tmp_path / "overview.png")
            page.screenshot(path=shots[-1], full_page=True)

            sidebar.get_by_role("link", name="Data", exact=True).click()
            expect(main.get_by_role("heading", name="Data", level=1)).to_be_visible(timeout=15_000)
            datasets = main.get_by_test_id("stDataFrame").first
            expect(datasets).to_contain_text("customers", timeout=15_000)
            expect(main.get_by_test_id("stMetric").filter(has_text="Rows")).to_contain_text("3")
            shots.append(tmp_path / "data.png")
            page.screenshot(path=shots[-1], full_page=True)

            sidebar.get_by_role("link", name="Members").click()
            expect(main.get_by_role("heading", name="Members", level=1)).to_be_visible(timeout=15_000)
            members = main.get_by_test_id("stDataFrame").first
            expect(members).to_contain_text("alice")
            expect(members).to_contain_text("bob")
            expect(members).to_contain_text("scientist")
            expect(main.get_by_role("tab", name="Add")).to_be_visible()
            shots.append(tmp_path / "members.png")
            page.screenshot(path=shots[-1], full_page=True)

            sidebar.get_by_role("link", name="Audit trail").click()
            expect(main.get_by_role("heading", name="Audit trail", level=1)).to_be_visible(timeout=15_000)
            events = main.get_by_test_id("stDataFrame")
            expect(events).to_contain_text("project:create")
            expect(events).to_contain_text("member:add")
            shots.append(tmp_path / "audit.png")
            page.screenshot(path=shots[-1], full_page=True)

            sidebar.get_by_role("button", name="Sign out").click()
            expect(page.get_by_label("Password", exact=True)).to_be_visible(timeout=15_000)
        finally:
            browser.close()

    for shot in shots:
        data = shot.read_bytes()
        assert data.startswith(PNG_MAGIC), shot
        assert len(data) > 20_000, f"{shot} is only {len(data)} bytes"
