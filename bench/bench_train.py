"""Training: the platform's training library vs plain scikit-learn, phase by phase.

breast_cancer (569 rows x 30 features), two candidates (random forest and gradient boosting, 100
trees each, the library's defaults), in-process against a local MLflow store (SQLite and a local
artifact directory, in a temporary directory). Each round, in alternating order:

- platform: ``selfserve.ml.training``: load (read the Parquet export), prepare (``make_plan``:
  checks, canonical row order, encoding, the seeded splits), fit (each candidate on the fit rows,
  scored on the validation rows), then ``finish``: refit (the winner on all training rows, scored
  on the held-out rows), log (MLflow runs, the dataset input, the model with signature and input
  example), register (a new version, alias challenger) and compare (the champion read back from
  the registry with skops and scored; promotion).
- baseline: the same Parquet read, ``train_test_split``, then plain ``fit`` + ``predict`` of the
  same two estimators on the training rows and the held-out rows, nothing logged.

Rounds after the first reuse one registered model, so "compare" reads a real champion. The first
round pays MLflow's imports and store set-up; it is reported apart and left out of the medians.

End to end (the issue's goal: submit of ``train`` to a registered champion in <= 60 s), first, unless
``--no-e2e``: a fresh embedded platform (``selfserve up --no-demo`` in a temporary home, on free ports:
``bench_pipelines.Stack``, with the MLflow server on a free port too) runs the built-in ``train`` flow as
a user would. As the admin: a project, breast_cancer uploaded as a dataset, then each round deploys
``train`` (candidates rf and gb) for a new model ``clf<i>`` (so each round ends with a first champion,
as the issue's submit does) and times ``client.flows.run`` to the champion seen by
``client.models.get``, polled every 0.25 s. Each round is split with Prefect's state history
(SCHEDULED, PENDING, RUNNING), the launcher's start record in the platform's metadata DB, the flow's
log lines (dataset resolved, read, planned, each candidate fitted, winner refit, promoted) and the
``timings`` of its result line (refit, log, register, compare). After each round the baseline runs
in the same process (the function above: Parquet read, split, fit + predict of both estimators) and
as a fresh Python (interpreter start and imports included, as a plain script would).

    uv run python bench/bench_train.py [--rounds 5] [--e2e-runs 3 | --no-e2e]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import free_port, python
from bench_pipelines import Stack, state_history, ts

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CANDIDATES = ["rf", "gb"]
E2E_GOAL = 60.0  # seconds from submit to a registered champion (the goal)
PROJECT = "bench"
DATASET = "cancer"
POLL = 0.25  # seconds between polls of the registered model


def baseline(path: Path) -> dict[str, float]:
    import pandas as pd
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    t = time.perf_counter()
    frame = pd.read_parquet(path)
    load = time.perf_counter() - t
    t = time.perf_counter()
    X, y = frame.drop(columns=["target"]), frame["target"]
    X_train, X_held, y_train, y_held = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    prepare = time.perf_counter() - t
    t = time.perf_counter()
    for model in (
        RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1),
        GradientBoostingClassifier(n_estimators=100, random_state=0),
    ):
        model.fit(X_train, y_train)
        f1_score(y_held, model.predict(X_held))
    fit = time.perf_counter() - t
    return {"load": load, "prepare": prepare, "fit": fit, "total": load + prepare + fit}


def platform(path: Path) -> dict[str, float]:
    import pandas as pd

    from selfserve.ml import training

    t = time.perf_counter()
    frame = pd.read_parquet(path)
    load = time.perf_counter() - t
    request = {"dataset": "cancer", "target": "target", "task": "classification", "model": "clf"}
    with contextlib.redirect_stderr(io.StringIO()):  # MLflow's "Created version N" notices
        result = training.train(frame, {**request, "candidates": CANDIDATES}, project="bench", dataset_version=0)
    phases = {"load": load, **result["timings"]}
    phases["total"] = sum(phases.values())
    return phases


# -- end to end: submit to champion through a fresh platform -------------------------------------------

# A round's markers in time order (seconds after its submit), each segment ending at one of them: (group
# of the split, what it covers, the marker it ends at). A segment starts at the last marker
# before it that was seen, so the segments of a round always add up to its total.
SEGMENTS = [
    ("process start", "API: the flow run is created (SCHEDULED)", "scheduled"),
    ("process start", "worker poll: SCHEDULED -> PENDING", "pending"),
    ("process start", "worker starts the launcher; its imports and `start` call to the API", "launcher"),
    ("process start", "launcher: code unpacked; engine: Python, Prefect, flow import -> RUNNING", "running"),
    ("data load", "flow start: pandas + training imports, the version resolved (1st line)", "resolved"),
    ("data load", "the version read through the platform", "loaded"),
    ("training", "prepare: scikit-learn's import, checks, encoding, splits", "planned"),
    ("training", "fit 2 candidates as Prefect tasks (one core)", "fitted"),
    ("logging", "finish set-up: MLflow's import, a platform client", "finish"),
    ("training", "refit the winner, score the held-out rows", "refit_end"),
    ("logging", "log to MLflow (3 runs, the input, the model)", "log_end"),
    ("registry", "register a version, alias challenger", "register_end"),
    ("registry", "compare with the champion, promote through the platform", "compare_end"),
    ("logging", "end of the MLflow run (final metrics, tags), last line", "compared"),
    ("registry", "champion seen by the 0.25 s poll (< 0: before the flow's last line)", "champion"),
]
GROUPS = ["process start", "data load", "training", "logging", "registry"]
RUN_FINAL = {"completed", "failed", "crashed", "cancelled"}
POLL_ERRORS: list[str] = []  # polls the API failed to answer (retried)


def write_dataset(path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    load_breast_cancer(as_frame=True).frame.to_parquet(path, index=False)


@contextlib.contextmanager
def environ(extra: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` (the stack's settings, for the Prefect admin client), restored after."""
    saved = os.environ.copy()
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def fresh_baseline(path: Path) -> float:
    """Wall time of the baseline as a plain script: a fresh Python, its imports, the same work."""
    code = f"import time\nfrom pathlib import Path\n{inspect.getsource(baseline)}\nbaseline(Path({str(path)!r}))\n"
    t = time.perf_counter()
    subprocess.run([python(), "-c", code], check=True)
    return time.perf_counter() - t


