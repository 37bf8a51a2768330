"""API model of a training request: what the built-in ``train`` flow fits, how it scores, and when it promotes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from selfserve.schemas import Model, Name, Text

Task = Literal["classification", "regression"]
Candidate = Literal["rf", "gb", "linear"]

CANDIDATES: tuple[Candidate, ...] = ("rf", "gb", "linear")
# The metrics of each task, its default first.
METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("f1", "accuracy", "roc_auc"),
    "regression": ("rmse", "mae", "r2"),
}
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
# The train flow's last log line starts with this and goes on with its result as JSON (flow results
# are not kept by the engine): `selfserve train` reads it back from the run's logs.
RESULT_PREFIX = "training result: "

Column = Text


class DatasetRef(Model):
    """A dataset of the project and, optionally, the version to read (default: the latest, pinned at start)."""

    name: Name
    version: int | None = Field(None, ge=0, description="The version to read; none: the latest when the run starts.")


def parse_dataset_ref(value: Any) -> Any:
    """``"features"`` or ``"features@3"`` -> ``{"name": ..., "version": ...}``; anything else is left to pydantic."""
    if not isinstance(value, str):
        return value
    name, sep, version = value.partition("@")
    if not sep:
        return {"name": name}
    if not version.isdigit():
        raise ValueError(f"invalid dataset reference {value!r}: use NAME or NAME@VERSION")
    return {"name": name, "version": int(version)}


class TrainRequest(Model):
    """Train candidates on a pinned dataset version, register the best as ``challenger``, and promote it
    to ``champion`` when it beats the current champion on the same held-out rows."""

    dataset: Annotated[DatasetRef, BeforeValidator(parse_dataset_ref)] = Field(
        description="The dataset, as {name, version} or 'name[@version]'."
    )
    target: Column = Field(min_length=1, max_length=255, description="The column to predict.")
    task: Task
    metric: str | None = Field(
        None,
        description="classification: f1 (default; macro over classes when more than two), accuracy, roc_auc; "
        "regression: rmse (default), mae, r2.",
    )
    candidates: list[Candidate] = Field(
        default_factory=lambda: list(CANDIDATES),
        min_length=1,
        max_length=len(CANDIDATES),
        description="Model families to try: rf (random forest), gb (gradient boosting), linear.",
    )
    tune_trials: int = Field(0, ge=0, le=200, description="Optuna trials per candidate family; 0: defaults only.")
    model: Name = Field(description="The registered model's name in the project.")
    margin: float = Field(
        0.0, ge=0, description="Promote only when the challenger beats the champion by more than this."
    )
    test_size: float = Field(0.2, ge=0.05, le=0.5, description="Share of rows held out for the final comparison.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the splits, the models and the search.")
    features: list[Column] | None = Field(
        None, max_length=10_000, description="Feature columns; none: every column but the target and the excluded."
    )
    exclude: list[Column] = Field(
        default_factory=list, max_length=10_000, description="Columns never used as features (ids, leaks)."
    )

    @field_validator("candidates")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each candidate may be named once")
        return value

    @model_validator(mode="after")
    def _metric_fits_task(self) -> TrainRequest:
        allowed = METRICS[self.task]
        if self.metric is None:
            self.metric = allowed[0]
        elif self.metric not in allowed:
            raise ValueError(f"metric {self.metric!r} is not one of {self.task}'s: {', '.join(allowed)}")
        if self.target in self.exclude:
            raise ValueError(f"the target {self.target!r} is also excluded")
        if self.features is not None and self.target in self.features:
            raise ValueError(f"the target {self.target!r} cannot also be a feature")
        return self

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER
