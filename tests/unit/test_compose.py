"""Static checks of the compose deployment: compose.yaml, config/.env.example, the Dockerfiles, .dockerignore.

No container engine runs on the machines this project builds and tests on, so nothing here starts a
container or pulls an image. The files are parsed and held to the rules the deployment relies on:
health-gated start order, pinned images, required secrets, one internal network, ports published on
127.0.0.1 by the API and the console only, non-root images built from the lock. The environment that
compose would hand to the API, the console and the pipeline worker is interpolated the way compose
does it (from ``config/.env.example`` with its empty secrets filled in) and fed through the real
settings classes, so a misspelt or missing ``SELFSERVE_*`` variable fails here rather than in a container.
The Prefect server and the worker run the api image; they must agree with the API on Prefect's URL and
auth string, the runner key (derived from the secret key), storage and the home volume. So does MLflow,
which must agree with the API on its admin password and with the storage on its artifacts' bucket, and the
serving runtime, which must agree with the API on the metadata DB, storage and the runner key, and be reachable
by it (with its deployments) over the internal network.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel, SecretStr
from sqlalchemy.engine import make_url

from selfserve.settings import PLACEHOLDER_SECRETS, ClientSettings, Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"
ENV_EXAMPLE = REPO / "config" / ".env.example"
DOCKERIGNORE = REPO / ".dockerignore"

# Secrets compose must refuse to run without. Any other variable whose name looks secret is held to the same rule.
SECRETS = {
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "SELFSERVE_SECRET_KEY",
    "SELFSERVE_ADMIN_PASSWORD",
    "PREFECT_AUTH_PASSWORD",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(^|_)KEY(_|$)|ROOT_USER")

PUBLISHED = {"api", "console", "mlflow"}
# Services with a Dockerfile of their own; the others that build run the api image with another command.
OWN_DOCKERFILE = {"api", "console"}
# Services that run the api image with another command (built from the api's Dockerfile).
API_IMAGE = {"prefect-server", "prefect-worker", "mlflow", "serving"}
API_NEEDS = {
    "SELFSERVE_MODE",
    "SELFSERVE_HOME",
    "SELFSERVE_DATABASE__URL",
    "SELFSERVE_SECRET_KEY",
    "SELFSERVE_PLATFORM__ADMIN_PASSWORD",
    "SELFSERVE_SERVER__HOST",
    "SELFSERVE_SERVER__API_PORT",
    "SELFSERVE_PIPELINES__PREFECT_URL",
    "SELFSERVE_PIPELINES__PREFECT_AUTH",
    "SELFSERVE_PIPELINES__RUNNER_API_URL",
}
CONSOLE_NEEDS = {"SELFSERVE_URL"}
WORKER_NEEDS = {
    "SELFSERVE_MODE",
    "SELFSERVE_HOME",
    "SELFSERVE_SECRET_KEY",
    "SELFSERVE_PIPELINES__PREFECT_URL",
    "SELFSERVE_PIPELINES__PREFECT_AUTH",
    "SELFSERVE_PIPELINES__RUNNER_API_URL",
    "SELFSERVE_PIPELINES__WORKER_PORT",
    "SELFSERVE_STORAGE__URL",
}
# The worker reaches Prefect through the platform's settings: it may set none of Prefect's own variables.
WORKER_PREFECT_VARS: set[str] = set()
PREFECT_HEALTH_PATH = "/api/health"
WORKER_HEALTH_PATH = "/health"
API_HEALTH_PATH = "/api/v1/health"
CONSOLE_HEALTH_PATH = "/_stcore/health"
# An exact version: 16.15, 3.11.15, v1.2.3 (optionally with a variant like -alpine), or a MinIO release stamp.
EXACT_TAG = re.compile(r"^(v?\d+\.\d+(\.\d+)*([-_][\w.-]+)?|RELEASE\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z(-\w+)?)$")


# --- compose interpolation ---------------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$|\$\{(?P<braced>[^}]*)\}|\$(?P<named>[A-Za-z_][A-Za-z0-9_]*)")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.DOTALL)


@dataclass(frozen=True)
class Reference:
    """One ``${NAME<op><arg>}`` (or ``$NAME``) in compose.yaml."""

    name: str
    op: str
    arg: str
    where: str


class MissingVariable(Exception):
    """Compose would refuse to start: a ``${NAME:?...}`` variable is unset or empty."""


def _parse_reference(match: re.Match[str], where: str) -> Reference | None:
    if match.group(0) == "$$":
        return None
    if match.group("named"):
        return Reference(match.group("named"), "", "", where)
    braced = _BRACED.match(match.group("braced"))
    assert braced, f"{where}: cannot parse the variable reference {match.group(0)!r}"
    return Reference(braced.group("name"), braced.group("op") or "", braced.group("arg") or "", where)


def _interpolate(text: str, env: Mapping[str, str], where: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        ref = _parse_reference(match, where)
        if ref is None:
            return "$"
        value = env.get(ref.name)
        set_and_nonempty = bool(value)
        if ref.op == ":-":
            return value if value else ref.arg
        if ref.op == "-":
            return value if value is not None else ref.arg
        if ref.op in (":?", "?"):
            if (ref.op == ":?" and not set_and_nonempty) or value is None:
                raise MissingVariable(f"{where}: {ref.name}: {ref.arg}")
            return value
        if ref.op == ":+":
            return ref.arg if set_and_nonempty else ""
        if ref.op == "+":
            return ref.arg if value is not None else ""
        return value or ""

    return _REFERENCE.sub(substitute, text)


def _walk(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in the document, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}[{i}]")
    elif isinstance(node, str):
        yield where, node


def _interpolate_tree(node: Any, env: Mapping[str, str], where: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(v, env, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        return _interpolate(node, env, where)
    return node


# --- the files ---------------------------------------------------------------------------------------------------


@cache
def raw_compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(doc, dict), "compose.yaml must be a mapping at the top level"
    return doc


def services() -> dict[str, dict[str, Any]]:
    found = raw_compose().get("services")
    assert isinstance(found, dict) and found, "compose.yaml has no services"
    return found


@cache
def references() -> tuple[Reference, ...]:
    found = []
    for where, text in _walk(raw_compose()):
        for match in _REFERENCE.finditer(text):
            ref = _parse_reference(match, where)
            if ref is not None:
                found.append(ref)
    return tuple(found)


@cache
def example_env() -> dict[str, str]:
    assert ENV_EXAMPLE.is_file(), f"{ENV_EXAMPLE} is missing: it documents the variables compose.yaml needs"
    env: dict[str, str] = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), f".env.example line {number}: not NAME=value"
        assert name not in env, f".env.example sets {name} twice"
        env[name] = value
    return env


def secret_names() -> set[str]:
    return SECRETS | {r.name for r in references() if SECRET_NAME.search(r.name)}


def filled_env() -> dict[str, str]:
    """The example .env with every secret filled in, as an operator would."""
    env = dict(example_env())
    for name in secret_names():
        if not env.get(name) or env[name].strip().lower() in PLACEHOLDER_SECRETS:
            env[name] = f"{name.lower().replace('_', '-')}-Xq7v2Lm9"
    return env


@cache
def compose() -> dict[str, Any]:
    """compose.yaml as compose would run it with :func:`filled_env`."""
    return _interpolate_tree(raw_compose(), filled_env())


def environment(service: str) -> dict[str, str]:
    """The interpolated environment of ``service`` (either compose syntax: mapping or list)."""
    env = compose()["services"][service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def one_shot_jobs() -> set[str]:
    """Services another service waits on to complete: init jobs that run once and exit."""
    return {
        target
        for svc in services().values()
        if isinstance(svc.get("depends_on"), dict)
        for target, spec in svc["depends_on"].items()
        if isinstance(spec, dict) and spec.get("condition") == "service_completed_successfully"
    }


def healthcheck_text(service: str) -> str:
    test = compose()["services"][service].get("healthcheck", {}).get("test", [])
    return " ".join(test) if isinstance(test, list) else str(test)


def published_ports(service: str) -> list[tuple[str, str, str]]:
    """(host ip, host port, container port) for each published port of ``service``."""
    found = []
    for port in compose()["services"][service].get("ports", []):
        if isinstance(port, dict):
            found.append((str(port.get("host_ip", "")), str(port.get("published", "")), str(port["target"])))
            continue
        parts = str(port).split("/")[0].rsplit(":", 2)
        parts = [""] * (3 - len(parts)) + parts
        found.append((parts[0].strip("[]"), parts[1], parts[2]))
    return found


def setting_path(model: type[BaseModel], env_name: str, prefix: str = "SELFSERVE_", nested: str = "__") -> list[str]:
    """The field path an env var sets in ``model``; fails if it names no field (settings ignore unknown vars)."""
    assert env_name.startswith(prefix), f"{env_name} does not start with {prefix}"
    parts = env_name[len(prefix) :].lower().split(nested) if nested else [env_name[len(prefix) :].lower()]
    current: type[BaseModel] = model
    for i, part in enumerate(parts):
        field = current.model_fields.get(part)
        assert field is not None, f"{env_name}: {model.__name__} has no setting {'.'.join(parts[: i + 1])!r}"
        if i < len(parts) - 1:
            annotation = field.annotation
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), (
                f"{env_name}: {'.'.join(parts[: i + 1])!r} is not a settings section"
            )
            current = annotation
    return parts


def setting_value(settings: BaseModel, path: list[str]) -> str:
    value: Any = settings
    for part in path:
        value = getattr(value, part)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):  # compose spells booleans as YAML strings: "true" / "false"
        return str(value).lower()
    return str(value)


@dataclass
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]]

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(path: Path) -> Dockerfile:
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, f"{path}: ends inside a continued line"
    instructions = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
    return Dockerfile(path, instructions)


def build_services() -> dict[str, Path]:
    found = {}
    for name, svc in services().items():
        build = svc.get("build")
        if build is None:
            continue
        build = {"context": build} if isinstance(build, str) else build
        context = REPO / build.get("context", ".")
        found[name] = context / build.get("dockerfile", "Dockerfile")
    return found


def dockerfile(service: str) -> Dockerfile:
    path = build_services()[service]
    assert path.is_file(), f"service {service!r} builds from {path.relative_to(REPO)}, which does not exist"
    return parse_dockerfile(path)


def exec_form(args: str) -> list[str]:
    """The argv of an exec-form CMD/HEALTHCHECK CMD (a JSON array)."""
    parsed = json.loads(args)
    assert isinstance(parsed, list), f"not exec form (a JSON array): {args!r}"
    return [str(a) for a in parsed]


def console_port() -> str:
    """The port the console listens on: its Dockerfile's CMD says."""
    argv = exec_form(dockerfile("console").all("CMD")[-1])
    assert "--server.port" in argv, "the console's CMD must set --server.port"
    return argv[argv.index("--server.port") + 1]


