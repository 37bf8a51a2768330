"""The Experiments and Models pages in real Chromium, driven by Playwright, against a real ``selfserve up``: MLflow,
the API and the console (the session's ``pipeline_env`` stack). The content is made the way users make it: the plain
``mlflow`` client with the owner's own credentials in the project's workspace."""

from __future__ import annotations

import time
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from selfserve import Client
from tests.browser.test_pipelines_page import CHROMIUM, CHROMIUM_ARGS, PNG_MAGIC
from tests.integration.ml.test_registry import mlflow_as
from tests.pipeline_stack import Stack

if TYPE_CHECKING:
    from playwright.sync_api import Locator

pytestmark = [pytest.mark.browser, pytest.mark.integration]

OWNER_PASSWORD = "olga-owns-models-1"
VIEWER_PASSWORD = "vic-only-looks-1"
RUNS = [("rf-0", {"model": "rf", "depth": "4"}, {"f1": 0.71}), ("rf-1", {"model": "rf", "depth": "8"}, {"f1": 0.83})]


def _make_content(owner: Client, project: str) -> None:
    """Two tiny runs in experiment ``churn`` and model ``churn`` with a version from each; v1 the champion."""
    from mlflow.entities import Metric, Param

    with warnings.catch_warnings(), mlflow_as(owner, project) as ml:
        warnings.simplefilter("ignore")  # MLflow's own notices are not what this test is about
        exp_id = ml.create_experiment(f"{project}/churn")
        now = int(time.time() * 1000)
        ids = []
        for name, params, metrics in RUNS:
            run = ml.create_run(exp_id, run_name=name)
            ml.log_batch(
                run.info.run_id,
                metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                params=[Param(k, v) for k, v in params.items()],
            )
            ml.set_terminated(run.info.run_id)
            ids.append(run.info.run_id)
        ml.create_registered_model(f"{project}.churn")
        for run_id in ids:
            ml.create_model_version(f"{project}.churn", source=f"runs:/{run_id}/model", run_id=run_id)
    owner.models.promote(project, "churn", 1, reason="the first one")


def lineage(main: Locator, *texts: str) -> Locator:
    """The lineage graph that shows all of ``texts``."""
    graph = main.get_by_test_id("stGraphVizChart")
    for text in texts:
        graph = graph.filter(has_text=text)
    return graph


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium)")
def test_experiments_and_models_in_the_console(pipeline_env: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect, sync_playwright

    started = time.perf_counter()
    admin = pipeline_env.admin()
    suffix = uuid.uuid4().hex[:6]
    owner_name, viewer_name = f"olga-{suffix}", f"vic-{suffix}"
    admin.users.create(owner_name, password=OWNER_PASSWORD)
    admin.users.create(viewer_name, password=VIEWER_PASSWORD)
    with Client(url=pipeline_env.url, token="") as owner:
        owner.login(owner_name, OWNER_PASSWORD, save=False)
        project = f"models-{suffix}"
        owner.projects.create(project)
        owner.members.add(project, viewer_name, "viewer")
        _make_content(owner, project)
    made = time.perf_counter() - started

    console_log = pipeline_env.settings.log_dir / "console.log"
    log_start = console_log.stat().st_size if console_log.exists() else 0
    console = f"http://127.0.0.1:{pipeline_env.settings.server.console_port}"
    shots = {page: tmp_path / f"{page}.png" for page in ("experiments", "models")}

    def sign_in(page: Page, user: str, password: str, role: str) -> None:
        page.goto(console)
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Sign in").click()
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_role("combobox", name="Project")).to_have_value(f"{project} · {role}", timeout=15_000)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1200})
            sign_in(page, owner_name, OWNER_PASSWORD, "owner")
            sidebar = page.get_by_test_id("stSidebar")
            main = page.get_by_test_id("stMain")

            # Experiments: both runs with their metric, and the two compared in a chart and side by side.
            sidebar.get_by_role("link", name="Experiments").click()
            expect(main.get_by_role("heading", name="Experiments", level=1)).to_be_visible(timeout=15_000)
            runs = main.get_by_test_id("stDataFrame").first
            expect(runs).to_contain_text("rf-1", timeout=15_000)
            expect(runs).to_contain_text("rf-0")
            expect(runs).to_contain_text("0.83")
            expect(main.get_by_test_id("stVegaLiteChart")).to_be_visible(timeout=15_000)
            expect(main.get_by_test_id("stDataFrame").nth(1)).to_contain_text("depth")
            page.screenshot(path=shots["experiments"], full_page=True)

            # Models: v1 is the champion; the owner promotes v2 after confirming.
            sidebar.get_by_role("link", name="Models").click()
            expect(main.get_by_role("heading", name="Models", level=1)).to_be_visible(timeout=15_000)
            # The champion's lineage first. (While the page is redrawn, the old graph and the new one may both be
            # there for a moment: the graph is found by what it shows.)
            expect(lineage(main, "churn v1", "champion", "run rf-0")).to_have_count(1, timeout=15_000)
            version = main.get_by_role("combobox", name="Version")
            expect(version).to_have_value("v1")
            version.click()
            page.get_by_role("option", name="v2", exact=True).click()
            main.get_by_role("button", name="Promote to champion").click()
            expect(main.get_by_text("Make version 2 the champion of")).to_be_visible(timeout=15_000)
            main.get_by_label("Reason").fill("better f1")
            main.get_by_role("button", name="Confirm").click()
            expect(page.get_by_test_id("stToast")).to_contain_text(
                "churn v2 is the champion now (was v1).", timeout=15_000
            )
            expect(lineage(main, "churn v2", "champion", "run rf-1")).to_have_count(1, timeout=15_000)
            page.screenshot(path=shots["models"], full_page=True)

            # A viewer sees the same models, and no promotion.
            viewer = browser.new_context(viewport={"width": 1440, "height": 1200}).new_page()
            sign_in(viewer, viewer_name, VIEWER_PASSWORD, "viewer")
            viewer.get_by_test_id("stSidebar").get_by_role("link", name="Models").click()
            viewer_main = viewer.get_by_test_id("stMain")
            expect(viewer_main.get_by_text("may look at its models, not promote them")).to_be_visible(timeout=15_000)
            expect(viewer_main.get_by_role("combobox", name="Version")).to_have_value("v2")  # the champion's
            expect(lineage(viewer_main, "churn v2", "champion", "run rf-1")).to_have_count(1, timeout=15_000)
            expect(viewer_main.get_by_role("button", name="Promote to champion")).to_have_count(0)
            expect(viewer_main.get_by_role("button", name="Roll back champion")).to_have_count(0)
        finally:
            browser.close()

    elapsed = time.perf_counter() - started
    print(f"content made in {made:.1f} s; both pages driven in {elapsed - made:.1f} s")
    for shot in shots.values():
        data = shot.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000, f"{shot} is only {len(data)} bytes"
    with Client(url=pipeline_env.url, token="") as owner:
        owner.login(owner_name, OWNER_PASSWORD, save=False)
        model = owner.models.get(project, "churn")
        assert model.champion == 2
        assert [(p.action, p.version, p.previous_version, p.reason) for p in model.promotions][0] == (
            "promote",
            2,
            1,
            "better f1",
        )
    written = console_log.read_bytes()[log_start:].decode(errors="replace") if console_log.exists() else ""
    assert "Traceback" not in written, written
    assert elapsed < 60, f"the test took {elapsed:.1f} s once the stack was up (about 25 s on an idle machine)"
