"""Publishing a registered model version for serving: its skops file copied out of MLflow into the platform's
object store, with the input columns its signature names.

A deployment never reads MLflow: the serving runtime starts BentoML on a file it fetches from the object
store (``serving/<project>/<model>/<version>/model.skops``). The copy is made here, once, when the
deployment is asked for, as MLflow's admin in the project's workspace, so a registry that is down later
does not stop a deployment from restarting.

Only a scikit-learn model saved with skops is accepted, under the same rule as
:func:`selfserve.ml.training.load_registered`: the types the file needs must all be trusted by skops or be
in ``SKOPS_TRUSTED_TYPES``; the list the model's own MLmodel names is not believed. Nothing is unpickled,
here or in the deployment.

The files are read through MLflow's artifact proxy (``/api/2.0/mlflow-artifacts/artifacts/<path>``). With
workspaces on (MLflow 3.17) a model version's download URI is its logged model's location,
``mlflow-artifacts:/workspaces/<workspace>/<experiment id>/models/<model id>/artifacts``, and the proxy
answers paths under ``workspaces/<workspace>/`` only for a request that names that workspace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

from selfserve.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from selfserve.ml import registered_model_name

if TYPE_CHECKING:
    from selfserve.data.objectstore import ObjectStore
    from selfserve.ml.registry import Registry, _Workspace

MODEL_FILE = "model.skops"
ARTIFACTS_ROUTE = "/api/2.0/mlflow-artifacts/artifacts/"


@dataclass(frozen=True)
class ModelArtifact:
    """A model version ready to serve.

    Attributes:
        version: The version number the reference resolved to.
        key: Object-store key of the skops file.
        inputs: The input columns, in the model's order: ``{"name", "type"}`` (MLflow's column types).
    """

    version: int
    key: str
    inputs: list[dict[str, str]] = field(default_factory=list)


def artifact_key(project: str, model: str, version: int) -> str:
    """Where the served copy of a model version lives in the object store."""
    from selfserve.data.objectstore import safe_key

    return safe_key("serving", project, model, str(version), MODEL_FILE)


def publish_model(
    registry: Registry, object_store: ObjectStore, project: str, model: str, ref: str | int
) -> ModelArtifact:
    """Copy model version ``ref`` of the project's model ``model`` into the object store for serving.

    Args:
        registry: The platform's registry adapter (MLflow as admin).
        object_store: The platform's object store.
        project: The project (its MLflow workspace).
        model: The model's name in the project (``<project>.<model>`` in MLflow).
        ref: An alias (``"champion"``) or a version number (``7`` or ``"7"``).

    Returns:
        The version, the object-store key of its skops file and its input columns. Publishing the same
        version again writes the same object.

    Raises:
        NotFound: no such model, alias or version in the project.
        Conflict: the version is not ready in the registry (still being registered, or failed).
        InvalidInput: the version is not a scikit-learn model saved with skops, names types that are not
            trusted, or has no signature of named input columns.
        ServiceUnavailable: MLflow is off, down, or answered unexpectedly.
    """
    from selfserve.ml.registry import _model_version, _registered_model

    ws = registry.workspace(project)
    full = registered_model_name(project, model)
    version = _resolve(ws, model, ref, _registered_model(ws, model))
    mv = _model_version(ws, model, version)
    if mv is None:
        raise NotFound(f"model {model!r} has no version {version} in project {project!r}")
    status = str(mv.get("status") or "")
    if status and status != "READY":
        raise Conflict(f"version {version} of model {model!r} is {status.lower()}, not ready: it cannot be served yet")
    what = f"{full} version {version}"
    root = _artifact_root(ws, full, version, mv)
    meta = _mlmodel(_download(registry, ws, root, "MLmodel", what), what)
    flavor = (meta.get("flavors") or {}).get("sklearn") or {}
    if not isinstance(flavor, dict) or flavor.get("serialization_format") != "skops" or not flavor.get("pickled_model"):
        raise InvalidInput(
            f"{what} is not a scikit-learn model saved with skops: only those are served "
            "(log it with mlflow.sklearn.log_model(..., serialization_format='skops'))"
        )
    inputs = signature_inputs(meta, what)
    data = _download(registry, ws, root, _relative(str(flavor["pickled_model"]), what), what)
    check_trusted(data, what)
    key = artifact_key(project, model, version)
    object_store.put_bytes(key, data)
    return ModelArtifact(version=version, key=key, inputs=inputs)


def check_trusted(data: bytes, what: str) -> None:
    """Refuse a skops file that cannot be read, or that needs a type skops and the platform do not trust.

    Raises:
        InvalidInput: naming the untrusted types.
    """
    import skops.io

    from selfserve.ml.training import SKOPS_TRUSTED_TYPES

    try:
        found = skops.io.get_untrusted_types(data=data)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file fails in many ways
        raise InvalidInput(f"{what}: the model file is not a readable skops file ({type(e).__name__})") from None
    untrusted = sorted(set(found) - set(SKOPS_TRUSTED_TYPES))
    if untrusted:
        raise InvalidInput(f"{what} holds types that are not trusted: {', '.join(untrusted)}; it is not served")


def signature_inputs(meta: dict[str, Any], what: str) -> list[dict[str, str]]:
    """The named input columns of an MLmodel's signature, in order.

    Raises:
        InvalidInput: no signature, or one of tensors rather than named columns.
    """
    raw = (meta.get("signature") or {}).get("inputs")
    hint = "log the model with a signature of its input columns (mlflow.models.infer_signature on a DataFrame)"
    if not raw:
        raise InvalidInput(f"{what} has no input signature: {hint}")
    try:
        specs = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise InvalidInput(f"{what} has an input signature that is not JSON") from None
    if not isinstance(specs, list) or not specs:
        raise InvalidInput(f"{what} has an empty input signature: {hint}")
    inputs: list[dict[str, str]] = []
    for spec in specs:
        if not isinstance(spec, dict) or not spec.get("name"):
            raise InvalidInput(f"{what} takes tensors, not named columns: {hint}")
        inputs.append({"name": str(spec["name"]), "type": str(spec.get("type") or "")})
    names = [c["name"] for c in inputs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInput(f"{what} names input column(s) more than once: {', '.join(twice)}")
    return inputs


# -- reads of MLflow ---------------------------------------------------------------------------------


def _resolve(ws: _Workspace, model: str, ref: str | int, rm: dict[str, Any]) -> int:
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        return int(ref)
    aliases = {str(a["alias"]): int(a["version"]) for a in rm.get("aliases") or () if "alias" in a}
    if ref not in aliases:
        known = ", ".join(sorted(aliases)) or "none"
        raise NotFound(f"model {model!r} has no alias {ref!r} in project {ws.project!r} (its aliases: {known})")
    return aliases[ref]


def _artifact_root(ws: _Workspace, full: str, version: int, mv: dict[str, Any]) -> str:
    """The path under the artifact proxy of the version's model directory."""
    from selfserve.ml.registry import _Missing

    params = {"name": full, "version": str(version)}
    try:
        uri = str(ws.call("GET", "/model-versions/get-download-uri", params=params).get("artifact_uri") or "")
    except _Missing:
        uri = ""
    uri = uri or str(mv.get("storage_location") or mv.get("source") or "")
    for _ in range(3):  # models:/ and runs:/ name another location; one more step resolves each
        parsed = urlparse(uri)
        try:
            if parsed.scheme == "mlflow-artifacts":
                return parsed.path.strip("/")
            if parsed.scheme in ("http", "https") and ARTIFACTS_ROUTE in parsed.path:
                return parsed.path.split(ARTIFACTS_ROUTE, 1)[1].strip("/")
            if parsed.scheme == "models" and parsed.path.strip("/").startswith("m-"):
                found = ws.call("GET", f"/logged-models/{quote(parsed.path.strip('/'), safe='')}")
                uri = str(found["model"]["info"]["artifact_uri"])
                continue
            if parsed.scheme == "runs":
                run_id, _, path = (parsed.netloc + parsed.path).strip("/").partition("/")
                run = ws.call("GET", "/runs/get", params={"run_id": run_id})
                uri = str(run["run"]["info"]["artifact_uri"]).rstrip("/") + ("/" + path if path else "")
                continue
        except (_Missing, KeyError, TypeError):
            raise InvalidInput(f"{full} version {version}: the model its version names ({uri}) is gone") from None
        break
    raise InvalidInput(
        f"{full} version {version}: its files are not in the platform's model store ({uri or 'no location'}); "
        "register a model logged to this platform's MLflow"
    )


