"""The Pipelines page in real Chromium, driven by Playwright, against a real ``selfserve up``: Prefect, the
platform's worker, the API and the console (the session's ``pipeline_env`` stack)."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest

from selfserve import Client
from tests.pipeline_stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "dana-runs-the-flows-1"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HELLO = """
from prefect import flow, get_run_logger

@flow
def hello(name: str = "world") -> str:
    get_run_logger().info("hello, %s!", name)
    return name
"""


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium)")
def test_run_a_flow_from_the_console(pipeline_env: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    # A new engineer in a new project (so the sidebar selects it), with one deployed flow.
    admin = pipeline_env.admin()
    project = pipeline_env.project(admin, prefix="console")
    user = f"dana-{uuid.uuid4().hex[:6]}"
    admin.users.create(user, password=PASSWORD)
    admin.members.add(project, user, "engineer")
    code = tmp_path / "hello.py"
    code.write_text(HELLO)
    with Client(url=pipeline_env.url, token="") as dana:
        dana.login(user, PASSWORD, save=False)
        dana.flows.deploy(project, code, "hello", name="hello", parameters={"name": "console"}, cron="0 3 1 1 *")

    console_log = pipeline_env.settings.log_dir / "console.log"
    log_start = console_log.stat().st_size if console_log.exists() else 0
    console = f"http://127.0.0.1:{pipeline_env.settings.server.console_port}"
    shot = tmp_path / "pipelines.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1200})
            page.goto(console)
            page.get_by_label("User name").fill(user)
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            sidebar = page.get_by_test_id("stSidebar")
            expect(sidebar.get_by_role("combobox", name="Project")).to_have_value(
                f"{project} · engineer", timeout=15_000
            )

            sidebar.get_by_role("link", name="Pipelines").click()
            main = page.get_by_test_id("stMain")
            expect(main.get_by_role("heading", name="Pipelines", level=1)).to_be_visible(timeout=15_000)
            deployments = main.get_by_test_id("stDataFrame").first
            # The first look at a new project's runs waits for the engine, which is slow on a busy machine.
            expect(deployments).to_contain_text("hello", timeout=60_000)
            expect(deployments).to_contain_text("cron 0 3 1 1 * (UTC)")  # every New Year's Day: not during the test
            expect(main.get_by_role("button", name="Pause")).to_have_count(1)  # an engineer may pause it

            main.get_by_role("button", name="Run now").click()
            expect(page.get_by_test_id("stToast")).to_contain_text("Started run", timeout=15_000)
            # The new run is shown, and the page follows it by itself until it ends, with its log.
            expect(main.get_by_role("combobox", name="Run")).to_have_value(re.compile(r"· hello · "))
            expect(main.locator(".stMarkdownBadge", has_text="completed")).to_be_visible(timeout=150_000)
            expect(main.get_by_test_id("stCode")).to_contain_text("hello, console!", timeout=15_000)
            expect(main.get_by_test_id("stMetric").filter(has_text="CPU-seconds")).to_contain_text(
                re.compile(r"\d\.\d\d")
            )
            expect(main.get_by_role("button", name="Cancel run")).to_have_count(0)
            # Once the run ended the whole page was drawn again: the deployment's last run and the runs table know.
            expect(main.get_by_test_id("stDataFrame").first).to_contain_text("completed")
            expect(main.get_by_test_id("stDataFrame").nth(1)).to_contain_text("completed")

            main.get_by_role("button", name="Pause").click()
            expect(page.get_by_test_id("stToast").filter(has_text="hello is paused.")).to_be_visible(timeout=15_000)
            expect(main.get_by_role("button", name="Resume")).to_be_visible()
            page.screenshot(path=shot, full_page=True)
        finally:
            browser.close()

    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000, f"{shot} is only {len(data)} bytes"
    assert any(r.state == "completed" for r in admin.runs.list(project, flow="hello"))
    assert admin.flows.get(project, "hello").paused
    written = console_log.read_bytes()[log_start:].decode(errors="replace") if console_log.exists() else ""
    assert "Traceback" not in written, written
