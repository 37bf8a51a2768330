"""PostgreSQL ingestion: the platform's ``ingest()`` (postgres source -> Delta dataset version) vs ``pandas.read_sql``.

A table of mixed types (int, bigint, float, text, timestamp, bool, numeric, nullable text) is made in
the ``test`` database with ``generate_series``. Each measured run is a fresh child process that does
only one thing: the platform child calls ``selfserve.data.ingest.ingest`` into a new dataset of a
project whose source points at the table; the pandas child calls ``pandas.read_sql`` on the same
table through SQLAlchemy + psycopg 3. Each child reports the seconds of the work itself (imports
excluded), its RSS before the work and its peak RSS (``ru_maxrss``) at the end. Rounds alternate the
order of the two so that machine noise hits both alike; medians are reported.

The platform child also reports where its time goes, measured by wrapping functions without changing
them: the time inside ``datasets.write`` (which takes the source's batches as they are read, so the
read overlaps the write) and, within it, the time the read-ahead thread spends taking batches from the
source (``COPY`` and Arrow's CSV parse).

    uv run python bench/bench_ingest.py [--quick] [--rows 1000000] [--rounds 5] [--profile]

``--profile`` adds one cProfile run of the platform child and prints its top functions (of the calling
thread only: the source is read in the write's read-ahead thread).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SPEED_GOAL = 5.0  # platform at least this many times faster than pandas.read_sql
MEMORY_GOAL = 0.5  # platform peak RSS at most this fraction of pandas.read_sql's

TABLE_SQL = """
CREATE TABLE {table} AS
SELECT
    g::int                                              AS id,
    (g::bigint * 2654435761) % 1000000007               AS account,
    (g % 1000) / 7.0::float8                            AS score,
    'customer-' || (g % 50000)::text                    AS name,
    timestamp '2024-01-01' + (g % 525600) * interval '1 minute' AS created_at,
    (g % 3 = 0)                                         AS active,
    ((g % 100000) / 100.0)::numeric(12, 2)              AS amount,
    CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || md5(g::text) END AS note
