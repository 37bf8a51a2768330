"""Who gets which MLflow credentials: a member for themselves (``GET /projects/<p>/mlflow``), and a
project's runs, which work as its service account."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.orm import Session

from selfserve.errors import ServiceUnavailable
from selfserve.ml import identity, workspace_name
from selfserve.ml.provisioner import PROVISIONER_NAME, MLflowProvisioner
from selfserve.policy import audit, roles
from selfserve.policy.authz import Caller, authorize
from selfserve.policy.projects import SERVICE_ROLE
from selfserve.policy.provisioning import Provisioner
from selfserve.schemas.ml import MLflowEnv
from selfserve.settings import Settings
from selfserve.store.tables import Principal

log = logging.getLogger(__name__)
NOT_ENABLED = "models are not enabled on this platform (setting models.enabled)"


def provisioner_of(provisioners: Sequence[Provisioner]) -> MLflowProvisioner | None:
    """The MLflow provisioner among the platform's, if models are enabled."""
    found = next((p for p in provisioners if p.name == PROVISIONER_NAME), None)
    return found if isinstance(found, MLflowProvisioner) else None


def user_env(
    session: Session, caller: Caller, project: str, settings: Settings, provisioners: Sequence[Provisioner]
) -> MLflowEnv:
    """The caller's own MLflow account for ``project``, made on first use and holding their role's grants.

    A platform admin who is not a member gets the owner's grants (admins may take every action);
    the next change of the project's members takes them back.

    Raises:
        NotFound: the caller cannot see the project.
        ServiceUnavailable: models are off, or MLflow is not reachable.
    """
    _, role = authorize(session, caller, "experiment:read", project)
    mlflow = provisioner_of(provisioners)
    if mlflow is None or not settings.models.enabled:
        raise ServiceUnavailable(NOT_ENABLED)
    principal = session.get(Principal, caller.id)
    assert principal is not None  # the caller was authenticated in this request
    row, created = identity.ensure(session, mlflow.admin, principal)
    if created:
        audit.record(session, caller.name, "mlflow:account-create", project=project, target=row.username)
    session.commit()
    mlflow.grant(project, row.username, role if role is not None else roles.OWNER)
    creds = identity.credentials(row)
    return MLflowEnv(
        tracking_uri=settings.mlflow_public_url,
        workspace=workspace_name(project),
        username=creds.username,
        password=creds.password,
    )


def run_env(session: Session, settings: Settings, project: str, service_account: Principal) -> dict[str, str] | None:
    """The MLflow access of a project's run: its service account's, or None when models are off.

    The account is made when the project is provisioned; should that have failed, it is made now.
    A run that does not use MLflow must not fail because MLflow is down: then it gets none.
    """
    if not settings.models.enabled:
        return None
    row = identity.find(session, service_account.id)
    if row is None:
        mlflow = MLflowProvisioner(settings)
        try:
            row, _ = identity.ensure(session, mlflow.admin, service_account)
            mlflow.grant(project, row.username, SERVICE_ROLE)
        except ServiceUnavailable as e:
            log.warning("run of project %s gets no MLflow access: %s", project, e.message)
            return None
        finally:
            mlflow.close()
    creds = identity.credentials(row)
    return {
        # Runs reach MLflow where the platform does (in compose: the internal network), not where users do.
        "tracking_uri": settings.mlflow_url,
        "workspace": workspace_name(project),
        "username": creds.username,
        "password": creds.password,
    }


def follow_disabled(
    session: Session, principal: Principal, provisioners: Sequence[Provisioner], *, disabled: bool
) -> None:
    """A disabled user is shut out of MLflow too (its password there becomes a random one); an enabled
    one gets its own back. Nothing happens when models are off or the user never had an account.

    Raises:
        ServiceUnavailable: MLflow is not reachable (the platform's change is made; repeat it to retry).
    """
    mlflow = provisioner_of(provisioners)
    if mlflow is None or identity.find(session, principal.id) is None:
        return
    try:
        if disabled:
            identity.lock(session, mlflow.admin, principal)
        else:
            identity.unlock(session, mlflow.admin, principal)
    except ServiceUnavailable as e:
        verb = "disabled" if disabled else "enabled"
        raise ServiceUnavailable(
            f"{principal.name!r} is {verb}, but the model registry could not follow ({e.message}); repeat to retry"
        ) from None