def flow_marks(lines: list[Any], t_submit: float) -> dict[str, float]:
    """The flow's own markers, from its log lines (flows/train.py, selfserve.ml.training)."""
    marks: dict[str, float] = {}
    for line in lines:
        t, m = ts(line.time) - t_submit, line.message
        if m.startswith("dataset ") and ": version " in m:
            marks.setdefault("resolved", t)
        elif m.startswith("read ") and " rows x " in m:
            marks.setdefault("loaded", t)
        elif m.startswith("candidates "):
            marks.setdefault("planned", t)
        elif any(m.startswith(f"{c}: validation ") for c in CANDIDATES):
            marks["fitted"] = max(marks.get("fitted", t), t)
        elif m.startswith("winner "):
            marks.setdefault("refitted", t)
        elif m.startswith(("promoted: ", "not promoted: ")):
            marks.setdefault("compared", t)
    return marks


def wait_champion(client: Any, model: str, run_id: str, timeout: float = 900) -> float:
    """Poll the registered model every POLL s until it has a champion; the wall time it was seen."""
    from selfserve.errors import NotFound, ServiceUnavailable

    deadline = time.monotonic() + timeout
    checked = time.monotonic()
    while True:
        champion = None
        try:
            champion = client.models.get(PROJECT, model, versions=1).champion
        except NotFound:
            pass
        except ServiceUnavailable as e:
            POLL_ERRORS.append(str(e))
        if champion is not None:
            return time.time()
        if time.monotonic() - checked >= 2:  # the run itself, now and then: a failed run never promotes
            checked = time.monotonic()
            run = client.runs.get(PROJECT, run_id)
            if run.state in RUN_FINAL:
                with contextlib.suppress(NotFound):
                    if client.models.get(PROJECT, model, versions=1).champion is not None:
                        return time.time()
                tail = [x.message[:300] for x in client.runs.logs(PROJECT, run_id).lines[-15:]]
                raise RuntimeError(f"run {run_id} is {run.state} ({run.message}) and {model} has no champion: {tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{model} has no champion {timeout} s after the submit of run {run_id}")
        time.sleep(POLL)


