"""The Serving page in real Chromium, driven by Playwright, against a real ``selfserve up``: MLflow holds the model,
the serving runtime runs a BentoML process per deployment, and the API's gateway routes predictions (the session's
``pipeline_env`` stack). The model is made the way users make it: the plain ``mlflow`` client with the owner's own
credentials in the project's workspace, a tiny scikit-learn model saved with skops."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from selfserve import Client
from tests.browser.test_pipelines_page import CHROMIUM, CHROMIUM_ARGS, PNG_MAGIC
from tests.pipeline_stack import Stack
from tests.support import log_skops_model

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "sami-serves-models-1"
PREDICTIONS = 20


def _register_model(owner: Client, project: str) -> None:
    """Version 1 of ``<project>.clf``, a logistic regression over ``age`` and ``income`` saved with skops; the
    champion."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    x = pd.DataFrame({"age": [23, 35, 47, 59, 31, 62], "income": [1.2, 3.4, 2.2, 5.1, 0.8, 4.4]})
    model = LogisticRegression().fit(x, (x["income"] > 2.0).astype(int))
    log_skops_model(owner, project, model, x)
    owner.models.promote(project, "clf", 1, reason="the first one")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium)")
def test_change_a_routes_split_in_the_console(pipeline_env: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    started = time.perf_counter()
    admin = pipeline_env.admin()
    suffix = uuid.uuid4().hex[:6]
    owner_name, project = f"sami-{suffix}", f"serve-{suffix}"
    admin.users.create(owner_name, password=PASSWORD)
    owner = Client(url=pipeline_env.url, token="")
    pipeline_env.clients.append(owner)
    owner.login(owner_name, PASSWORD, save=False)
    owner.projects.create(project)
    _register_model(owner, project)

    # Two deployments of the champion (the project's quota allows two), a route sending everything to blue, and
    # some traffic for the charts.
    try:
        for name in ("blue", "green"):
            owner.deployments.create(project, name, "clf@champion")
        for name in ("blue", "green"):
            owner.deployments.wait_ready(project, name, timeout=240)
        owner.routes.create(project, "score", "blue")
        for i in range(PREDICTIONS):
            answer = owner.routes.predict(project, "score", {"age": 20 + i, "income": i / 5})
            assert answer.target == "blue" and answer.model_version == 1
        made = time.perf_counter() - started

        console_log = pipeline_env.settings.log_dir / "console.log"
        log_start = console_log.stat().st_size if console_log.exists() else 0
        console = f"http://127.0.0.1:{pipeline_env.settings.server.console_port}"
        shot = tmp_path / "serving.png"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1400})
                page.goto(console)
                page.get_by_label("User name").fill(owner_name)
                page.get_by_label("Password", exact=True).fill(PASSWORD)
                page.get_by_role("button", name="Sign in").click()
                sidebar = page.get_by_test_id("stSidebar")
                expect(sidebar.get_by_role("combobox", name="Project")).to_have_value(
                    f"{project} · owner", timeout=15_000
                )

                sidebar.get_by_role("link", name="Serving").click()
                main = page.get_by_test_id("stMain")
                expect(main.get_by_role("heading", name="Serving", level=1)).to_be_visible(timeout=15_000)
                routes = main.get_by_test_id("stDataFrame").first
                expect(routes).to_contain_text("score", timeout=15_000)
                expect(routes).to_contain_text("blue 100%")
                # The split as a bar, and the traffic: requests, errors and latency per minute, and the summary.
                expect(main.get_by_test_id("stVegaLiteChart")).to_have_count(4, timeout=15_000)
                summary = main.get_by_test_id("stDataFrame").filter(has_text="Error rate")
                expect(summary).to_contain_text(str(PREDICTIONS))
                expect(main.get_by_text(f"{PREDICTIONS} requests, 0 errors in the last 15 minutes")).to_be_visible()
                deployments = main.get_by_test_id("stDataFrame").filter(has_text="Restarts")
                expect(deployments).to_contain_text("green")
                expect(deployments).to_contain_text("clf@1")
                expect(main.locator(".stMarkdownBadge", has_text="ready")).to_be_visible()

                # Canary: 30% to green, through the form.
                blue, green = main.get_by_label("blue", exact=True), main.get_by_label("green", exact=True)
                expect(blue).to_have_value("100")
                expect(green).to_have_value("0")
                blue.fill("70")
                blue.press("Tab")
                green.fill("30")
                green.press("Tab")
                main.get_by_role("button", name="Save split").click()
                expect(page.get_by_test_id("stToast")).to_contain_text(
                    "Route score sends blue 70% · green 30% now (revision 2).", timeout=15_000
                )
                expect(main.get_by_test_id("stDataFrame").first).to_contain_text("blue 70% · green 30%")
                page.screenshot(path=shot, full_page=True)
            finally:
                browser.close()

        elapsed = time.perf_counter() - started
        print(f"model, deployments and traffic made in {made:.1f} s; the page driven in {elapsed - made:.1f} s")
        data = shot.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000, f"{shot} is only {len(data)} bytes"
        route = owner.routes.get(project, "score")
        assert (route.spec.targets, route.revision) == ({"blue": 70, "green": 30}, 2)
        assert [h.action for h in owner.routes.history(project, "score")] == ["set", "create"]
        written = console_log.read_bytes()[log_start:].decode(errors="replace") if console_log.exists() else ""
        assert "Traceback" not in written, written
    finally:  # the BentoML servers are not left running for the rest of the session's tests
        for r in owner.routes.list(project):
            owner.routes.delete(project, r.name)
        for d in owner.deployments.list(project):
            owner.deployments.delete(project, d.name)