def _dockerignore_patterns() -> list[str]:
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing: the build context would carry .venv, .git and .env"
    return [
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (relative to the repo) out of the build context.

    Docker's rules, closely enough for these checks: a pattern that matches a directory excludes what is
    under it, ``**/`` matches at any depth, ``!`` re-includes, and the last matching pattern wins.
    """
    candidates = [*(str(p) for p in reversed(PurePosixPath(path).parents) if str(p) != "."), path]
    ignored = False
    for pattern in _dockerignore_patterns():
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!")
        forms = (pattern, pattern.removeprefix("**/"))
        if any(fnmatch.fnmatchcase(c, f) for c in candidates for f in forms):
            ignored = not negate
    return ignored


# --- compose.yaml ------------------------------------------------------------------------------------------------


def test_compose_parses_with_only_known_top_level_keys() -> None:
    known = {"name", "services", "networks", "volumes", "configs", "secrets", "include"}
    unknown = {k for k in raw_compose() if k not in known and not str(k).startswith("x-")}
    assert not unknown, f"compose.yaml has unknown top-level keys {sorted(unknown)} (the 'version' key is obsolete)"
    needed = {
        "postgres",
        "minio",
        "minio-init",
        "prefect-db-init",
        "prefect-server",
        "api",
        "prefect-worker",
        "mlflow-db-init",
        "mlflow",
        "serving",
        "console",
    }
    assert needed <= set(services()), f"compose.yaml must run {sorted(needed)}; it has {sorted(services())}"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in services().items():
        if name in one_shot_jobs():
            assert svc.get("restart", "no") == "no", f"one-shot job {name!r} must not restart (restart: 'no')"
            continue
        check = svc.get("healthcheck")
        assert isinstance(check, dict) and check.get("test"), f"service {name!r} has no healthcheck"
        assert not check.get("disable"), f"service {name!r} disables its healthcheck"
        assert check["test"] not in (["NONE"], "NONE"), f"service {name!r} disables its healthcheck with NONE"


def test_every_dependency_waits_on_a_condition() -> None:
    for name, svc in services().items():
        deps = svc.get("depends_on")
        if deps is None:
            continue
        assert isinstance(deps, dict), (
            f"service {name!r} lists depends_on without conditions; use 'service: {{condition: service_healthy}}'"
        )
        for target, spec in deps.items():
            assert target in services(), f"service {name!r} depends on {target!r}, which is not a service"
            condition = (spec or {}).get("condition")
            assert condition in ("service_healthy", "service_completed_successfully"), (
                f"{name} -> {target}: depends_on needs condition service_healthy (or "
                f"service_completed_successfully for an init job), not {condition!r}"
            )
            if condition == "service_healthy":
                assert services()[target].get("healthcheck"), (
                    f"{name} waits for {target!r} to be healthy, but {target!r} has no healthcheck"
                )


def test_every_image_is_pinned_to_an_exact_version() -> None:
    for name, svc in services().items():
        image = svc.get("image")
        if image is None:
            assert "build" in svc, f"service {name!r} has neither image nor build"
            continue
        ref = str(image).split("@", 1)[0]
        last = ref.rsplit("/", 1)[-1]
        assert ":" in last, f"service {name!r}: image {image!r} has no tag (it would float on latest)"
        tag = last.rsplit(":", 1)[1]
        assert tag != "latest" and EXACT_TAG.match(tag), (
            f"service {name!r}: image {image!r} is not pinned to an exact version tag (e.g. 16.15-alpine)"
        )
        assert "$" not in str(image), f"service {name!r}: image {image!r} must not come from a variable"


def test_every_variable_is_documented_in_env_example() -> None:
    used = {r.name for r in references()}
    undocumented = used - set(example_env())
    assert not undocumented, f"compose.yaml uses {sorted(undocumented)}, which config/.env.example does not document"
    unused = set(example_env()) - used
    assert not unused, f"config/.env.example documents {sorted(unused)}, which compose.yaml does not use"


def test_every_secret_is_required_and_has_no_real_value_in_the_example() -> None:
    for name in sorted(secret_names()):
        refs = [r for r in references() if r.name == name]
        assert refs, f"secret {name} is never used in compose.yaml"
        for ref in refs:
            assert ref.op == ":?" and ref.arg.strip(), (
                f"{ref.where}: secret {name} must be required as ${{{name}:?message}}, not a default or optional"
            )
        example = example_env().get(name)
        assert example is not None, f"config/.env.example does not document the secret {name}"
        assert example.strip().lower() in PLACEHOLDER_SECRETS, (
            f"config/.env.example gives {name} a value that could be used as is; leave it empty or a placeholder"
        )
    assert "secrets.token_urlsafe" in ENV_EXAMPLE.read_text(), (
        "config/.env.example must say how to generate a real secret (secrets.token_urlsafe)"
    )


def test_optional_variables_have_defaults_that_match_the_example() -> None:
    for ref in references():
        if ref.name in secret_names():
            continue
        assert ref.op == ":-", f"{ref.where}: {ref.name} is not a secret, so it needs a default: ${{{ref.name}:-...}}"
        assert ref.arg == example_env().get(ref.name), (
            f"{ref.where}: the default of {ref.name} ({ref.arg!r}) differs from config/.env.example "
            f"({example_env().get(ref.name)!r})"
        )


def test_compose_and_the_platform_refuse_the_example_env_as_is() -> None:
    with pytest.raises(MissingVariable):
        _interpolate_tree(raw_compose(), example_env())
    settings = Settings(mode="compose", secret_key=SecretStr(example_env()["SELFSERVE_SECRET_KEY"]))
    with pytest.raises(RuntimeError, match="SELFSERVE_SECRET_KEY"):
        settings.resolved_secret_key()


def test_api_environment_is_real_settings_with_what_the_api_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    env = environment("api")
    missing = API_NEEDS - set(env)
    assert not missing, f"the api service does not set {sorted(missing)}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    for key, value in env.items():
        assert key.startswith("SELFSERVE_"), f"api gets {key}, which is no platform setting (nothing reads it)"
        path = setting_path(Settings, key)
        assert setting_value(settings, path) == value, (
            f"api: {key}={value!r} does not land in settings.{'.'.join(path)}"
        )

    filled = filled_env()
    assert settings.mode == "compose", "the api must run with SELFSERVE_MODE=compose"
    assert settings.server.host == "0.0.0.0", "the api must listen on 0.0.0.0 to be reachable from other containers"
    assert settings.resolved_secret_key() == filled["SELFSERVE_SECRET_KEY"], "the api's secret key is not .env's"
    assert settings.platform.admin_password is not None, "the api gets no first-admin password"
    assert settings.platform.admin_password.get_secret_value() == filled["SELFSERVE_ADMIN_PASSWORD"], (
        "SELFSERVE_PLATFORM__ADMIN_PASSWORD does not come from .env's SELFSERVE_ADMIN_PASSWORD"
    )

    url = make_url(settings.database_url)
    assert url.drivername == "postgresql+psycopg", f"the database URL must use postgresql+psycopg, not {url.drivername}"
    assert url.host == "postgres" and (url.port or 5432) == 5432, f"the database URL must point at postgres:5432: {url}"
    pg = environment("postgres")
    assert (url.username, url.password, url.database) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    ), "the api's database user, password and name differ from the postgres service's"

    storage = urlsplit(settings.storage.url or "")
    assert storage.scheme == "s3", f"the api's storage root must be s3://<bucket>, not {settings.storage.url!r}"
    assert storage.netloc == environment("minio-init")["SELFSERVE_BUCKET"], (
        "the api's storage bucket is not the bucket minio-init creates"
    )
    endpoint = urlsplit(settings.storage.s3_endpoint_url or "")
    assert endpoint.hostname == "minio", f"the api's S3 endpoint must be the minio service: {endpoint.geturl()!r}"
    keys = settings.storage.s3_access_key_id, settings.storage.s3_secret_access_key
    assert all(keys), "the api gets no S3 keys"
    assert [k.get_secret_value() for k in keys if k] == [
        environment("minio")["MINIO_ROOT_USER"],
        environment("minio")["MINIO_ROOT_PASSWORD"],
    ], "the api's S3 keys differ from minio's"


def volume_mounts(service: str) -> dict[str, str]:
    """Container path -> named volume (or host path) of ``service``'s mounts."""
    mounts = {}
    for v in services()[service].get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source, target = v.get("source", ""), v["target"]
        mounts[target] = source
    return mounts


def test_api_state_lives_on_a_volume() -> None:
    home = environment("api")["SELFSERVE_HOME"]
    assert home in volume_mounts("api"), (
        f"SELFSERVE_HOME ({home}) is not a volume: the api's state would die with its container"
    )
    assert volume_mounts("api")[home] in (raw_compose().get("volumes") or {}), "the api's home must be a named volume"


def test_console_environment_points_at_the_api_and_holds_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    env = environment("console")
    missing = CONSOLE_NEEDS - set(env)
    assert not missing, f"the console service does not set {sorted(missing)}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
        assert not SECRET_NAME.search(key) and "DATABASE" not in key, (
            f"the console gets {key}: it is an API client and must hold no platform or engine credentials"
        )
    client = ClientSettings()
    for key, value in env.items():
        path = setting_path(ClientSettings, key, nested="")
        assert setting_value(client, path) == value, f"console: {key}={value!r} does not land in ClientSettings"

    url = urlsplit(client.url or "")
    api_port = environment("api")["SELFSERVE_SERVER__API_PORT"]
    assert (url.scheme, url.hostname, str(url.port)) == ("http", "api", api_port), (
        f"the console's SELFSERVE_URL must be http://api:{api_port}, not {client.url!r}"
    )


# --- pipelines: the Prefect server and the platform's worker -----------------------------------------------------


def command(service: str) -> list[str]:
    argv = compose()["services"][service].get("command")
    assert isinstance(argv, list), f"{service}: command must be an exec-form list, not {argv!r}"
    return [str(a) for a in argv]


def prefect_port() -> str:
    """The port the Prefect server listens on: its command says."""
    argv = command("prefect-server")
    assert argv[:3] == ["prefect", "server", "start"], f"prefect-server must run `prefect server start`, not {argv}"
    assert argv[argv.index("--host") + 1] == "0.0.0.0", "prefect-server must listen on 0.0.0.0 for the other containers"
    return argv[argv.index("--port") + 1]


def created_database() -> str:
    """The database prefect-db-init creates."""
    script = " ".join(command("prefect-db-init"))
    found = re.search(r"CREATE DATABASE (\w+)", script)
    assert found, f"prefect-db-init must CREATE DATABASE for Prefect: {script!r}"
    assert f"datname = '{found.group(1)}'" in script, "prefect-db-init must skip an existing database (safe to rerun)"
    return found.group(1)


def worker_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in environment("prefect-worker").items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_prefect_runs_on_its_own_database_in_the_platform_postgres() -> None:
    env = environment("prefect-server")
    url = make_url(env.get("PREFECT_API_DATABASE_CONNECTION_URL", "sqlite://"))
    assert url.drivername == "postgresql+asyncpg", f"Prefect's database URL must use postgresql+asyncpg: {url}"
    pg = environment("postgres")
    assert (url.host, url.port or 5432, url.username, url.password) == (
        "postgres",
        5432,
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
    ), "Prefect must reach the postgres service as its user"
    assert url.database == created_database(), (
        f"Prefect's database {url.database!r} is not the one prefect-db-init makes"
    )
    assert url.database != pg["POSTGRES_DB"], "Prefect must not share the platform's metadata database"
    init = compose()["services"]["prefect-db-init"]
    assert init["image"] == compose()["services"]["postgres"]["image"], "prefect-db-init must use the postgres image"
    init_env = environment("prefect-db-init")
    assert (init_env["PGHOST"], init_env["PGUSER"], init_env["PGPASSWORD"]) == (
        "postgres",
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
    ), "prefect-db-init must log in to the postgres service as its user"
    deps = services()["prefect-server"]["depends_on"]
    assert deps.get("prefect-db-init", {}).get("condition") == "service_completed_successfully", (
        "prefect-server must wait for its database to exist"
    )
    assert env.get("PREFECT_SERVER_ANALYTICS_ENABLED") == "false", "Prefect's analytics must be off"
    assert env.get("PREFECT_UI_ENABLED") == "false", "Prefect's UI must be off: users never reach Prefect"


def test_api_and_worker_reach_prefect_with_its_auth_string(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = environment("prefect-server").get("PREFECT_SERVER_API_AUTH_STRING", "")
    user, _, password = auth.partition(":")
    assert user and password == filled_env()["PREFECT_AUTH_PASSWORD"], (
        "prefect-server's PREFECT_SERVER_API_AUTH_STRING must be user:${PREFECT_AUTH_PASSWORD}"
    )
    expected_url = f"http://prefect-server:{prefect_port()}/api"
    for service in ("api", "prefect-worker"):
        for key, value in environment(service).items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.prefect_url == expected_url, f"{service} reaches Prefect at {settings.prefect_url}"
        assert settings.prefect_auth_string() == auth, f"{service}'s Prefect auth string is not prefect-server's"
        for key in environment(service):
            monkeypatch.delenv(key)
    assert services()["api"]["depends_on"].get("prefect-server", {}).get("condition") == "service_healthy", (
        "the api must wait for a healthy Prefect server"
    )


def test_worker_environment_is_real_settings_shared_with_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    env = environment("prefect-worker")
    missing = WORKER_NEEDS - set(env)
    assert not missing, f"the prefect-worker service does not set {sorted(missing)}"
    settings = worker_settings(monkeypatch)
    for key, value in env.items():
        if key in WORKER_PREFECT_VARS:
            continue
        assert key.startswith("SELFSERVE_"), f"the worker gets {key}, which no platform setting or Prefect reads"
        path = setting_path(Settings, key)
        assert setting_value(settings, path) == value, f"worker: {key}={value!r} does not land in settings"
    assert "SELFSERVE_DATABASE__URL" not in env, "the worker talks to the API and Prefect only: no metadata DB access"
    assert command("prefect-worker") == ["python", "-m", "selfserve.pipelines.worker"], (
        "prefect-worker must run `python -m selfserve.pipelines.worker`"
    )

    assert settings.mode == "compose", "the worker must run with SELFSERVE_MODE=compose"
    api = environment("api")
    # Launchers prove themselves to the API with a key derived from the secret key.
    assert settings.resolved_secret_key() == api["SELFSERVE_SECRET_KEY"], "the worker's secret key is not the api's"
    api_url = f"http://api:{api['SELFSERVE_SERVER__API_PORT']}"
    assert settings.runner_api_url == api_url, f"launchers must reach the API at {api_url}"
    assert api["SELFSERVE_PIPELINES__RUNNER_API_URL"] == api_url, (
        f"the api hands runs its own URL: it must be {api_url} (reachable from the worker's container)"
    )
    for key in ("URL", "S3_ENDPOINT_URL", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "S3_REGION"):
        assert env.get(f"SELFSERVE_STORAGE__{key}") == api.get(f"SELFSERVE_STORAGE__{key}"), (
            f"launchers read run code from the api's storage: SELFSERVE_STORAGE__{key} differs"
        )

    # Environments the api builds and the runs' working directories live under home, on one volume.
    assert env["SELFSERVE_HOME"] == api["SELFSERVE_HOME"], "the worker's home must be the api's"
    home = env["SELFSERVE_HOME"]
    assert volume_mounts("prefect-worker").get(home) == volume_mounts("api")[home], (
        f"the worker must mount the api's home volume at {home}"
    )
    deps = services()["prefect-worker"]["depends_on"]
    for target in ("prefect-server", "api"):
        assert deps.get(target, {}).get("condition") == "service_healthy", f"the worker must wait for {target}"


def test_prefect_and_the_worker_are_never_published() -> None:
    for name in ("prefect-server", "prefect-worker", "prefect-db-init"):
        svc = services()[name]
        assert not svc.get("ports") and not svc.get("expose"), f"{name} must not publish or expose ports"
        internal = {n for n, spec in (raw_compose().get("networks") or {}).items() if (spec or {}).get("internal")}
        assert set(svc["networks"]) == internal, f"{name} must be on the internal network only"
    console = environment("console")
    assert not any("prefect" in v.lower() for v in console.values()), "the console must know nothing of Prefect"


def test_healthchecks_probe_the_ports_the_services_listen_on() -> None:
    api_port = environment("api")["SELFSERVE_SERVER__API_PORT"]
    assert f":{api_port}{API_HEALTH_PATH}" in healthcheck_text("api"), (
        f"the api healthcheck must probe :{api_port}{API_HEALTH_PATH}, not {healthcheck_text('api')!r}"
    )
    assert f":{console_port()}{CONSOLE_HEALTH_PATH}" in healthcheck_text("console"), (
        f"the console healthcheck must probe :{console_port()}{CONSOLE_HEALTH_PATH}"
    )
    assert f":{prefect_port()}{PREFECT_HEALTH_PATH}" in healthcheck_text("prefect-server"), (
        f"the prefect-server healthcheck must probe :{prefect_port()}{PREFECT_HEALTH_PATH}"
    )
    worker_port = environment("prefect-worker")["SELFSERVE_PIPELINES__WORKER_PORT"]
    assert f"127.0.0.1:{worker_port}{WORKER_HEALTH_PATH}" in healthcheck_text("prefect-worker"), (
        f"the prefect-worker healthcheck must probe 127.0.0.1:{worker_port}{WORKER_HEALTH_PATH} (it binds 127.0.0.1)"
    )
    assert "mc ready local" in healthcheck_text("minio"), "minio's healthcheck must be `mc ready local`"
    assert "pg_isready" in healthcheck_text("postgres"), "postgres's healthcheck must use pg_isready"


def test_only_the_api_console_and_mlflow_publish_ports_on_localhost() -> None:
    publishing = {name for name, svc in services().items() if svc.get("ports")}
    assert publishing == PUBLISHED, f"only {sorted(PUBLISHED)} may publish ports; these do: {sorted(publishing)}"
    listening = {
        "api": environment("api")["SELFSERVE_SERVER__API_PORT"],
        "console": console_port(),
        "mlflow": mlflow_port(),
    }
    for name in sorted(PUBLISHED):
        ports = published_ports(name)
        assert len(ports) == 1, f"{name} must publish exactly one port, not {ports}"
        host_ip, _, container = ports[0]
        assert host_ip == "127.0.0.1", (
            f"{name} publishes on {host_ip or 'every interface'}; the default must be 127.0.0.1"
        )
        assert container == listening[name], (
            f"{name} publishes container port {container}, but listens on {listening[name]}"
        )
    for name, svc in services().items():
        assert svc.get("network_mode") is None, f"service {name!r} sets network_mode, which bypasses the networks"


def test_one_internal_network_for_all_and_another_only_for_published_services() -> None:
    networks = raw_compose().get("networks") or {}
    internal = {n for n, spec in networks.items() if (spec or {}).get("internal") is True}
    assert len(internal) == 1, f"compose.yaml needs exactly one network with internal: true, not {sorted(internal)}"
    for name, svc in services().items():
        joined = svc.get("networks")
        assert joined, f"service {name!r} lists no networks, so it would join the default (non-internal) network"
        joined = set(joined)
        assert internal <= joined, f"service {name!r} is not on the internal network {sorted(internal)}"
        outside = joined - internal
        assert not outside or name in PUBLISHED, (
            f"service {name!r} joins the non-internal network(s) {sorted(outside)}; only published services may"
        )
    for name in PUBLISHED:
        assert set(services()[name]["networks"]) - internal, (
            f"{name} publishes a port, so it needs a non-internal network"
        )


# --- models: the MLflow server ----------------------------------------------------------------------------------


def mlflow_port() -> str:
    """The port MLflow listens on in its container (its settings say)."""
    return environment("mlflow")["SELFSERVE_MODELS__MLFLOW_PORT"]


def mlflow_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in environment("mlflow").items():
        monkeypatch.setenv(key, value)
    return Settings()


def created_databases(service: str) -> set[str]:
    script = " ".join(command(service))
    return set(re.findall(r"for db in ([\w ]+); do", script)[0].split()) if "for db in" in script else set()


def test_mlflow_runs_the_tracking_server_under_basic_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    from selfserve.ml import server

    env = environment("mlflow")
    assert command("mlflow") == ["python", "-m", "selfserve.ml.server"], (
        "mlflow must run `python -m selfserve.ml.server`"
    )
    for key in env:
        assert key.startswith("SELFSERVE_"), f"mlflow gets {key}, which no platform setting reads"
    settings = mlflow_settings(monkeypatch)
    for key, value in env.items():
        assert setting_value(settings, setting_path(Settings, key)) == value, f"mlflow: {key}={value!r} is lost"
    assert settings.mode == "compose" and settings.models.mlflow_host == "0.0.0.0"
    # The server needs no platform key: its secrets come whole from .env, never derived.
    assert "SELFSERVE_SECRET_KEY" not in env and "SELFSERVE_DATABASE__URL" not in env
    argv = server.command(settings)
    assert argv[argv.index("--app-name") + 1] == "basic-auth" and argv[argv.index("--workers") + 1] == "1"
    server_env = server.environment(settings)  # resolves every secret: fails if one would be derived
    assert server_env["MLFLOW_AUTH_ADMIN_PASSWORD"] == filled_env()["MLFLOW_ADMIN_PASSWORD"]
    assert server_env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == filled_env()["MLFLOW_SERVER_SECRET_KEY"]
    assert server_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert f"127.0.0.1:{mlflow_port()}/health" in healthcheck_text("mlflow"), "the healthcheck must probe /health"
    hosts = (settings.models.allowed_hosts or "").split(",")
    assert f"mlflow:{mlflow_port()}" in hosts, "MLflow must answer the other containers (Host: mlflow:<port>)"
    published = published_ports("mlflow")[0]
    assert f"127.0.0.1:{published[1]}" in hosts, "MLflow must answer its published address"


def test_mlflow_keeps_its_data_in_its_own_databases_and_the_platform_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = mlflow_settings(monkeypatch)
    pg = environment("postgres")
    databases = set()
    for uri in (settings.mlflow_backend_store_uri, settings.mlflow_auth_database_uri):
        url = make_url(uri)
        assert url.drivername == "postgresql+psycopg", f"MLflow's database URL must use postgresql+psycopg: {url}"
        assert (url.host, url.username, url.password) == ("postgres", pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
        databases.add(url.database)
    assert len(databases) == 2, "tracking and auth each need their own database (both keep an alembic_version)"
    assert databases == created_databases("mlflow-db-init"), "mlflow-db-init must create MLflow's databases"
    assert not databases & {pg["POSTGRES_DB"], created_database()}, "MLflow must not share another database"
    assert "datname = '$db'" in " ".join(command("mlflow-db-init")), "mlflow-db-init must skip existing databases"
    deps = services()["mlflow"]["depends_on"]
    assert deps["mlflow-db-init"]["condition"] == "service_completed_successfully"
    assert deps["minio-init"]["condition"] == "service_completed_successfully"

    api = environment("api")
    assert settings.mlflow_artifacts_destination == f"{api['SELFSERVE_STORAGE__URL']}/mlflow-artifacts"
    for key in ("URL", "S3_ENDPOINT_URL", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "S3_REGION"):
        assert environment("mlflow")[f"SELFSERVE_STORAGE__{key}"] == api[f"SELFSERVE_STORAGE__{key}"], (
            f"MLflow keeps artifacts in the api's storage: SELFSERVE_STORAGE__{key} differs"
        )


def test_the_api_administers_mlflow_and_hands_out_its_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow_admin = mlflow_settings(monkeypatch).mlflow_admin_password()
    for key in environment("mlflow"):
        monkeypatch.delenv(key)
    monkeypatch.delenv("SELFSERVE_MODELS__ENABLED", raising=False)  # the unit suite's; compose keeps the default
    for key, value in environment("api").items():
        monkeypatch.setenv(key, value)
    api = Settings()
    assert api.models.enabled
    assert api.mlflow_url == f"http://mlflow:{mlflow_port()}", "the api (and the runs) must reach MLflow's service"
    assert api.mlflow_admin_password() == mlflow_admin, "the api must hold MLflow's admin password"
    host_ip, host_port, _ = published_ports("mlflow")[0]
    assert api.mlflow_public_url == f"http://{host_ip}:{host_port}", "users must get MLflow's published address"
    assert services()["api"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert "mlflow" not in " ".join(environment("prefect-worker")).lower(), "runs get MLflow access from the api only"
    assert not any("mlflow" in v.lower() for v in environment("console").values()), "the console knows no MLflow"


# --- serving: the runtime and its deployments -------------------------------------------------------------------


def serving_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in environment("serving").items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_serving_runs_the_runtime_with_the_apis_db_storage_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    env = environment("serving")
    assert command("serving") == ["python", "-m", "selfserve.serving.runtime"], (
        "serving must run `python -m selfserve.serving.runtime`"
    )
    settings = serving_settings(monkeypatch)
    for key, value in env.items():
        assert key.startswith("SELFSERVE_"), f"serving gets {key}, which no platform setting reads"
        path = setting_path(Settings, key)
        assert setting_value(settings, path) == value, f"serving: {key}={value!r} does not land in settings"
    assert settings.mode == "compose", "the serving runtime must run with SELFSERVE_MODE=compose"
    api = environment("api")
    # The API's nudges and log reads carry the runner key, derived from the secret key.
    assert settings.resolved_secret_key() == api["SELFSERVE_SECRET_KEY"], "serving's secret key is not the api's"
    assert env["SELFSERVE_DATABASE__URL"] == api["SELFSERVE_DATABASE__URL"], "serving must read the api's metadata DB"
    for key in ("URL", "S3_ENDPOINT_URL", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "S3_REGION"):
        assert env.get(f"SELFSERVE_STORAGE__{key}") == api.get(f"SELFSERVE_STORAGE__{key}"), (
            f"the runtime reads the model files the api publishes: SELFSERVE_STORAGE__{key} differs"
        )
    assert settings.serving.runtime_host == "0.0.0.0", "the api reaches the runtime from its own container"
    assert settings.serving.deployment_host == "0.0.0.0", "the api's gateway reaches deployments from its container"
    home = env["SELFSERVE_HOME"]
    assert home in volume_mounts("serving") and volume_mounts("serving")[home] in (raw_compose().get("volumes") or {})
    assert services()["serving"]["depends_on"]["api"]["condition"] == "service_healthy", (
        "the runtime must wait for the api, which migrates the metadata DB"
    )
    port = settings.serving.runtime_port
    assert f"127.0.0.1:{port}/health" in healthcheck_text("serving"), "the healthcheck must probe the runtime's /health"


def test_the_api_reaches_the_runtime_and_the_deployments_on_the_internal_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime_port = serving_settings(monkeypatch).serving.runtime_port
    for key in environment("serving"):
        monkeypatch.delenv(key)
    for key, value in environment("api").items():
        monkeypatch.setenv(key, value)
    api = Settings()
    assert api.serving.enabled and api.serving_runtime_url == f"http://serving:{runtime_port}"
    assert api.serving.deployment_url_host == "serving", "the gateway must reach deployments at serving:<port>"
    svc = services()["serving"]
    assert not svc.get("ports") and not svc.get("expose"), "serving and its deployments must not be published"
    internal = {n for n, spec in (raw_compose().get("networks") or {}).items() if (spec or {}).get("internal")}
    assert set(svc["networks"]) == internal, "serving must be on the internal network only"
    assert not any("serving" in v for v in environment("console").values()), "the console knows no serving runtime"


def test_feature_views_live_in_the_internal_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in environment("api").items():
        monkeypatch.setenv(key, value)
    api = Settings()
    assert (api.serving.online_store, api.serving.redis_url) == ("redis", "redis://redis:6379/0")
    redis = services()["redis"]
    assert services()["api"]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert not redis.get("ports") and redis["networks"] == ["internal"], "Redis must not be published"
    assert "redis-data:/data" in redis["volumes"], "the online store must survive a restart"


# --- Dockerfiles and .dockerignore -------------------------------------------------------------------------------


def test_every_build_has_a_dockerfile() -> None:
    assert set(build_services()) == OWN_DOCKERFILE | API_IMAGE, (
        f"api and console (and {sorted(API_IMAGE)} from the api's Dockerfile) are the built services, "
        f"not {sorted(build_services())}"
    )
    for name in build_services():
        dockerfile(name)
    for name in API_IMAGE:
        assert build_services()[name] == build_services()["api"], f"{name} must run the api image (its Dockerfile)"
        assert services()[name]["build"] == services()["api"]["build"], f"{name} must build exactly as the api does"


@pytest.mark.parametrize("service", sorted(OWN_DOCKERFILE))
def test_dockerfile_pins_its_base_images(service: str) -> None:
    df = dockerfile(service)
    stages: set[str] = set()
    bases = []
    for args in df.all("FROM"):
        words = [w for w in args.split() if not w.startswith("--")]
        image = words[0]
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2])
        if image in stages:
            continue
        bases.append(image)
        assert "$" not in image, f"{df.path.name} ({service}): base image {image!r} must not come from an ARG"
        tag = image.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest" and EXACT_TAG.match(tag), (
            f"{service} Dockerfile: base image {image!r} is not pinned to an exact version"
        )
    assert any(re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", b) for b in bases), (
        f"{service} Dockerfile must build on a pinned python:3.11.x-slim image, not {bases}"
    )
    assert any(re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", b) for b in bases), (
        f"{service} Dockerfile must take uv from a pinned ghcr.io/astral-sh/uv:<x.y.z> image, not {bases}"
    )


@pytest.mark.parametrize("service", sorted(OWN_DOCKERFILE))
def test_dockerfile_installs_from_the_lock_dependencies_first(service: str) -> None:
    df = dockerfile(service)
    syncs = [(i, args) for i, (kw, args) in enumerate(df.instructions) if kw == "RUN" and "uv sync" in args]
    assert syncs, f"{service} Dockerfile never runs uv sync"
    for _, args in syncs:
        assert "--frozen" in args and "--no-dev" in args, (
            f"{service} Dockerfile: every uv sync must be --frozen --no-dev (install the lock, no dev tools): {args!r}"
        )
    deps_step = next((i for i, args in syncs if "--no-install-project" in args), None)
    assert deps_step is not None, f"{service} Dockerfile: the dependency layer needs uv sync --no-install-project"
    copies_source = [i for i, (kw, args) in enumerate(df.instructions) if kw == "COPY" and "platform" in args.split()]
    assert copies_source and deps_step < min(copies_source), (
        f"{service} Dockerfile: install dependencies before copying the source, so code changes keep that layer"
    )
    assert any(i > min(copies_source) and "--no-install-project" not in args for i, args in syncs), (
        f"{service} Dockerfile: after copying the source, uv sync must install the project"
    )


@pytest.mark.parametrize("service", sorted(OWN_DOCKERFILE))
def test_dockerfile_runs_as_a_non_root_user(service: str) -> None:
    df = dockerfile(service)
    users = df.all("USER")
    assert users, f"{service} Dockerfile has no USER: the service would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{service} Dockerfile runs as {users[-1]!r}; it must be a non-root user"
    last_user = max(i for i, (kw, _) in enumerate(df.instructions) if kw == "USER")
    last_cmd = max(i for i, (kw, _) in enumerate(df.instructions) if kw == "CMD")
    assert last_user < last_cmd, f"{service} Dockerfile: USER must come before CMD"


@pytest.mark.parametrize("service", sorted(OWN_DOCKERFILE))
def test_dockerfile_exposes_checks_and_runs_the_service(service: str) -> None:
    df = dockerfile(service)
    port = environment("api")["SELFSERVE_SERVER__API_PORT"] if service == "api" else console_port()
    health = API_HEALTH_PATH if service == "api" else CONSOLE_HEALTH_PATH
    assert port in " ".join(df.all("EXPOSE")).split(), f"{service} Dockerfile must EXPOSE {port}"
    checks = df.all("HEALTHCHECK")
    assert checks and f":{port}{health}" in checks[-1], f"{service} Dockerfile needs a HEALTHCHECK on :{port}{health}"
    cmds = df.all("CMD")
    assert cmds, f"{service} Dockerfile has no CMD"
    argv = exec_form(cmds[-1])
    if service == "api":
        assert argv[-2:] == ["-m", "selfserve.server"], f"the api must run `python -m selfserve.server`, not {argv}"
    else:
        assert argv[:3] == ["streamlit", "run", "services/console/app.py"], f"the console must run the app: {argv}"
        assert argv[argv.index("--server.address") + 1] == "0.0.0.0", "the console must listen on 0.0.0.0"
        assert argv[argv.index("--server.headless") + 1] == "true", "the console must run headless"


@pytest.mark.parametrize("service", sorted(OWN_DOCKERFILE))
def test_dockerfile_copies_only_what_exists_in_the_build_context(service: str) -> None:
    df = dockerfile(service)
    for args in df.all("COPY"):
        if "--from=" in args:
            continue
        sources = [w for w in args.split() if not w.startswith("--")][:-1]
        for source in sources:
            assert (REPO / source).exists(), f"{service} Dockerfile copies {source}, which does not exist"
            assert not dockerignored(source), f"{service} Dockerfile copies {source}, but .dockerignore excludes it"


def test_the_api_image_carries_the_built_in_flows() -> None:
    # settings.pipelines.flows_dir is <source root>/flows: next to platform/ in the image.
    copies = {tuple(w for w in args.split() if not w.startswith("--")) for args in dockerfile("api").all("COPY")}
    assert ("platform", "./platform") in copies, "the api Dockerfile must copy platform to ./platform"
    assert ("flows", "./flows") in copies, (
        "the api Dockerfile must copy flows to ./flows: the api deploys the built-in flows from there"
    )


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    for path in (".venv", ".git", ".env", "config/.env", ".pytest_cache", "platform/selfserve/__pycache__"):
        assert dockerignored(path), f".dockerignore must exclude {path}"
    for path in ("pyproject.toml", "uv.lock", "README.md", "platform/selfserve/settings.py", "config/selfserve.toml"):
        assert not dockerignored(path), f".dockerignore excludes {path}, which the images need"