def _relative(path: str, what: str) -> str:
    """A path inside the model's directory, as the MLmodel names it."""
    from selfserve.data.objectstore import safe_key

    try:
        return safe_key(path)
    except InvalidInput:
        raise InvalidInput(f"{what}: its MLmodel names a model file outside the model ({path!r})") from None


def _download(registry: Registry, ws: _Workspace, root: str, name: str, what: str) -> bytes:
    """One file of the model's directory, through MLflow's artifact proxy, as the admin, in the workspace."""
    import httpx

    from selfserve.ml.mlflow import WORKSPACE_HEADER

    admin = registry.admin
    url = ARTIFACTS_ROUTE + quote(f"{root}/{name}")
    try:
        # The admin client's transport (its credentials, timeout and base URL); the file is not JSON.
        r = admin._http.get(url, headers={WORKSPACE_HEADER: ws.name})
    except httpx.HTTPError as e:
        raise ServiceUnavailable(
            f"the model registry is not reachable at {admin.url} ({type(e).__name__}); "
            "is the platform's MLflow server running?"
        ) from None
    if r.status_code == 404:
        raise InvalidInput(f"{what} has no file {name!r}: it is not a complete MLflow model")
    if r.status_code != 200:
        raise ServiceUnavailable(f"the model registry refused to hand out {name} of {what}: HTTP {r.status_code}")
    return r.content


def _mlmodel(data: bytes, what: str) -> dict[str, Any]:
    import yaml

    try:
        meta = yaml.safe_load(data)
    except yaml.YAMLError:
        meta = None
    if not isinstance(meta, dict):
        raise InvalidInput(f"{what} has an MLmodel file that cannot be read")
    return meta
