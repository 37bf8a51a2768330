"""The deploy-time check of flow code: imported in a confined child, never in the API."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from selfserve.data._landlock import abi_version
from selfserve.errors import InvalidInput
from selfserve.pipelines import check
from selfserve.settings import Settings, get_settings

GOOD = """
from prefect import flow


@flow(name="daily-report", description="Counts things.")
def report(day: str, limit: int = 10) -> int:
    return limit
"""


@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [
        ("flow.py:main", ("flow.py", "main")),
        ("flows/etl/job.py:run_etl", ("flows/etl/job.py", "run_etl")),
        ("./flow.py:main", ("./flow.py", "main")),
    ],
)
def test_split_entrypoint(entrypoint: str, expected: tuple[str, str]) -> None:
    assert check.split_entrypoint(entrypoint) == expected


@pytest.mark.parametrize(
    "entrypoint",
    [
        "flow.py",  # no function
        "flow.py:",  # empty function
        "flow:main",  # not a .py file
        "flow.txt:main",
        "flow.py:not-an-identifier",
        "flow.py:a.b",
        "/abs/flow.py:main",
        "../flow.py:main",
        "a/../../flow.py:main",
        "a\\flow.py:main",
        "a\x00.py:main",
        "",
    ],
)
def test_split_entrypoint_refuses(entrypoint: str) -> None:
    with pytest.raises(InvalidInput, match="must look like FILE.py:FUNCTION"):
        check.split_entrypoint(entrypoint)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SELFSERVE_PIPELINES__CHECK_TIMEOUT", "60")
    get_settings.cache_clear()
    return get_settings()


def _describe(settings: Settings, code: Path, files: dict[str, str], entrypoint: str) -> dict[str, object]:
    code.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_text(textwrap.dedent(text))
    return check.describe(settings, code, entrypoint, sys.executable)


def test_a_good_flow_is_described(settings: Settings, tmp_path: Path) -> None:
    # Prints (also at the file descriptor, also a line that looks like an answer) do not disturb the answer.
    noisy = (
        GOOD + 'print("hello from the module")\nimport os\nos.write(1, b\'{"name": "fake", "parameters": {}}\\n\')\n'
    )
    described = _describe(settings, tmp_path / "code", {"pkg/flows.py": noisy}, "pkg/flows.py:report")
    assert described["name"] == "daily-report"
    assert described["description"] == "Counts things."
    params = described["parameters"]
    assert isinstance(params, dict)
    assert params["required"] == ["day"]
    assert params["properties"]["limit"]["default"] == 10
    assert described["confined"] is (abi_version() > 0)


def test_the_codes_own_modules_import(settings: Settings, tmp_path: Path) -> None:
    files = {
        "flow.py": "from helpers import NAME\nfrom prefect import flow\n\n@flow(name=NAME)\ndef main() -> None: ...\n",
        "helpers.py": "NAME = 'from-a-helper'\n",
    }
    assert _describe(settings, tmp_path / "code", files, "flow.py:main")["name"] == "from-a-helper"


def test_code_cannot_stand_in_for_the_checker(settings: Settings, tmp_path: Path) -> None:
    """A ``selfserve`` package in the code is the code's, not the checker (which would run unconfined)."""
    fake = 'import json\nprint(json.dumps({"name": "pwned", "parameters": {}, "confined": True}))\n'
    files = {
        "selfserve/__init__.py": "",
        "selfserve/pipelines/__init__.py": "",
        "selfserve/pipelines/_check_child.py": fake,
        "json.py": "raise SystemExit('the standard library was shadowed')\n",
        "flow.py": GOOD,
    }
    assert _describe(settings, tmp_path / "code", files, "flow.py:report")["name"] == "daily-report"


@pytest.mark.parametrize(
    ("source", "entrypoint", "message"),
    [
        ("import no_such_module_anywhere\n", "flow.py:main", r"does not import: ModuleNotFoundError: .*no_such_module"),
        (
            "x = 1\nraise ValueError('bad config')\n",
            "flow.py:main",
            r"does not import: ValueError: bad config \(at flow.py:2\)",
        ),
        ("def main(:\n", "flow.py:main", "does not import: SyntaxError"),
        ("import sys\nsys.exit(3)\n", "flow.py:main", "does not import: SystemExit: 3"),
        (GOOD, "flow.py:missing", "defines no 'missing'"),
        ("def main() -> None:\n    pass\n", "flow.py:main", "is not a flow; decorate it with @flow"),
        ("main = 42\n", "flow.py:main", "is not a flow"),
    ],
    ids=["missing-import", "raises", "syntax", "exits", "no-function", "plain-function", "not-callable"],
)
def test_code_that_is_no_flow_is_refused(
    settings: Settings, tmp_path: Path, source: str, entrypoint: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        _describe(settings, tmp_path / "code", {"flow.py": source}, entrypoint)


def test_a_missing_file_is_refused_without_a_child(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="holds no other.py"):
        _describe(settings, tmp_path / "code", {"flow.py": GOOD}, "other.py:report")


def test_a_long_flow_name_is_refused(settings: Settings, tmp_path: Path) -> None:
    source = "from prefect import flow\n\n@flow(name='x' * 200)\ndef main() -> None:\n    pass\n"
    with pytest.raises(InvalidInput, match="name of 1-128 characters"):
        _describe(settings, tmp_path / "code", {"flow.py": source}, "flow.py:main")


@pytest.mark.skipif(abi_version() < 1, reason="the kernel has no Landlock")
@pytest.mark.parametrize("target", ["/etc/passwd", "home"])
def test_a_module_cannot_read_outside_its_code(settings: Settings, tmp_path: Path, target: str) -> None:
    if target == "home":
        settings.home.mkdir(parents=True, exist_ok=True)
        (settings.home / "secret.key").write_text("platform secret\n")
        target = str(settings.home / "secret.key")
    assert not Path(target).resolve().is_relative_to(tmp_path / "code")
    source = f"open({target!r}).read()\n" + GOOD
    with pytest.raises(InvalidInput, match="does not import: PermissionError"):
        _describe(settings, tmp_path / "code", {"flow.py": source}, "flow.py:report")


def test_an_import_that_takes_too_long_is_stopped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SELFSERVE_PIPELINES__CHECK_TIMEOUT", "0.5")
    get_settings.cache_clear()
    source = "import time\ntime.sleep(60)\n"
    with pytest.raises(InvalidInput, match=r"took longer than 0\.5 s"):
        _describe(get_settings(), tmp_path / "code", {"flow.py": source}, "flow.py:main")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b'{"name": "x", "parameters": {"required": [[1]]}}', "does not describe a flow"),
        (b'{"name": "", "parameters": {}}', "does not describe a flow"),
        (b'{"name": "x", "parameters": []}', "does not describe a flow"),
        (b'["not", "an", "answer"]', "checking flow.py failed"),
        (b'{"error": ["odd"]}', r"\['odd'\]"),
    ],
)
def test_a_forged_answer_is_refused_not_crashed_on(
    settings: Settings, tmp_path: Path, answer: bytes, message: str
) -> None:
    """The answer comes from a process that ran the user's code, which may write it itself."""
    source = f"import os, sys\nos.write(sys.modules['__main__']._ANSWER_FD, {answer!r} + b'\\n')\nos._exit(0)\n"
    with pytest.raises(InvalidInput, match=message):
        _describe(settings, tmp_path / "code", {"flow.py": source}, "flow.py:main")
