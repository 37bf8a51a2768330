"""Delta datasets: write throughput vs plain Parquet, and time travel over 100+ versions.

1. One realistic mixed-type Arrow table (ints, floats, text, low-cardinality text, timestamps with
   zone, dates, bools, decimals, nulls) is written, in alternating order each round, through
   ``datasets.write`` (a new dataset per round: Arrow's Parquet writer, one Delta commit of the file
   with its statistics, and the metadata bookkeeping) and
   through ``pyarrow.parquet.write_table`` to one file. Throughput ratio = Parquet time / platform time.
2. A dataset gets a first version of the same table, then small appends through ``datasets.write``
   until it has more than 100 versions. Reading version N-100 (``datasets.read(..., version=...)``)
   is compared with reading the latest, interleaved. Ratio = old-version read time / latest read time.

    uv run python bench/bench_delta.py [--quick] [--rows 1000000] [--rounds 9] [--appends 120]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WRITE_GOAL = 0.8  # platform write throughput at least this fraction of plain Parquet's
TRAVEL_GOAL = 2.0  # reading version N-100 at most this many times the latest's time


def make_table(rows: int, seed: int = 7) -> Any:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    ids = np.arange(rows, dtype=np.int64)
    cities = np.array(["Lisbon", "Porto", "Madrid", "Paris", "Berlin", "Rome", "Oslo", "Vienna", "Prague", "Dublin"])
    words = np.array([f"w{i:04d}" for i in range(5000)])
    notes = pa.array(
        [f"{a} {b} {c}" for a, b, c in rng.choice(words, size=(rows, 3))],
        mask=rng.random(rows) < 0.1,
    )
    start = np.datetime64("2024-01-01T00:00:00", "us")
    return pa.table(
        {
            "id": pa.array(ids),
            "customer_id": pa.array(rng.integers(0, 200_000, rows, dtype=np.int32)),
            "amount": pa.array(rng.gamma(2.0, 50.0, rows)),
            "price": pa.array([round(float(x), 2) for x in rng.uniform(0, 10_000, rows)], pa.float64()).cast(
                pa.decimal128(12, 2)
            ),
            "quantity": pa.array(rng.integers(1, 100, rows, dtype=np.int16)),
            "city": pa.array(cities[rng.integers(0, len(cities), rows)]),
            "email": pa.array([f"user{i}@example.com" for i in rng.integers(0, 500_000, rows)]),
            "note": notes,
            "created_at": pa.array(start + rng.integers(0, 365 * 86_400_000_000, rows), pa.timestamp("us", tz="UTC")),
            "day": pa.array((start + rng.integers(0, 365 * 86_400_000_000, rows)).astype("datetime64[D]")),
            "active": pa.array(rng.random(rows) < 0.7),
            "score": pa.array(rng.normal(0, 1, rows).astype(np.float32), mask=rng.random(rows) < 0.05),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="200k rows, 2 rounds, 105 appends (under a minute)")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--appends", type=int, default=None, help="small appends after the first version (>= 100)")
    ap.add_argument("--append-rows", type=int, default=1000)
    ap.add_argument("--profile", action="store_true", help="time the parts of a datasets.write")
    args = ap.parse_args()
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    rounds = args.rounds or (2 if args.quick else 9)
    appends = max(100, args.appends or (105 if args.quick else 120))

    tmp = Path(tempfile.mkdtemp(prefix="selfserve-bench-delta-"))
    for key in [k for k in os.environ if k.startswith("SELFSERVE_")]:
        os.environ.pop(key)
    os.environ.update({"SELFSERVE_HOME": str(tmp / "home"), "SELFSERVE_CONFIG_DIR": str(tmp / "config")})
    sys.path.insert(0, str(REPO))
    platform = None
    try:
        import pyarrow.parquet as pq
        from tests.support import make_platform

        from selfserve.data import datasets
        from selfserve.policy.projects import require_project

        table = make_table(rows)
        platform = make_platform(tmp / "home", f"sqlite:///{tmp / 'meta.db'}")
        platform.admin().projects.create("bench")
        objects = platform.app.state.object_store

        def write_platform(name: str, data: Any, mode: str = "append") -> float:
            t = time.perf_counter()
            with platform.store.begin() as session:
                proj = require_project(session, "bench")
                datasets.write(session, objects, proj, name, data, actor="admin", mode=mode)
            return time.perf_counter() - t

        def write_parquet(path: Path) -> float:
            t = time.perf_counter()
            pq.write_table(table, path)
            return time.perf_counter() - t

        # warm-up of both paths (first-use imports, allocator), not counted
        write_platform("warmup", table.slice(0, 1000))
        write_parquet(tmp / "warmup.parquet")

        plat_w: list[float] = []
        pq_w: list[float] = []
        for r in range(rounds):
            order = ["platform", "parquet"] if r % 2 == 0 else ["parquet", "platform"]
            for who in order:
                if who == "platform":
                    plat_w.append(write_platform(f"w{r}", table))
                else:
                    pq_w.append(write_parquet(tmp / f"w{r}.parquet"))
        assert datasets.read(objects, "bench", "w0").num_rows == rows
        parquet_bytes = (tmp / "w0.parquet").stat().st_size
        delta_bytes = sum(p.stat().st_size for p in (tmp / "home").rglob("*.parquet") if "/w0/" in str(p))
        split = _write_split(platform, objects, table, args.profile)

        # history: version 0 = the table, then small appends
        write_platform("hist", table)
        small = make_table(args.append_rows, seed=11)
        append_t = [write_platform("hist", small) for _ in range(appends)]
        latest = appends
        old = latest - 100

        def read(version: int | None) -> float:
            t = time.perf_counter()
            out = datasets.read(objects, "bench", "hist", version=version)
            seconds = time.perf_counter() - t
            expect = rows + args.append_rows * (latest if version is None else version)
            assert out.num_rows == expect, (out.num_rows, expect)
            return seconds

        def open_only(version: int | None) -> float:
            t = time.perf_counter()
            datasets.open_table(objects, "bench", "hist", version=version)
            return time.perf_counter() - t

        read(None)  # warm-up
        read_old: list[float] = []
        read_new: list[float] = []
        open_old: list[float] = []
        open_new: list[float] = []
        for r in range(max(rounds, 5)):
            order = (old, None) if r % 2 == 0 else (None, old)
            for v in order:
                (read_old if v == old else read_new).append(read(v))
                (open_old if v == old else open_new).append(open_only(v))
        log_files = sorted((tmp / "home").rglob("hist/_delta_log/*"))
        checkpoints = [p.name for p in log_files if "checkpoint" in p.name]
    finally:
        if platform is not None:
            platform.close()
        shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median
    p_s, q_s = med(plat_w), med(pq_w)
    write_ratio = q_s / p_s
    travel_ratio = med(read_old) / med(read_new)
    mib = table.nbytes / 2**20
    print(f"`{' '.join(['uv run python', 'bench/bench_delta.py', *sys.argv[1:]])}`\n")
    print(
        f"{rows:,} rows x {table.num_columns} columns ({mib:.0f} MiB in Arrow: int64, int32, int16, float64, float32, "
        f"decimal(12,2), text x3 (one low-cardinality, one 10% null), timestamp tz, date, bool); "
        f"{rounds} interleaved round(s), medians; {os.cpu_count()} cores\n"
    )
    print("**write**\n")
    print("| path | seconds | rows/s | MiB/s (Arrow) | file bytes (MiB) |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| `datasets.write` (Delta commit) | {p_s:.3f} | {rows / p_s:,.0f} | {mib / p_s:.0f} | "
        f"{delta_bytes / 2**20:.1f} |"
    )
    print(
        f"| `pyarrow.parquet.write_table` | {q_s:.3f} | {rows / q_s:,.0f} | {mib / q_s:.0f} | "
        f"{parquet_bytes / 2**20:.1f} |"
    )
    print(
        "\n`datasets.write` split (median of 3): "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in split.items())
        + "\n"
    )
    print(
        f"**time travel** ({latest + 1} versions: {rows:,} rows then {appends} appends of {args.append_rows:,} rows)\n"
    )
    print("| read | seconds (`datasets.read`) | of which opening the table (ms) |")
    print("|---|---:|---:|")
    print(f"| latest (version {latest}) | {med(read_new):.3f} | {med(open_new) * 1000:.1f} |")
    print(f"| version {old} (N-100) | {med(read_old):.3f} | {med(open_old) * 1000:.1f} |")
    first, last = append_t[:10], append_t[-10:]
    print(
        f"\nsmall appends through `datasets.write`: median {med(append_t) * 1000:.0f} ms; "
        f"first 10 {med(first) * 1000:.0f} ms, last 10 {med(last) * 1000:.0f} ms; "
        f"checkpoints in the log: {_checkpoints(checkpoints)}\n"
    )
    print("| goal | measured | met |")
    print("|---|---:|---|")
    print(
        f"| platform write throughput >= {WRITE_GOAL:g}x plain Parquet | {write_ratio:.2f}x | "
        f"{'yes' if write_ratio >= WRITE_GOAL else 'NO'} |"
    )
    print(
        f"| read of version N-100 <= {TRAVEL_GOAL:g}x the latest | {travel_ratio:.2f}x | "
        f"{'yes' if travel_ratio <= TRAVEL_GOAL else 'NO'} |"
    )
    paired = sorted(q / p for p, q in zip(plat_w, pq_w, strict=True))
    print("\nper-round write throughput ratio (same round): " + ", ".join(f"{x:.2f}x" for x in paired))
    print("per round (seconds): platform write " + ", ".join(f"{x:.3f}" for x in plat_w))
    print("per round (seconds): parquet write " + ", ".join(f"{x:.3f}" for x in pq_w))


def _checkpoints(names: list[str]) -> str:
    versions = sorted(int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit())
    if not versions:
        return "none"
    return f"{len(versions)} (versions {', '.join(str(v) for v in versions[:3])}{', ...' if len(versions) > 3 else ''})"


def _write_split(platform: Any, objects: Any, table: Any, profile: bool) -> dict[str, float]:
    """Time the parts of ``datasets.write`` by wrapping the functions it calls (median of 3 writes)."""
    import deltalake

    from selfserve.data import datasets
    from selfserve.policy.projects import require_project

    timers: dict[str, list[float]] = {}
    originals: dict[tuple[Any, str], Any] = {}

    def wrap(owner: Any, attr: str, label: str) -> None:
        fn = getattr(owner, attr)
        originals[(owner, attr)] = fn

        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timers.setdefault(label, []).append(time.perf_counter() - t)

        setattr(owner, attr, timed)

    import deltalake.transaction

    wrap(datasets, "_write_files", "Parquet files (Arrow's writer) and their statistics")
    wrap(deltalake.transaction, "create_table_with_add_actions", "Delta commit")
    wrap(deltalake, "write_deltalake", "write_deltalake (fallback)")
    wrap(datasets, "_open_latest", "open the table (before and after)")
    wrap(datasets, "_version_of", "find version in history")
    wrap(datasets, "columns_of", "columns_of (x2)")
    wrap(type(objects), "size_of", "store.size_of")
    total: list[float] = []
    try:
        for i in range(3):
            t = time.perf_counter()
            with platform.store.begin() as session:
                proj = require_project(session, "bench")
                if profile and i == 0:
                    import cProfile
                    import pstats

                    prof = cProfile.Profile()
                    prof.enable()
                datasets.write(session, objects, proj, f"split{i}", table, actor="admin")
                if profile and i == 0:
                    prof.disable()
                    pstats.Stats(prof, stream=sys.stderr).sort_stats("cumtime").print_stats(20)
            total.append(time.perf_counter() - t)
    finally:
        for (owner, attr), fn in originals.items():
            setattr(owner, attr, fn)
    out = {"total": statistics.median(total)}
    for label, values in timers.items():
        n = len(values) // 3 or 1
        out[label] = statistics.median(sum(values[i * n : (i + 1) * n]) for i in range(3))
    out["other (metadata DB, quota, normalise)"] = out["total"] - sum(v for k, v in out.items() if k != "total")
    return out


if __name__ == "__main__":
    main()
