"""The built-in ``train`` flow through the real stack: Prefect runs it on the platform's worker, it reads
a dataset version through the platform, logs to the MLflow server as the project's service account,
and promotes through the platform. The champion is then checked from the outside, with the owner's
own MLflow account: loaded from the registry, scored on the held-out rows the run logged.
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn import metrics
from sklearn.datasets import load_breast_cancer
from typer.testing import CliRunner

from selfserve import Client
from selfserve.cli import app
from selfserve.cli.train import find_result
from selfserve.ml.training import row_ids
from tests.pipeline_stack import Stack
from tests.support import upload_table

pytestmark = pytest.mark.integration

REQUEST = {"dataset": "cancer", "target": "target", "task": "classification", "model": "clf"}


def result_of(client: Client, project: str, run_id: str, timeout: float = 60) -> tuple[dict[str, Any], list[str]]:
    """The run's result line (it may reach the engine shortly after the final state) and its log lines."""
    deadline = time.monotonic() + timeout
    while True:
        lines = client.runs.logs(project, run_id, limit=200).lines
        found = find_result(lines)
        if found is not None or time.monotonic() > deadline:
            assert found is not None, [x.message for x in lines]
            return found, [x.message for x in lines]
        time.sleep(0.5)


def test_train_registers_a_champion_and_keeps_it_against_a_weaker_challenger(
    pipeline_env: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = pipeline_env.admin()
    name = f"t{uuid.uuid4().hex[:8]}"
    password = admin.users.create(name).password
    assert password
    owner = Client(url=pipeline_env.url, token="")
    pipeline_env.clients.append(owner)  # closed after the test
    token = owner.login(name, password, save=False).token
    project = pipeline_env.project(owner, prefix="train")
    frame = load_breast_cancer(as_frame=True).frame
    upload_table(owner, project, "cancer", pa.Table.from_pandas(frame, preserve_index=False), tmp_path)

    started = time.monotonic()
    owner.flows.deploy_builtin(project, "train", "train-clf", {**REQUEST, "candidates": ["rf", "linear"]})
    run = owner.flows.run(project, "train-clf")
    done = owner.runs.wait(project, run.id, timeout=300)
    assert done.state == "completed", done
    first, lines = result_of(owner, project, run.id)
    seconds = time.monotonic() - started
    assert "dataset cancer: version 0 (the latest, pinned for this run)" in lines
    assert any(m.startswith("rf: validation f1 ") for m in lines) and any(m.startswith("linear: ") for m in lines)
    assert first["promoted"] is True and first["version"] == 1 and first["dataset_version"] == 0
    assert {c["name"] for c in first["candidates"]} == {"rf", "linear"}

    model = owner.models.get(project, "clf")
    assert (model.champion, model.challenger) == (1, None)  # the platform drops challenger from a champion
    (promotion,) = model.promotions
    assert promotion.actor == f"svc.{project}" and promotion.reason.startswith("no champion yet: version 1")

    # From the outside: the champion, loaded with the owner's own MLflow account, scores what was logged.
    env = owner.mlflow.env(project).environment()
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # mlflow.pyfunc's import-time notice
        import mlflow
        import mlflow.pyfunc

        split = mlflow.artifacts.load_dict(f"runs:/{first['run_id']}/split.json")
        champion = mlflow.pyfunc.load_model(f"models:/{project}.clf@champion")
    rows = frame[np.isin(row_ids(frame), split["heldout_ids"])]
    assert len(rows) == len(split["heldout_ids"]) == 114
    f1 = metrics.f1_score(rows["target"], champion.predict(rows.drop(columns=["target"])))
    assert f1 == pytest.approx(first["value"])

    # A weaker challenger (it would need to beat the champion's f1 by more than 1), through the CLI.
    monkeypatch.setenv("SELFSERVE_URL", pipeline_env.url)
    monkeypatch.setenv("SELFSERVE_TOKEN", token)
    args = ["train", project, "-d", "cancer@0", "-t", "target", "--task", "classification", "-m", "clf"]
    r = CliRunner().invoke(app, [*args, "--candidates", "gb", "--margin", "1", "--json"])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    second = shown["result"]
    assert shown["run"]["state"] == "completed" and shown["run"]["deployment"] == "train-clf"
    assert second["promoted"] is False and second["version"] == 2 and second["candidate"] == "gb"
    assert second["champion_before"] == {"version": 1, "value": pytest.approx(f1)}
    model = owner.models.get(project, "clf")
    assert (model.champion, model.challenger, len(model.promotions)) == (1, 2, 1)
    print(f"first train run, deploy to result: {seconds:.1f}s")  # noqa: T201 - a timing for the report
