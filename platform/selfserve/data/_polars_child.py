"""The child process of a Polars transform: imports the user's file, reports the function's
parameters, then computes the result from the Arrow files it is given. It speaks JSON lines on
stdin and on the stdout it was started with, holds no platform credentials, and (where the kernel
has Landlock) can read no file but its working directory and the Python installation, and open no
TCP connection.

Usage: ``python -m selfserve.data._polars_child MEMORY_BYTES`` (0: no memory limit).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import traceback
from pathlib import Path
from typing import IO, Any

from selfserve.data._landlock import confine


def _limit_memory(memory_bytes: int) -> None:
    # Set here, by the child itself: a preexec_fn in the multi-threaded API process could deadlock.
    if memory_bytes > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def _protocol_channel() -> IO[str]:
    """The platform's channel: the original stdout. The user's prints (fd 1 and sys.stdout) go to
    stderr instead, so that they can never be taken for an answer."""
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def main(argv: list[str]) -> int:
    _limit_memory(int(argv[0]) if argv else 0)
    channel = _protocol_channel()

    def say(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    spec_msg = json.loads(sys.stdin.readline())
    try:
        # From here on, the process reads only its working directory and the Python installation.
        confined = confine(Path(spec_msg["code"]).parent)
        spec = importlib.util.spec_from_file_location("user_transform", spec_msg["code"])
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        fn = getattr(module, spec_msg["function"], None)
        if not callable(fn):
            say({"error": f"the file defines no function {spec_msg['function']!r}"})
            return 1
        params = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        say({"params": params, "confined": confined})
        run = json.loads(sys.stdin.readline())
        import polars as pl

        frames = {name: pl.scan_ipc(path) for name, path in run["inputs"].items()}
        result = fn(**frames)
        if isinstance(result, pl.LazyFrame):
            result = result.collect()
        if not isinstance(result, pl.DataFrame):
            say({"error": f"the function returned {type(result).__name__}, not a Polars LazyFrame or DataFrame"})
            return 1
        result.write_ipc(run["output"])
        say({"ok": True, "rows": result.height})
        return 0
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"line {f.lineno}" for f in reversed(tb) if f.filename == spec_msg.get("code")), "")
        if not where and isinstance(e, SyntaxError) and e.lineno:
            where = f"line {e.lineno}"
        say({"error": f"{type(e).__name__}: {e}" + (f" ({where} of the transform file)" if where else "")})
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
