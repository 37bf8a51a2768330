"""Your own MLflow access in the SDK: point the ``mlflow`` client at a project as yourself."""

from __future__ import annotations

from selfserve.client._base import SubClient
from selfserve.schemas.ml import MLflowEnv


class MLflowClient(SubClient):
    def env(self, project: str) -> MLflowEnv:
        """Your MLflow account for ``project`` (made on first use) with the grants of your role.

        ``env(project).environment()`` holds the four ``MLFLOW_*`` variables the ``mlflow`` client
        reads (tracking URI, user, password, workspace). Experiments are named ``<project>/<name>``
        and registered models ``<project>.<name>``.

        Raises:
            NotFound: you are not a member of ``project``.
            ServiceUnavailable: models are off on this platform, or MLflow is not reachable.
        """
        return self._one(MLflowEnv, self._call("mlflow.env", project=project))
