"""Transforms: DuckDB SQL or a Polars function over the project's datasets, into a new version
whose lineage names the exact input versions.

A Polars transform is the user's own Python: it runs in a child process that holds no platform
credentials, reads its inputs from Arrow files the platform prepared, and hands back an Arrow file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Literal, NoReturn

import pyarrow as pa
import pyarrow.ipc as ipc
from sqlalchemy.orm import Session

from selfserve.data import datasets
from selfserve.data.objectstore import ObjectStore
from selfserve.data.sandbox import sandbox, tables_in
from selfserve.errors import InvalidInput
from selfserve.settings import get_settings, inherited_environ
from selfserve.store.tables import DatasetVersion, Project


def _referenced(sql: str, offered: dict[str, dict[str, Any]]) -> list[datasets.InputRef]:
    """The offered tables a query names, as lineage (CTEs and unknown names are not inputs)."""
    names = tables_in(sql)
    lowered = {k.lower(): v for k, v in offered.items()}
    return [datasets.InputRef(**lowered[n]) for n in sorted(names) if n in lowered]


def run_sql(
    session: Session,
    store: ObjectStore,
    proj: Project,
    sql: str,
    to: str,
    *,
    actor: str,
    mode: Literal["append", "overwrite"] = "overwrite",
    evolve: bool = False,
) -> DatasetVersion:
    from selfserve.data.service import offered_tables

    refs, lineage = offered_tables(session, store, proj, sql)
    inputs = _referenced(sql, lineage)
    with sandbox(store, refs, timeout=get_settings().data.query_timeout) as box:
        result, _ = box.query(sql)
    return datasets.write(
        session,
        store,
        proj,
        to,
        result,
        actor=actor,
        mode=mode,
        evolve=evolve,
        producer={"kind": "transform", "engine": "duckdb", "sql": sql[:20_000]},
        inputs=inputs,
    )


class _Child:
    """The Polars child process: JSON lines on its stdin and on a protocol pipe (its stdout, which
    the child points its own prints away from), stderr to a file, killed with its whole process
    group at the time limit or at the end."""

    def __init__(self, work: Path, memory_bytes: int | None, timeout: float) -> None:
        env = {
            "PATH": inherited_environ().get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "TMPDIR": str(work),
            "PYTHONNOUSERSITE": "1",
            "POLARS_MAX_THREADS": "2",
        }
        self.timeout = timeout
        self.timed_out = False
        self._stderr = (work / "stderr.txt").open("w+b")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "selfserve.data._polars_child", str(memory_bytes or 0)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=work,
            env=env,
            start_new_session=True,  # its own process group, so that the kill reaches what it starts
        )
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.timed_out = True
        self._kill()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._stopped()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self._stopped()
        try:
            msg = json.loads(line)
        except ValueError:
            raise InvalidInput("the Polars transform broke its channel to the platform") from None
        if not isinstance(msg, dict):
            raise InvalidInput("the Polars transform broke its channel to the platform")
        if "error" in msg:
            raise InvalidInput(f"the Polars transform failed: {msg['error']}")
        return msg

    def _stopped(self) -> NoReturn:
        if self.timed_out:
            raise InvalidInput(f"the Polars transform was stopped after the {self.timeout:g} s time limit")
        self.proc.wait()
        self._stderr.seek(0)
        err = self._stderr.read()[-2000:].decode(errors="replace").strip()
        code = self.proc.returncode
        why = f"it ended with code {code}" if code is not None and code >= 0 else f"it was killed by signal {-code}"
        raise InvalidInput(f"the Polars transform stopped without an answer ({why}): {err or 'no output'}")

    def close(self) -> None:
        self._timer.cancel()
        self._kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            if stream:
                with contextlib.suppress(OSError):
                    stream.close()


def run_polars(
    session: Session,
    store: ObjectStore,
    proj: Project,
    code: str,
    to: str,
    *,
    actor: str,
    function: str = "transform",
    inputs: dict[str, str] | None = None,
    mode: Literal["append", "overwrite"] = "overwrite",
    evolve: bool = False,
    memory_bytes: int | None = None,
) -> DatasetVersion:
    """Run ``function`` from ``code`` with one LazyFrame per parameter.

    Each parameter reads dataset ``inputs[param]`` (``name`` or ``name@version``), or by default the
    dataset named like the parameter (``raw_customers`` -> ``raw-customers``).

    Raises:
        InvalidInput: the code fails, returns no frame, or runs over ``data.transform_timeout``.
        NotFound: a parameter names no dataset of the project.
    """
    from selfserve.data.service import parse_ref

    inputs = inputs or {}
    with tempfile.TemporaryDirectory(prefix="selfserve-polars-") as tmp:
        work = Path(tmp)
        (work / "user_transform.py").write_text(code)
        child = _Child(work, memory_bytes, get_settings().data.transform_timeout)
        try:
            child.send({"code": str(work / "user_transform.py"), "function": function})
            hello = child.receive()
            params, confined = hello["params"], bool(hello.get("confined"))
            refs: list[datasets.InputRef] = []
            paths: dict[str, str] = {}
            for p in params:
                name, ver = parse_ref(inputs.get(p, p.replace("_", "-")))
                ds = datasets.get(session, proj, name)
                v = ds.current_version if ver is None else ver
                if v is None:
                    raise InvalidInput(f"dataset {name!r} has no data yet")
                table = datasets.read(store, proj.name, name, version=v)
                path = work / f"in-{p}.arrow"
                with ipc.new_file(path, table.schema) as w:
                    w.write_table(table)
                paths[p] = str(path)
                refs.append(datasets.InputRef(proj.name, name, v))
            out = work / "out.arrow"
            child.send({"inputs": paths, "output": str(out)})
            child.receive()
            with ipc.open_file(out) as r:
                result: pa.Table = r.read_all()
        finally:
            child.close()
        return datasets.write(
            session,
            store,
            proj,
            to,
            result,
            actor=actor,
            mode=mode,
            evolve=evolve,
            producer={
                "kind": "transform",
                "engine": "polars",
                "function": function,
                "code": code[:20_000],
                "confined": confined,
            },
            inputs=refs,
        )
