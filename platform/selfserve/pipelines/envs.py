"""Isolated Python environments for deployments with ``--requirements``, built with uv.

An environment is named by the hash of its normalised requirements and the platform's Python, so
deployments with equal requirements share one. It sees its own packages first and then the
platform's (through a ``.pth`` file), so Prefect and the SDK are always importable while a user's
pins win for everything else.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from selfserve.errors import InvalidInput
from selfserve.settings import Settings, inherited_environ

READY = ".selfserve-ready"
MAX_REQUIREMENTS_BYTES = 64 * 1024
# Distributions an environment may not bring its own of: the platform's code runs from them in the
# run's process before it is confined.
RESERVED = {"selfserve"}
_COMMENT = re.compile(r"(^|\s)#.*$")


def normalise(text: str) -> list[str]:
    """The requirement lines of ``text``, checked: plain PEP 508 requirements from the package index only.

    Raises:
        InvalidInput: an option line (``-r``, ``--index-url``, ``-e``...), a URL or path requirement,
            or a line that is not a requirement.
    """
    if len(text.encode()) > MAX_REQUIREMENTS_BYTES:
        raise InvalidInput(f"requirements are over {MAX_REQUIREMENTS_BYTES // 1024} KiB")
    out = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        if line.startswith("-"):
            raise InvalidInput(f"requirements line {n}: options like {line.split()[0]!r} are not allowed")
        try:
            req = Requirement(line)
        except InvalidRequirement as e:
            raise InvalidInput(f"requirements line {n}: {line!r} is not a requirement ({e})") from None
        if req.url:
            raise InvalidInput(f"requirements line {n}: {req.name} names a URL; only index packages are allowed")
        req.name = canonicalize_name(req.name)
        if req.name in RESERVED:
            raise InvalidInput(f"requirements line {n}: {req.name} is the platform's own package")
        out.add(str(req))
    if not out:
        raise InvalidInput("the requirements file names no package")
    return sorted(out)


def env_sha(requirements: list[str]) -> str:
    """The name of the environment of ``requirements`` (as :func:`normalise` returns them) on this Python."""
    key = "\n".join([sys.version, *requirements])
    return hashlib.sha256(key.encode()).hexdigest()


def env_root(settings: Settings) -> Path:
    return settings.home / "pipelines" / "envs"


def python_of(settings: Settings, sha: str) -> Path:
    return env_root(settings) / sha / "bin" / "python"


def is_ready(settings: Settings, sha: str) -> bool:
    return (env_root(settings) / sha / READY).exists()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build(settings: Settings, requirements: list[str]) -> str:
    """Build (or reuse) the environment for ``requirements``; returns its hash.

    Raises:
        InvalidInput: uv could not resolve or install the requirements (its message is included).
    """
    sha = env_sha(requirements)
    root = env_root(settings)
    final = root / sha
    if (final / READY).exists():
        return sha
    with _locked(root / f"{sha}.lock"):
        if (final / READY).exists():
            return sha
        tmp = root / f"{sha}.building"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        env = inherited_environ()
        env.pop("VIRTUAL_ENV", None)
        try:
            _uv(settings, ["venv", "--quiet", "--python", sys.executable, str(tmp)], env)
            reqs = tmp / "requirements.txt"
            reqs.write_text("\n".join(requirements) + "\n")
            _uv(settings, ["pip", "install", "--quiet", "--python", str(tmp / "bin" / "python"), "-r", str(reqs)], env)
            link_platform(tmp / "bin" / "python", env)
            (tmp / READY).write_text("\n".join(requirements) + "\n")
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return sha


def link_platform(python: Path, env: dict[str, str]) -> None:
    """Let the environment of ``python`` see the platform's packages after its own.

    The platform's site directories are added by a ``.pth`` file named to come last, as site
    directories (so that their own ``.pth`` files, like an editable install of the platform, count).

    Raises:
        InvalidInput: the environment's packages replace the platform's ``selfserve``.
    """
    purelib = Path(
        subprocess.run(
            [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.strip()
    )
    platform_paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (purelib / "zz_selfserve_platform.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in platform_paths)
    )
    _check_platform_wins(python, env)


def _check_platform_wins(python: Path, env: dict[str, str]) -> None:
    """The environment's ``selfserve`` must be the platform's: a package may not bring a module of that name."""
    import selfserve

    proc = subprocess.run(
        [str(python), "-I", "-c", "import selfserve; print(selfserve.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if proc.returncode != 0 or Path(proc.stdout.strip()).resolve() != Path(selfserve.__file__).resolve():
        raise InvalidInput("the requirements replace the platform's own selfserve package; remove that package")


def _uv(settings: Settings, args: list[str], env: dict[str, str]) -> None:
    uv = shutil.which(settings.pipelines.uv) or shutil.which("uv", path=str(Path(sys.executable).parent))
    if uv is None:
        raise InvalidInput("uv is not installed on the platform, so --requirements cannot be used")
    try:
        proc = subprocess.run(
            [uv, *args], capture_output=True, text=True, env=env, timeout=settings.pipelines.env_build_timeout
        )
    except subprocess.TimeoutExpired:
        raise InvalidInput(
            f"building the environment took longer than {settings.pipelines.env_build_timeout:g} s"
        ) from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        raise InvalidInput("the requirements could not be installed: " + " ".join(lines[-6:])[:1500])