def result_of(client: Any, run_id: str, timeout: float = 60) -> tuple[dict[str, Any], list[Any]]:
    """The run's result line (it may reach the engine shortly after the run's end) and its log lines."""
    from selfserve.cli.train import find_result

    deadline = time.monotonic() + timeout
    while True:
        lines = client.runs.logs(PROJECT, run_id, limit=200).lines
        found = find_result(lines)
        if found is not None:
            return found, lines
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} logged no result: {[x.message[:200] for x in lines[-15:]]}")
        time.sleep(0.5)


def segments(marks: dict[str, float]) -> dict[str, float]:
    """Each segment's length (absent when its end marker was not seen: the next one absorbs it)."""
    out: dict[str, float] = {}
    last = marks["submit"]
    for _, what, end in SEGMENTS:
        if end in marks:
            out[what] = marks[end] - last
            last = marks[end]
    return out


def e2e_round(client: Any, admin: Any, stack: Stack, i: int) -> dict[str, Any]:
    """Deploy ``train`` for a new model, submit it, wait for its champion; the round's markers."""
    model, name = f"clf{i}", f"train-clf{i}"
    request = {"dataset": DATASET, "target": "target", "task": "classification", "model": model}
    client.flows.deploy_builtin(PROJECT, "train", name, {**request, "candidates": CANDIDATES})
    t_submit = time.time()
    run_id = client.flows.run(PROJECT, name).id
    t_champion = wait_champion(client, model, run_id)
    done = client.runs.wait(PROJECT, run_id, timeout=300, poll=0.5)
    if done.state != "completed":
        raise RuntimeError(f"run {run_id} ended {done.state}: {done.message}")
    result, lines = result_of(client, run_id)
    states = state_history(admin, run_id)
    marks: dict[str, float] = {"submit": 0.0, "champion": t_champion - t_submit}
    for key, state in (("scheduled", "SCHEDULED"), ("pending", "PENDING"), ("running", "RUNNING")):
        if state in states:
            marks[key] = states[state] - t_submit
    launcher = stack.launcher_started(run_id)
    if launcher is not None:
        marks["launcher"] = launcher - t_submit
    marks.update(flow_marks(lines, t_submit))
    timings = result["timings"]
    if "refitted" in marks:  # finish's phases, from its own timings, end to end from the refit's start
        marks["finish"] = t = marks["refitted"] - timings["refit"]
        for phase in ("refit", "log", "register", "compare"):
            t += timings[phase]
            marks[f"{phase}_end"] = t
    return {
        "marks": marks,
        "total": marks["champion"],
        "completed": ts(done.end_time) - t_submit if done.end_time else float("nan"),
        "result": result,
        "run_id": run_id,
    }