FROM generate_series(1, {rows}) AS g
"""


def _mib(kib: int) -> float:
    return kib / 1024  # ru_maxrss is KiB on Linux


def _rss_now() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# -- children --------------------------------------------------------------------------------------


def child_platform(table: str, dataset: str, db_url: str, profile: bool) -> dict[str, float]:
    # Modules the work imports lazily are imported before the clock starts (a long-lived worker has
    # them loaded; with PYTHONDONTWRITEBYTECODE their compile time would otherwise be counted).
    import deltalake  # noqa: F401
    import pandas  # noqa: F401  (pyarrow imports it on the first pa.array() of Python objects)
    import psycopg  # noqa: F401

    import selfserve.data.connectors  # noqa: F401
    from selfserve.data import datasets
    from selfserve.data import ingest as ingest_mod
    from selfserve.data.objectstore import from_settings
    from selfserve.policy.projects import require_project
    from selfserve.schemas.data import IngestRequest
    from selfserve.settings import get_settings
    from selfserve.store import Store

    store = Store(db_url)
    objects = from_settings(get_settings())
    write_seconds = 0.0
    source_seconds = 0.0
    original_write, original_throttled = datasets.write, ingest_mod.throttled

    def timed_write(*args: object, **kwargs: object) -> object:
        nonlocal write_seconds
        t = time.perf_counter()
        try:
            return original_write(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            write_seconds += time.perf_counter() - t

    def timed_source(batches: Iterator[Any]) -> Iterator[Any]:
        nonlocal source_seconds
        while True:
            t = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                source_seconds += time.perf_counter() - t
                return
            source_seconds += time.perf_counter() - t
            yield batch

    def timed_throttled(batches: Iterator[Any], max_rows_per_second: float | None) -> Iterator[Any]:
        return original_throttled(timed_source(iter(batches)), max_rows_per_second)

    datasets.write = timed_write  # type: ignore[assignment]
    ingest_mod.throttled = timed_throttled  # type: ignore[assignment]
    before = _rss_now()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    with store.begin() as session:
        proj = require_project(session, "bench")
        row = ingest_mod.ingest(
            session, objects, proj, IngestRequest(source="pg", to=dataset, table=f"public.{table}"), actor="admin"
        )
        rows = row.rows
    seconds = time.perf_counter() - t0
    if profiler is not None:
        import io
        import pstats

        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
        print(out.getvalue(), file=sys.stderr)
    store.dispose()
    return {
        "seconds": seconds,
        "outside_write_seconds": seconds - write_seconds,
        "write_seconds": write_seconds,
        "source_seconds": source_seconds,
        "rows": rows,
        "rss_before_mib": before,
        "peak_mib": _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
    }


def child_pandas(table: str) -> dict[str, float]:
    import pandas as pd
    import psycopg  # noqa: F401  (imported before the clock, as in the platform child)
    import sqlalchemy
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401

    before = _rss_now()
    t0 = time.perf_counter()
    engine = sqlalchemy.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    df = pd.read_sql(f"SELECT * FROM public.{table}", engine)
    seconds = time.perf_counter() - t0
    rows = len(df)
    engine.dispose()
    return {
        "seconds": seconds,
        "rows": rows,
        "rss_before_mib": before,
        "peak_mib": _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
    }


# -- parent ----------------------------------------------------------------------------------------


def run_child(args: list[str], env: dict[str, str], show_stderr: bool = False) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-4000:]}")
    if show_stderr:
        print(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_table(table: str, rows: int) -> float:
    import psycopg

    t0 = time.perf_counter()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS public.{table}")
        conn.execute(TABLE_SQL.format(table=table, rows=int(rows)))
        conn.execute(f"VACUUM ANALYZE public.{table}")
    return time.perf_counter() - t0


def drop_table(table: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS public.{table}")


def setup_platform(tmp: Path) -> str:
    """A control plane on a fresh SQLite metadata DB, with project ``bench`` and postgres source ``pg``."""
    sys.path.insert(0, str(REPO))
    from tests.support import make_platform

    db_url = f"sqlite:///{tmp / 'meta.db'}"
    platform = make_platform(tmp / "home", db_url)
    try:
        admin = platform.admin()
        admin.projects.create("bench")
        admin.sources.add("bench", "pg", "postgres", {"url": PG_URL})
    finally:
        platform.close()
    return db_url


def med(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="200k rows, 1 round (under a minute)")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--profile", action="store_true", help="also profile one platform run (cProfile)")
    ap.add_argument("--child", choices=["platform", "pandas"], help=argparse.SUPPRESS)
    ap.add_argument("--table", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    ap.add_argument("--db-url", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child == "platform":
        print(json.dumps(child_platform(args.table, args.dataset, args.db_url, args.profile)))
        return
    if args.child == "pandas":
        print(json.dumps(child_pandas(args.table)))
        return

    rows = args.rows or (200_000 if args.quick else 1_000_000)
    rounds = args.rounds or (1 if args.quick else 5)
    table = f"selfserve_bench_ingest_{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="selfserve-bench-ingest-"))
    env = {"SELFSERVE_HOME": str(tmp / "home"), "SELFSERVE_CONFIG_DIR": str(tmp / "config")}
    for key in [k for k in os.environ if k.startswith("SELFSERVE_")]:
        os.environ.pop(key)
    os.environ.update(env)
    platform_runs: list[dict[str, float]] = []
    pandas_runs: list[dict[str, float]] = []
    try:
        made = make_table(table, rows)
        db_url = setup_platform(tmp)
        for r in range(rounds):
            order = ["platform", "pandas"] if r % 2 == 0 else ["pandas", "platform"]
            for who in order:
                if who == "platform":
                    res = run_child(
                        ["--child", "platform", "--table", table, "--dataset", f"run{r}", "--db-url", db_url], env
                    )
                    assert res["rows"] == rows, res
                    platform_runs.append(res)
                else:
                    res = run_child(["--child", "pandas", "--table", table], env)
                    assert res["rows"] == rows, res
                    pandas_runs.append(res)
                print(f"  round {r + 1} {who}: {res['seconds']:.2f} s, peak {res['peak_mib']:.0f} MiB", file=sys.stderr)
        if args.profile:
            run_child(
                ["--child", "platform", "--table", table, "--dataset", "profiled", "--db-url", db_url, "--profile"],
                env,
                show_stderr=True,
            )
    finally:
        drop_table(table)
        shutil.rmtree(tmp, ignore_errors=True)

    p_s, b_s = med(platform_runs, "seconds"), med(pandas_runs, "seconds")
    p_m, b_m = med(platform_runs, "peak_mib"), med(pandas_runs, "peak_mib")
    p_w = med(platform_runs, "peak_mib") - med(platform_runs, "rss_before_mib")
    b_w = med(pandas_runs, "peak_mib") - med(pandas_runs, "rss_before_mib")
    speedup = b_s / p_s
    mem_ratio = p_m / b_m  # judged at full precision: 0.504 prints as 0.50 but misses
    print(f"`{' '.join(['uv run python', 'bench/bench_ingest.py', *sys.argv[1:]])}`\n")
    print(
        f"{rows:,} rows x 8 columns (int, bigint, float8, text, timestamp, bool, numeric(12,2), nullable text); "
        f"table made in {made:.1f} s; {rounds} interleaved round(s), medians; each run a fresh child process; "
        f"{os.cpu_count()} cores\n"
    )
    print("| path | seconds | rows/s | RSS before work (MiB) | peak RSS (MiB) | peak - before (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| platform `ingest()` postgres -> Delta | {p_s:.2f} | {rows / p_s:,.0f} | "
        f"{med(platform_runs, 'rss_before_mib'):.0f} | {p_m:.0f} | {p_w:.0f} |"
    )
    print(
        f"| `pandas.read_sql` | {b_s:.2f} | {rows / b_s:,.0f} | {med(pandas_runs, 'rss_before_mib'):.0f} | "
        f"{b_m:.0f} | {b_w:.0f} |"
    )
    print(
        f"\nplatform time (median): `datasets.write` {med(platform_runs, 'write_seconds'):.2f} s, taking the "
        f"source's batches as they are read (the read-ahead thread spent {med(platform_runs, 'source_seconds'):.2f} s "
        f"reading: COPY and CSV parse); outside it {med(platform_runs, 'outside_write_seconds'):.2f} s\n"
    )
    print("| goal | measured | met |")
    print("|---|---:|---|")
    print(
        f"| platform >= {SPEED_GOAL:g}x faster than pandas.read_sql | {speedup:.2f}x | "
        f"{'yes' if speedup >= SPEED_GOAL else 'NO'} |"
    )
    print(
        f"| platform peak RSS <= {MEMORY_GOAL:g}x pandas.read_sql's | {mem_ratio:.3f}x "
        f"(work only: {p_w / b_w:.2f}x) | {'yes' if mem_ratio <= MEMORY_GOAL else 'NO'} |"
    )
    paired = sorted(b["seconds"] / p["seconds"] for p, b in zip(platform_runs, pandas_runs, strict=True))
    print("\nper-round speed-up (pandas / platform, same round): " + ", ".join(f"{x:.2f}x" for x in paired))
    print("\nper run (seconds / peak MiB):")
    for label, runs in (("platform", platform_runs), ("pandas", pandas_runs)):
        print(f"- {label}: " + ", ".join(f"{r['seconds']:.2f}/{r['peak_mib']:.0f}" for r in runs))


if __name__ == "__main__":
    main()
