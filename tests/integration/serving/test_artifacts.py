"""Publishing a model version for serving, against the real MLflow server of the session stack: a user logs
and registers a skops model (and a pickled one) in their project's workspace with the plain ``mlflow``
client; the platform then copies the model out of MLflow as its admin, through the artifact proxy.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from selfserve.data.objectstore import from_settings
from selfserve.errors import InvalidInput, NotFound
from selfserve.ml.registry import Registry
from selfserve.serving.artifacts import publish_model
from selfserve.settings import get_settings
from tests.pipeline_stack import Stack
from tests.support import mlflow_env

pytestmark = pytest.mark.integration

COLUMNS = ["a", "b", "c", "d"]


def test_publish_copies_a_registered_skops_model_out_of_mlflow(pipeline_env: Stack) -> None:
    import numpy as np
    import pandas as pd
    import skops.io
    from sklearn.linear_model import LogisticRegression

    owner = pipeline_env.user(f"srv-{uuid.uuid4().hex[:6]}")
    project = pipeline_env.project(owner, "srv")
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(60, 4)), columns=COLUMNS)
    model = LogisticRegression().fit(X, (X["a"] > X["d"]).astype(int))
    name = f"{project}.clf"
    with mlflow_env(owner, project) as env:
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        mlflow.set_experiment(f"{project}/serving")
        with mlflow.start_run():
            signature = infer_signature(X, model.predict(X))
            common: dict[str, Any] = {"name": "model", "signature": signature, "pip_requirements": ["scikit-learn"]}
            skops_model = mlflow.sklearn.log_model(model, serialization_format="skops", **common)
            pickled = mlflow.sklearn.log_model(model, serialization_format="cloudpickle", **common)
        client = mlflow.MlflowClient()
        client.create_registered_model(name)
        for logged in (skops_model, pickled):
            client.create_model_version(name, logged.model_uri, model_id=logged.model_id, await_creation_for=0)
        client.set_registered_model_alias(name, "champion", "1")

    settings = get_settings()
    registry, objects = Registry(settings), from_settings(settings)
    try:
        published = publish_model(registry, objects, project, "clf", "champion")
        assert published.version == 1
        assert published.key == f"serving/{project}/clf/1/model.skops"
        assert published.inputs == [{"name": c, "type": "double"} for c in COLUMNS]
        copy = skops.io.loads(objects.get_bytes(published.key), trusted=[])
        assert copy.predict(X).tolist() == model.predict(X).tolist()

        with pytest.raises(InvalidInput, match=f"{name} version 2 is not a scikit-learn model saved with skops"):
            publish_model(registry, objects, project, "clf", 2)
        with pytest.raises(NotFound, match="has no alias 'staging'"):
            publish_model(registry, objects, project, "clf", "staging")
        with pytest.raises(NotFound, match="has no version 3"):
            publish_model(registry, objects, project, "clf", 3)
        with pytest.raises(NotFound, match=f"model 'nope' not found in project '{project}'"):
            publish_model(registry, objects, project, "nope", "champion")
    finally:
        registry.close()