def end_to_end(runs: int, data: Path, tmp: Path) -> dict[str, Any]:
    """Start a fresh platform, take ``runs`` rounds (each followed by the baselines), stop the platform."""
    stack = Stack(tmp)
    stack.env["SELFSERVE_MODELS__ENABLED"] = "true"
    stack.env["SELFSERVE_MODELS__MLFLOW_PORT"] = str(free_port())
    rounds: list[dict[str, Any]] = []
    inproc: list[dict[str, float]] = []
    fresh: list[float] = []
    load_before = os.getloadavg()
    with contextlib.ExitStack() as cleanup:
        previous = signal.getsignal(signal.SIGINT)
        cleanup.callback(signal.signal, signal.SIGINT, previous)  # runs last
        cleanup.enter_context(stack.running())  # exits with `selfserve down`, on errors and Ctrl-C too
        # Runs first: a second Ctrl-C must not cut `selfserve down` short.
        cleanup.callback(signal.signal, signal.SIGINT, signal.SIG_IGN)
        cleanup.callback(print, "stopping the platform (selfserve down)", flush=True)
        from selfserve import Client
        from selfserve.pipelines.prefect import Prefect
        from selfserve.settings import get_settings

        cleanup.callback(get_settings.cache_clear)  # after the environment is restored
        cleanup.enter_context(environ(stack.env))
        get_settings.cache_clear()
        settings = get_settings()
        admin = Prefect.from_settings(settings)
        cleanup.callback(admin.close)
        client = Client(url=settings.api_url, token="")
        cleanup.callback(client.close)
        client.login("admin", stack.admin_password, save=False)
        client.projects.create(PROJECT)
        client.datasets.upload(PROJECT, DATASET, data)
        for i in range(1, runs + 1):
            r = e2e_round(client, admin, stack, i)
            rounds.append(r)
            inproc.append(baseline(data))
            fresh.append(fresh_baseline(data))
            res = r["result"]
            print(
                f"round {i}/{runs}: champion after {r['total']:.2f} s "
                f"(RUNNING at {r['marks'].get('running', float('nan')):.2f} s, "
                f"run COMPLETED at {r['completed']:.2f} s; version {res['version']} {res['candidate']}, "
                f"held-out {res['metric']} {res['value']:.4f}); baseline {inproc[-1]['total']:.2f} s in-process, "
                f"{fresh[-1]:.2f} s as a fresh Python",
                flush=True,
            )
    return {
        "rounds": rounds,
        "baseline": inproc,
        "fresh": fresh,
        "load": (load_before[0], os.getloadavg()[0]),
    }


def report_e2e(e2e: dict[str, Any]) -> None:
    rounds = e2e["rounds"]
    n = len(rounds)

    def row(label: str, values: list[float]) -> str:
        if not values:
            return f"| {label} | (not seen) | | |"
        return f"| {label} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"

    split = [segments(r["marks"]) for r in rounds]
    totals = [r["total"] for r in rounds]
    base = [b["total"] for b in e2e["baseline"]]
    fresh = e2e["fresh"]
    print(
        f"\n## End to end: `train` on breast_cancer, candidates {' + '.join(CANDIDATES)}, submit to champion\n\n"
        f"{n} round(s) on a fresh `selfserve up --no-demo`, each a new model (its first champion); seconds.\n"
    )
    print("| segment | median | min | max |")
    print("|---|---:|---:|---:|")
    for group in GROUPS:
        print(row(f"**{group}**", [sum(s[w] for g, w, _ in SEGMENTS if g == group and w in s) for s in split]))
        for g, what, _ in SEGMENTS:
            if g == group:
                print(row(f"&nbsp;&nbsp;{what}", [s[what] for s in split if what in s]))
    print(row("**total: submit -> champion seen**", totals))
    print(row("(the run's COMPLETED, Prefect's end_time, after submit)", [r["completed"] for r in rounds]))
    print(row("baseline in-process: Parquet read, split, fit + predict of both", base))
    print(row("baseline as a plain script: a fresh Python, its imports, the same", fresh))

    total = statistics.median(totals)
    goal = "met" if total <= E2E_GOAL else "not met"
    print(
        f"\n- total **{total:.2f} s** (median; max {max(totals):.2f} s): goal <= {E2E_GOAL:g} s {goal}"
        f"\n- vs the in-process baseline ({statistics.median(base):.2f} s): **{total / statistics.median(base):.1f}x**;"
        f" vs the plain script ({statistics.median(fresh):.2f} s): **{total / statistics.median(fresh):.1f}x**"
    )
    print("- per round, total: " + ", ".join(f"{t:.2f}" for t in totals))
    timings = [r["result"]["timings"] for r in rounds]
    print(
        "- the flow's own timings (result line), per round: "
        + "; ".join(", ".join(f"{k} {v:.2f}" for k, v in t.items()) for t in timings)
    )
    print(
        f"- load average (1 min) before / after: {e2e['load'][0]:.1f} / {e2e['load'][1]:.1f} on {os.cpu_count()} cores"
    )
    if POLL_ERRORS:
        print(f"- polls that failed (and were retried): {len(POLL_ERRORS)}; first: {POLL_ERRORS[0]}")


