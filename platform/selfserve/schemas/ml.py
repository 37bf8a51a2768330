"""API models of a caller's own MLflow access."""

from __future__ import annotations

from pydantic import Field

from selfserve.schemas import Model


class MLflowEnv(Model):
    """What the MLflow client needs to work in a project as the caller (their own account, shown only to them)."""

    tracking_uri: str = Field(description="The MLflow server (MLFLOW_TRACKING_URI).")
    workspace: str = Field(description="The project's MLflow workspace (MLFLOW_WORKSPACE).")
    username: str = Field(description="The caller's MLflow user (MLFLOW_TRACKING_USERNAME).")
    password: str = Field(description="The caller's MLflow password (MLFLOW_TRACKING_PASSWORD).", repr=False)

    def environment(self) -> dict[str, str]:
        """The variables that point the ``mlflow`` client at the project as the caller."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
            "MLFLOW_WORKSPACE": self.workspace,
        }
