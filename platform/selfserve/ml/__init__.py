"""The MLflow adapter: the tracking server under basic auth, its admin client, and platform identities.

Every platform principal (user or project service account) gets its own MLflow user with a generated
password; each project is an MLflow workspace whose roles follow the project's roles. Inside a
workspace, experiments are named ``<project>/<name>`` and registered models ``<project>.<name>``.
Nothing here imports ``mlflow``: the API talks to the server over REST.
"""

from __future__ import annotations

import re

# MLflow's workspace names: 2-63 characters, lowercase letters, digits and inner '-'; some are reserved.
_WORKSPACE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_RESERVED_WORKSPACES = {"default", "workspaces", "api", "ajax-api", "static-files"}


def workspace_name(project: str) -> str:
    """The MLflow workspace of ``project``: the project's own name whenever MLflow accepts it.

    A project name MLflow refuses (one letter, a trailing ``-``, a reserved name) maps to
    ``<k><name without its k trailing '-'>``, e.g. ``a`` -> ``0a``, ``churn-`` -> ``1churn``. Project
    names start with a letter, so a name that starts with a digit is never another project's.
    """
    if 2 <= len(project) <= 63 and _WORKSPACE_NAME.match(project) and project not in _RESERVED_WORKSPACES:
        return project
    stripped = project.rstrip("-")
    return f"{len(project) - len(stripped)}{stripped}"


def experiment_name(project: str, name: str) -> str:
    """The MLflow experiment name of the project's experiment ``name``."""
    return f"{project}/{name}"


def registered_model_name(project: str, name: str) -> str:
    """The MLflow registered model name of the project's model ``name``."""
    return f"{project}.{name}"