def in_process(args: argparse.Namespace, work: Path, path: Path) -> None:
    """The library against the baseline in this process (the part above the end-to-end one)."""
    os.chdir(work)  # MLflow's local artifact root is ./mlruns
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    logging.disable(logging.WARNING)  # MLflow's notices about pip and new experiments
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(REPO / "platform"))

    t = time.perf_counter()
    cold = platform(path)
    cold_wall = time.perf_counter() - t
    runs: dict[str, list[dict[str, float]]] = {"platform": [], "baseline": []}
    for i in range(args.rounds):
        order = ("platform", "baseline") if i % 2 == 0 else ("baseline", "platform")
        for which in order:
            runs[which].append(platform(path) if which == "platform" else baseline(path))

    def med(which: str, key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in runs[which])

    print(
        "\n## In-process: the training library vs plain scikit-learn\n\n"
        f"{args.rounds} rounds after a cold one; medians (seconds).\n"
    )
    print("| phase | platform | baseline |")
    print("|---|---:|---:|")
    rows: list[tuple[str, Any, Any]] = [
        ("load (Parquet read)", med("platform", "load"), med("baseline", "load")),
        ("prepare (checks, encoding, splits)", med("platform", "prepare"), med("baseline", "prepare")),
        ("fit 2 candidates (+ predict)", med("platform", "fit"), med("baseline", "fit")),
        ("refit the winner, score held-out rows", med("platform", "refit"), "-"),
        ("log to MLflow (3 runs, input, model)", med("platform", "log"), "-"),
        ("register + alias", med("platform", "register"), "-"),
        ("compare with the champion (+ promote)", med("platform", "compare"), "-"),
        ("**total**", med("platform", "total"), med("baseline", "total")),
    ]
    for name, a, b in rows:
        print(f"| {name} | {a:.3f} | {b if isinstance(b, str) else f'{b:.3f}'} |")
    fit_ratio = med("platform", "fit") / med("baseline", "fit")
    train_ratio = (med("platform", "fit") + med("platform", "refit")) / med("baseline", "fit")
    total_ratio = med("platform", "total") / med("baseline", "total")
    print()
    print(f"- fitting the candidates: **{fit_ratio:.2f}x** the baseline's fit + predict")
    print(f"- fitting with the winner's refit: **{train_ratio:.2f}x**")
    print(f"- everything (with MLflow logging and the registry): **{total_ratio:.2f}x**")
    print(
        f"- first (cold) round: {cold_wall:.2f} s wall, of which log {cold['log']:.2f} s "
        "(MLflow's imports and the store's first use)"
    )
    per_round = ", ".join(f"{r['total']:.2f}" for r in runs["platform"])
    print(
        f"\nper round (seconds, total): platform {per_round}; baseline "
        + ", ".join(f"{r['total']:.2f}" for r in runs["baseline"])
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5, help="in-process rounds after the first (cold) one")
    ap.add_argument("--e2e-runs", type=int, default=3, help="end-to-end rounds through a fresh platform")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end part (no platform started)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    path = work / "cancer.parquet"
    write_dataset(path)
    print(f"`{' '.join(['uv run python', 'bench/bench_train.py', *sys.argv[1:]])}`\n", flush=True)
    e2e = None
    if not args.no_e2e and args.e2e_runs > 0:
        stack_dir = work / "stack"
        stack_dir.mkdir()
        try:
            e2e = end_to_end(args.e2e_runs, path, stack_dir)
        except BaseException:
            print(f"failed; the services' logs are kept in {stack_dir / 'home' / 'logs'}", flush=True)
            raise
        shutil.rmtree(stack_dir, ignore_errors=True)
    in_process(args, work, path)
    if e2e is not None:
        report_e2e(e2e)


if __name__ == "__main__":
    main()
