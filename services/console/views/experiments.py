"""The selected project's experiments (MLflow): an experiment's runs, sorted by a metric, and chosen runs compared
side by side, their metrics in a chart and their parameters in a table."""

from __future__ import annotations

import altair as alt
import console_state as state
import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler

from selfserve.schemas.models import ExperimentRun, RunComparison

client = state.require_client()
name = state.require_project()

WHEN = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")
LIMIT = 200  # runs shown; the SDK's ``client.experiments.runs`` reads up to 1000
COMPARED = 3  # runs compared at first: the top ones in the table's order
NEWEST = "Newest first"
# MLflow's run statuses: green done, red broken, blue under way, grey stopped or not yet started.
COLORS = {"finished": "green", "failed": "red", "running": "blue", "scheduled": "gray", "killed": "gray"}
CSS_COLORS = {"green": "#15803d", "red": "#b91c1c", "blue": "#1d4ed8", "gray": "#6b7280"}
DIFFERS = "background-color: rgba(255, 189, 69, 0.25)"


def tint(value: object) -> str:
    color = COLORS.get(str(value))
    return f"color: {CSS_COLORS[color]}" if color else ""


def labels(runs: list[ExperimentRun]) -> dict[str, str]:
    """Run id -> a name for people: the run's name, with its id's start where two runs share a name."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.name] = counts.get(r.name, 0) + 1
    return {r.id: r.name if counts[r.name] == 1 else f"{r.name} ({r.id[:7]})" for r in runs}


def key_params(runs: list[ExperimentRun]) -> list[str]:
    """The parameters that tell the runs apart (those whose value is not the same in every run), or all of them
    when none does."""
    names = sorted({k for r in runs for k in r.params})
    differing = [k for k in names if len({r.params.get(k) for r in runs}) > 1]
    return differing or names


def metric_chart(runs: list[ExperimentRun], named: dict[str, str], metrics: list[str]) -> alt.Chart:
    """One group of bars per metric, one bar per run."""
    data = pd.DataFrame(
        [{"run": named[r.id], "metric": m, "value": r.metrics[m]} for r in runs for m in metrics if m in r.metrics]
    )
    order = [named[r.id] for r in runs]
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("metric:N", title=None, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("run:N", sort=order),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("run:N", sort=order, title="Run"),
            tooltip=["run:N", "metric:N", alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(height=280)
    )


def params_table(cmp: RunComparison, named: dict[str, str]) -> Styler:
    """Parameter by run; the rows whose value is not the same in every run are marked."""
    table = pd.DataFrame(
        {named[r.id]: [r.params.get(p, "") for p in cmp.params] for r in cmp.runs},
        index=pd.Index(cmp.params, name="Parameter"),
    )
    differing = set(cmp.differing_params)
    return table.style.apply(lambda row: [DIFFERS if row.name in differing else ""] * len(row), axis=1)


st.title(":material/science: Experiments")
st.caption(f"MLflow experiments of **{name}**: their runs, and runs compared side by side.")

experiments = state.load_service(
    "Experiments are not available on this platform right now, so there are no runs to show.",
    client.experiments.list,
    name,
)
if not experiments:
    st.info(
        f'No experiments yet. Point the `mlflow` client at this project with `eval "$(selfserve mlflow env {name})"`'
        f" and log runs into an experiment named `{name}/<name>`, or train with `selfserve train`.",
        icon=":material/science:",
    )
    st.stop()

by_name = {e.name: e for e in experiments}
experiment_col, sort_col, order_col = st.columns([3, 2, 1], vertical_alignment="bottom")
experiment = experiment_col.selectbox("Experiment", list(by_name), key="experiments_experiment")
about = by_name[experiment]
last = f" · the newest started {about.last_run_at:%Y-%m-%d %H:%M}" if about.last_run_at else ""
st.caption(f"`{about.mlflow_name}` in MLflow · {about.runs} run{'' if about.runs == 1 else 's'}{last}")
newest = state.load(client.experiments.runs, name, experiment, limit=LIMIT)
if not newest:
    st.caption(f"No runs in **{experiment}** yet.")
    st.stop()

metrics = sorted({k for r in newest for k in r.metrics})
if st.session_state.get("experiments_sort") not in (NEWEST, *metrics):
    st.session_state["experiments_sort"] = NEWEST  # e.g. a metric of the experiment chosen before
sort = sort_col.selectbox("Sort by", [NEWEST, *metrics], key="experiments_sort")
highest = order_col.toggle("Highest first", value=True, key="experiments_desc", disabled=sort == NEWEST)
if sort == NEWEST:
    runs = newest
else:
    runs = state.load(client.experiments.runs, name, experiment, sort=sort, desc=highest, limit=LIMIT)

# -- runs -------------------------------------------------------------------------------------------

named = labels(runs)
shown = key_params(runs)
st.dataframe(
    pd.DataFrame(
        [
            {
                "Run": named[r.id],
                "Status": r.status,
                "Start": r.start_time,
                "Duration": state.duration(r.duration_seconds),
                "Key params": ", ".join(f"{k}={r.params[k]}" for k in shown if k in r.params),
                **{m: r.metrics.get(m) for m in metrics},
                "Datasets": ", ".join(d.name + (f"@{d.version}" if d.version else "") for d in r.datasets),
                "Registered as": ", ".join(f"{v.model} v{v.version}" for v in r.model_versions),
                "By": r.user or "",
            }
            for r in runs
        ]
    ).style.map(tint, subset=["Status"]),
    hide_index=True,
    column_config={
        "Start": WHEN,
        "Key params": st.column_config.TextColumn(
            "Key params", width="medium", help="The parameters whose value is not the same in every run."
        ),
        **{m: st.column_config.NumberColumn(m, format="%.4g") for m in metrics},
    },
)
if len(runs) == LIMIT:
    st.caption(f"The first {LIMIT} runs in this order; `client.experiments.runs` reads more.")

# -- comparison -------------------------------------------------------------------------------------

st.subheader("Compare runs")
if len(runs) < 2:
    st.caption("An experiment needs two runs to compare.")
    st.stop()
by_id = {r.id: r for r in runs}
chosen_key = f"experiments_compare_{experiment}"
kept = [i for i in st.session_state.get(chosen_key, list(by_id)[:COMPARED]) if i in by_id]
st.session_state[chosen_key] = kept  # the runs chosen before that are still listed
chosen = st.multiselect(
    "Runs",
    list(by_id),
    key=chosen_key,
    format_func=lambda i: named[i],
    max_selections=10,
    placeholder="Choose two to ten runs",
)
if len(chosen) < 2:
    st.caption("Choose two to ten runs to compare them.")
    st.stop()

compared = state.load(client.experiments.compare, name, chosen)
metrics_col, params_col = st.columns(2)
with metrics_col:
    st.markdown("**Metrics**")
    if compared.metrics:
        st.altair_chart(metric_chart(compared.runs, named, compared.metrics), width="stretch")
    else:
        st.caption("None of these runs logged a metric.")
with params_col:
    st.markdown("**Parameters**")
    if compared.params:
        st.dataframe(params_table(compared, named))
        if compared.differing_params:
            n = len(compared.differing_params)
            st.caption(f"Marked: the {n} that differ{'s' if n == 1 else ''}.")
        else:
            st.caption("Every parameter is the same in these runs.")
    else:
        st.caption("None of these runs logged a parameter.")
