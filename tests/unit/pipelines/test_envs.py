"""Requirements of a deployment's environment: plain index packages only, in one canonical form."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfserve.errors import InvalidInput
from selfserve.pipelines import envs
from selfserve.settings import inherited_environ


def test_normalise_sorts_dedups_and_canonicalises_names() -> None:
    text = """
# the flow's needs
Requests>=2.31   # HTTP
polars==1.0.0
requests>=2.31
Typing_Extensions ; python_version >= "3.8"
\tpandas[performance]<3
"""
    assert envs.normalise(text) == [
        "pandas[performance]<3",
        "polars==1.0.0",
        "requests>=2.31",
        'typing-extensions; python_version >= "3.8"',
    ]


@pytest.mark.parametrize(
    "line",
    [
        "-r other.txt",
        "--requirement other.txt",
        "--index-url https://evil.example/simple",
        "--extra-index-url https://evil.example/simple",
        "-i https://evil.example/simple",
        "-e .",
        "--editable git+https://example.com/x.git",
        "-f ./wheels",
        "-c constraints.txt",
        "--trusted-host evil.example",
    ],
)
def test_normalise_refuses_option_lines(line: str) -> None:
    with pytest.raises(InvalidInput, match="options like"):
        envs.normalise(f"polars\n{line}\n")


@pytest.mark.parametrize(
    "line",
    [
        "mypkg @ https://example.com/mypkg-1.0.tar.gz",
        "mypkg @ file:///etc/passwd",
        "mypkg @ git+https://example.com/mypkg.git",
    ],
)
def test_normalise_refuses_url_requirements(line: str) -> None:
    with pytest.raises(InvalidInput, match="names a URL"):
        envs.normalise(line)


@pytest.mark.parametrize(
    "line",
    [
        "./local/package",
        "/abs/path/to/wheel.whl",
        "https://example.com/pkg.whl",
        "git+https://example.com/x.git",
        "polars==1.0 --hash=sha256:abc",  # an option at the end of the line
        "polars>>1",
        "this is not a requirement",
        "pkg==1.0#egg=pkg",
        "pkg \\",
    ],
)
def test_normalise_refuses_garbage_and_paths(line: str) -> None:
    with pytest.raises(InvalidInput, match="is not a requirement"):
        envs.normalise(line)


def test_normalise_refuses_the_platforms_own_package() -> None:
    with pytest.raises(InvalidInput, match="platform's own package"):
        envs.normalise("SelfServe==1.0\n")


@pytest.mark.parametrize("text", ["", "\n  \n", "# only a comment\n"])
def test_normalise_refuses_requirements_without_a_package(text: str) -> None:
    with pytest.raises(InvalidInput, match="names no package"):
        envs.normalise(text)


def test_normalise_refuses_a_huge_file() -> None:
    with pytest.raises(InvalidInput, match="KiB"):
        envs.normalise("polars\n" * (envs.MAX_REQUIREMENTS_BYTES // 7 + 1))


def test_env_sha_is_stable_and_names_the_requirements() -> None:
    a = envs.env_sha(envs.normalise("requests>=2\npolars\n"))
    assert a == envs.env_sha(envs.normalise("polars\n\nRequests >= 2  # again\n"))
    assert a == envs.env_sha(["polars", "requests>=2"])
    assert len(a) == 64 and int(a, 16) >= 0
    assert a != envs.env_sha(envs.normalise("requests>=2\npolars==1.0\n"))


def _venv(tmp_path: Path) -> Path:
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if uv is None:
        pytest.skip("uv is not installed")
    env = inherited_environ()
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(tmp_path / "env")], check=True, env=env)
    return tmp_path / "env" / "bin" / "python"


def _purelib(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def test_an_environment_sees_its_own_packages_first_then_the_platforms(tmp_path: Path) -> None:
    python = _venv(tmp_path)
    (_purelib(python) / "polars").mkdir()
    (_purelib(python) / "polars" / "__init__.py").write_text("PINNED = True\n")
    envs.link_platform(python, inherited_environ())
    probe = "import selfserve, polars; print(selfserve.__file__); print(polars.PINNED)"
    out = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    import selfserve

    assert Path(out[0]) == Path(selfserve.__file__) and out[1] == "True"


def test_an_environment_may_not_replace_the_platforms_package(tmp_path: Path) -> None:
    python = _venv(tmp_path)
    (_purelib(python) / "selfserve").mkdir()
    (_purelib(python) / "selfserve" / "__init__.py").write_text("")
    with pytest.raises(InvalidInput, match="replace the platform's own selfserve"):
        envs.link_platform(python, inherited_environ())
