"""Deploy-time check of flow code: it imports, and the entrypoint is a Prefect flow.

The user's module is imported in a child process, never in the API: confined with Landlock where
the kernel has it, without the platform's environment, killed after ``pipelines.check_timeout``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import tempfile
from pathlib import Path, PurePosixPath
from typing import IO, Any

from selfserve.errors import InvalidInput
from selfserve.settings import Settings, inherited_environ

ENTRYPOINT_HELP = "FILE.py:FUNCTION, the file relative to the deployed code's root"
MAX_FLOW_NAME = 128  # FlowDeployment.flow_name
# Largest file the checked module (or its output) may write: the check reads only the tail.
MAX_OUTPUT_BYTES = 16 * 2**20


def split_entrypoint(entrypoint: str) -> tuple[str, str]:
    """``path/to/file.py:func`` -> (path, func), checked to be a relative .py path and an identifier.

    Raises:
        InvalidInput: anything else.
    """
    path, sep, func = entrypoint.rpartition(":")
    parts = PurePosixPath(path).parts
    if (
        not sep
        or not path.endswith(".py")
        or not func.isidentifier()
        or path.startswith("/")
        or ".." in parts
        or "\\" in path
        or "\x00" in path
    ):
        raise InvalidInput(f"entrypoint {entrypoint!r} must look like {ENTRYPOINT_HELP}")
    return path, func


def describe(settings: Settings, code_dir: Path, entrypoint: str, python: str) -> dict[str, Any]:
    """Import the code in a confined child and describe its flow.

    The child runs in isolated mode (``-I``), so nothing in ``code_dir`` can stand in for the
    checker itself or for the standard library before it confines itself.

    Returns:
        ``{"name", "description", "parameters", "confined"}``.

    Raises:
        InvalidInput: the file is missing, does not import, or the entrypoint is not a flow.
    """
    path, _ = split_entrypoint(entrypoint)
    if not (code_dir / path).is_file():
        raise InvalidInput(f"the deployed code holds no {path}")
    env = {
        "PATH": inherited_environ().get("PATH", "/usr/bin:/bin"),
        "HOME": str(code_dir),
        "TMPDIR": str(code_dir),
        "PREFECT_HOME": str(code_dir / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    timeout = settings.pipelines.check_timeout
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [python, "-I", "-B", "-m", "selfserve.pipelines._check_child", entrypoint],
            cwd=code_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=_limit_output,  # noqa: PLW1509 - fork-safe: two syscalls
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise InvalidInput(f"importing {path} took longer than {timeout:g} s") from None
        finally:
            _kill_group(proc)  # and whatever the module started, which must not outlive the check
        answer = _answer(_tail(out, MAX_OUTPUT_BYTES))  # the answer alone: the module's prints went to stderr
        if not isinstance(answer, dict):
            tail = " ".join(_tail(err).strip().splitlines()[-3:])[:500]
            raise InvalidInput(f"checking {path} failed (exit {proc.returncode}): {tail or 'no output'}")
    if "error" in answer:
        raise InvalidInput(str(answer["error"])[:1000])
    name, parameters = answer.get("name"), answer.get("parameters")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_FLOW_NAME or not _is_schema(parameters):
        raise InvalidInput(f"{entrypoint} does not describe a flow this platform can deploy (name of 1-128 characters)")
    description = answer.get("description")
    return {
        "name": name,
        "description": description if isinstance(description, str) else "",
        "parameters": parameters,
        "confined": answer.get("confined") is True,
    }


def _is_schema(parameters: Any) -> bool:
    """A parameter schema as Prefect makes them (the answer comes from a process that ran user code)."""
    if not isinstance(parameters, dict):
        return False
    required = parameters.get("required", [])
    return isinstance(parameters.get("properties", {}), dict) and (
        isinstance(required, list) and all(isinstance(r, str) for r in required)
    )


def _limit_output() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_OUTPUT_BYTES, MAX_OUTPUT_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(f: IO[bytes], size: int = 64 * 1024) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(f.tell() - size, 0))
    return f.read().decode(errors="replace")


def _answer(out: str) -> Any:
    """The child's answer: its last line of output, as JSON."""
    lines = out.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
