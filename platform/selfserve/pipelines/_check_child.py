"""Import deployed flow code in a confined child and describe the flow it defines.

Runs as ``python -I -B -m selfserve.pipelines._check_child ENTRYPOINT`` with the code's directory as its
working directory; prints one JSON line: the flow's name, description and parameter schema, or an
error. Confined with Landlock (reads the code and the Python installation, no network) before any
user code is imported.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

_ANSWER_FD: int | None = None


def _answer(payload: dict[str, object]) -> None:
    assert _ANSWER_FD is not None
    os.write(_ANSWER_FD, (json.dumps(payload, default=str) + "\n").encode())


def _keep_stdout_for_the_answer() -> None:
    """The answer goes to the real stdout; everything else written to fd 1 (the module's prints,
    C extensions, its subprocesses) goes to stderr, so that it cannot break the answer line."""
    global _ANSWER_FD
    sys.stdout.flush()
    _ANSWER_FD = os.dup(1)
    os.set_inheritable(_ANSWER_FD, False)
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def main() -> int:
    entrypoint = sys.argv[1]
    _keep_stdout_for_the_answer()
    from selfserve.data._landlock import confine

    confined = confine(Path.cwd())
    path, _, func = entrypoint.rpartition(":")
    sys.path.insert(0, str(Path.cwd()))  # the code's own modules, as under ``python -m`` (not in isolated mode)
    try:
        from prefect.flows import Flow
        from prefect.utilities.importtools import load_script_as_module

        module = load_script_as_module(path)
        obj = getattr(module, func, None)
    except BaseException as e:  # noqa: BLE001 - the user's module failed to import (or exited): report why
        cause = e.__cause__ or e
        tb = traceback.extract_tb(cause.__traceback__)
        where = next(
            (f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if f.filename.startswith(str(Path.cwd()))), ""
        )
        _answer(
            {"error": f"{path} does not import: {type(cause).__name__}: {cause}" + (f" (at {where})" if where else "")}
        )
        return 0
    if obj is None:
        _answer({"error": f"{path} defines no {func!r}"})
        return 0
    if not isinstance(obj, Flow):
        _answer({"error": f"{path}:{func} is not a flow; decorate it with @flow from prefect"})
        return 0
    _answer(
        {
            "name": obj.name,
            "description": obj.description or "",
            "parameters": obj.parameters.model_dump(mode="json"),
            "confined": confined,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
