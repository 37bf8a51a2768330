"""Monitoring: one monitor run on 100k rows x 20 columns vs calling Evidently directly.

Data, made once with a fixed seed (not timed):

- reference: 100k rows, 15 numeric columns (normal), 5 categorical (4-6 string values) and the label
  ``y`` (0/1), as a training table would be;
- current: a ``predictions-<route>`` table of 100k live rows in Arrow, shaped as the gateway logs it
  (each row's 20 inputs as one JSON object, the prediction as JSON), where 4 numeric columns are
  shifted by 0.5 sd and 1 categorical column changed its mix; plus ``feedback-<route>`` labels for
  half of the requests.

Each round, in alternating order:

- monitor: ``drift.current_frame(log, feedback)`` (filter, JSON expansion, label join) then
  ``drift.compute(reference, current, drift_share=0.5, label="y")``: Evidently's
  ``DataDriftPreset`` with its tests, the per-column results, quality on the labelled rows, and the
  HTML report as bytes;
- direct: ``Report([DataDriftPreset()], include_tests=True).run(current, reference)`` on the already
  expanded pandas frames (the same 20 feature columns on both sides), then ``save_html`` to a file.

Evidently and scikit-learn are imported before the first round, so neither side pays for imports.
Goals: the monitor run <= 30 s, and <= 1.2x the direct call (medians of wall time). The machine is
shared, so the CPU time of this process is reported beside the wall time: other processes' load
stretches wall time round by round, much less the CPU time each path needs.

    uv run python bench/bench_monitor.py [--rows 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "platform"))

TOTAL_GOAL = 30.0  # seconds for a monitor run on 100k x 20
RATIO_GOAL = 1.2  # monitor run / Evidently directly
NUMERIC, CATEGORICAL = 15, 5
SHIFTED = {"n0": 0.5, "n1": 0.5, "n2": 0.5, "n3": 0.5}
CATEGORIES = [["red", "green", "blue", "gray"], ["s", "m", "l", "xl"], ["a", "b", "c", "d", "e", "f"]]


def make_data(rows: int, seed: int = 11) -> tuple[Any, Any, Any]:
    """The reference frame, the prediction log and the feedback, as the monitor would read them."""
    import numpy as np
    import orjson
    import pandas as pd
    import pyarrow as pa

    from selfserve.serving.predlog import FEEDBACK_SCHEMA, PREDICTIONS_SCHEMA

    rng = np.random.default_rng(seed)

    def features(shifted: bool) -> dict[str, Any]:
        cols: dict[str, Any] = {}
        for i in range(NUMERIC):
            cols[f"n{i}"] = rng.normal(size=rows) + (SHIFTED.get(f"n{i}", 0.0) if shifted else 0.0)
        for i in range(CATEGORICAL):
            values = CATEGORIES[i % len(CATEGORIES)]
            weights = np.ones(len(values))
            if shifted and i == 0:
                weights[0] = 3.0  # one category grows from 1/4 to 1/2 of the rows
            cols[f"c{i}"] = rng.choice(values, size=rows, p=weights / weights.sum())
        return cols

    reference = pd.DataFrame(features(False))
    reference["y"] = (reference["n0"] + rng.normal(size=rows) > 0).astype(np.int64)

    live = pd.DataFrame(features(True))
    inputs = [orjson.dumps(r).decode() for r in live.to_dict("records")]
    predictions = (live["n0"] > 0).astype(int).tolist()
    request_ids = [f"req{i:07d}" for i in range(rows)]
    ts = pa.array(np.full(rows, np.datetime64("2026-11-01T00:00:00", "us")), pa.timestamp("us", tz="UTC"))
    log = pa.table(
        {
            "request_id": request_ids,
            "row": pa.array(np.zeros(rows, dtype=np.int32)),
            "ts": ts,
            "target": ["churn-champion"] * rows,
            "model": ["churn"] * rows,
            "model_version": pa.array(np.ones(rows, dtype=np.int64)),
            "shadow": pa.array(np.zeros(rows, dtype=bool)),
            "ok": pa.array(np.ones(rows, dtype=bool)),
            "latency_ms": pa.array(rng.gamma(2.0, 2.0, rows)),
            "inputs": inputs,
            "prediction": [str(p) for p in predictions],
            "error": pa.nulls(rows, pa.string()),
        },
        schema=PREDICTIONS_SCHEMA,
    )
    labelled = rng.random(rows) < 0.5
    truth = (live["n0"] + rng.normal(size=rows) > 0).astype(int)
    feedback = pa.table(
        {
            "request_id": [r for r, keep in zip(request_ids, labelled, strict=True) if keep],
            "label": [str(v) for v in truth[labelled]],
            "ts": ts.filter(pa.array(labelled)),
        },
        schema=FEEDBACK_SCHEMA,
    )
    return reference, log, feedback


def run_monitor(reference: Any, log: Any, feedback: Any) -> tuple[dict[str, float], Any]:
    from selfserve.monitoring import drift

    c0, t0 = time.process_time(), time.perf_counter()
    current = drift.current_frame(log, feedback)
    t1 = time.perf_counter()
    result = drift.compute(reference, current, drift_share=0.5, label="y")
    t2 = time.perf_counter()
    return {"expand": t1 - t0, "compute": t2 - t1, "total": t2 - t0, "cpu": time.process_time() - c0}, result


def run_direct(reference: Any, current: Any, out: Path) -> dict[str, float]:
    import numpy as np
    from evidently import Report
    from evidently.presets import DataDriftPreset

    c0, t0 = time.process_time(), time.perf_counter()
    with np.errstate(all="ignore"):
        snapshot = Report([DataDriftPreset()], include_tests=True).run(current, reference)
    t1 = time.perf_counter()
    snapshot.save_html(str(out))
    t2 = time.perf_counter()
    return {"run": t1 - t0, "html": t2 - t1, "total": t2 - t0, "cpu": time.process_time() - c0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    t = time.perf_counter()
    reference, log, feedback = make_data(args.rows)
    made = time.perf_counter() - t

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import evidently.presets  # noqa: F401
        import sklearn.metrics  # noqa: F401
    imports = time.perf_counter() - t

    from selfserve.monitoring import drift

    features = [c for c in reference.columns if c != "y"]
    expanded = drift.current_frame(log, feedback)
    direct_current, direct_reference = expanded[features], reference[features]

    monitor: list[dict[str, float]] = []
    direct: list[dict[str, float]] = []
    result: Any = None
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        html = Path(tmp) / "report.html"
        for i in range(args.rounds):
            order = ("monitor", "direct") if i % 2 == 0 else ("direct", "monitor")
            for which in order:
                if which == "monitor":
                    times, result = run_monitor(reference, log, feedback)
                    monitor.append(times)
                else:
                    direct.append(run_direct(direct_reference, direct_current, html))
            print(
                f"round {i + 1}: monitor {monitor[-1]['total']:.2f} s, direct {direct[-1]['total']:.2f} s",
                file=sys.stderr,
            )
        html_bytes = html.stat().st_size

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    total, base = med(monitor, "total"), med(direct, "total")
    ratio = total / base
    cpu, cpu_base = med(monitor, "cpu"), med(direct, "cpu")
    cpu_ratio = cpu / cpu_base
    drifted = sorted(c for c, v in result.columns.items() if v["drifted"])
    stattests = sorted({v["stattest"] for v in result.columns.values()})

    print(f"`{' '.join(['uv run python', 'bench/bench_monitor.py', *sys.argv[1:]])}`\n")
    print(
        f"{args.rows:,} reference rows x {len(features)} columns (+ label) vs {args.rows:,} logged rows "
        f"({len(feedback):,} labelled requests); {args.rounds} alternating rounds, medians in seconds. "
        f"Not timed: making the data {made:.1f} s, importing Evidently and scikit-learn {imports:.1f} s.\n"
    )
    print("| path | seconds |")
    print("|---|---:|")
    print(f"| monitor: `current_frame` (filter, JSON expansion, label join) | {med(monitor, 'expand'):.2f} |")
    print(f"| monitor: `compute` (Evidently, results, quality, HTML) | {med(monitor, 'compute'):.2f} |")
    print(f"| **monitor total** | **{total:.2f}** |")
    print(f"| direct: `Report.run` | {med(direct, 'run'):.2f} |")
    print(f"| direct: `save_html` | {med(direct, 'html'):.2f} |")
    print(f"| **direct total** | **{base:.2f}** |")
    print(f"| monitor total, CPU time of the process | {cpu:.2f} |")
    print(f"| direct total, CPU time of the process | {cpu_base:.2f} |")
    print()
    print("| goal | measured | met |")
    print("|---|---:|---|")
    print(f"| monitor run <= {TOTAL_GOAL:.0f} s | {total:.2f} s | {'PASS' if total <= TOTAL_GOAL else 'FAIL'} |")
    print(f"| monitor / direct <= {RATIO_GOAL}x | {ratio:.2f}x | {'PASS' if ratio <= RATIO_GOAL else 'FAIL'} |")
    verdict = "PASS" if cpu_ratio <= RATIO_GOAL else "FAIL"
    print(f"| monitor / direct <= {RATIO_GOAL}x, CPU time | {cpu_ratio:.2f}x | {verdict} |")
    print()
    print(
        f"Result: {result.status}, drift share {result.drift_share:.2f}; drifted {', '.join(drifted)} "
        f"(shifted: {', '.join(SHIFTED)}, c0); tests {', '.join(stattests)}; "
        f"quality on {result.rows_labelled:,} rows: "
        + ", ".join(f"{k} {v:.3f}" for k, v in result.quality.items())
        + f"; report {len(result.html) / 2**20:.1f} MiB (direct {html_bytes / 2**20:.1f} MiB)."
    )
    paired = [m["total"] / d["total"] for m, d in zip(monitor, direct, strict=True)]
    print("\nper-round ratio monitor / direct (same round): " + ", ".join(f"{x:.2f}x" for x in paired))
    print("per round (seconds): monitor " + ", ".join(f"{r['total']:.2f}" for r in monitor))
    print("per round (seconds): direct " + ", ".join(f"{r['total']:.2f}" for r in direct))
    print("per round (CPU seconds): monitor " + ", ".join(f"{r['cpu']:.2f}" for r in monitor))
    print("per round (CPU seconds): direct " + ", ".join(f"{r['cpu']:.2f}" for r in direct))
    print(f"load average after the run: {', '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores)")


if __name__ == "__main__":
    main()
