"""The selected project's pipelines: its flow deployments, their recent runs, and each run's logs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import console_state as state
import pandas as pd
import streamlit as st

from selfserve.schemas.pipelines import RunPublic, Schedule

client = state.require_client()
me = state.user()
name = state.require_project()

WHEN = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")
FINAL = ("completed", "failed", "crashed", "cancelled")
STATES = (
    "scheduled",
    "waiting",
    "pending",
    "running",
    "paused",
    "completed",
    "failed",
    "crashed",
    "cancelling",
    "cancelled",
)
# Badge colours: green done, red broken, blue under way, orange held up, grey stopped or not yet started.
COLORS = {
    "completed": "green",
    "failed": "red",
    "crashed": "red",
    "pending": "blue",
    "running": "blue",
    "waiting": "orange",
    "cancelling": "orange",
    "paused": "orange",
    "scheduled": "gray",
    "cancelled": "gray",
}
CSS_COLORS = {"green": "#15803d", "red": "#b91c1c", "blue": "#1d4ed8", "orange": "#c2410c", "gray": "#6b7280"}
POLL_SECONDS = 4  # how often the panel of a run under way asks for news
LOG_LINES = 200  # the API's page size


def span(seconds: float) -> str:
    """``3600`` -> ``"1h"``, ``90`` -> ``"90s"``: in the largest unit that divides it."""
    for suffix, unit in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= unit and seconds % unit == 0:
            return f"{int(seconds // unit)}{suffix}"
    return f"{seconds:g}s"


def schedule(s: Schedule | None) -> str:
    if s is None:
        return "on demand"
    if s.cron is not None:
        return f"cron {s.cron} ({s.timezone})"
    return f"every {span(s.interval_seconds or 0)}"


def memory(n: int | None) -> str:
    return "" if n is None else state.amount(n, "bytes")


def message(r: RunPublic) -> str:
    """The state's message, and the platform's note on the run when it says something else."""
    return " · ".join(dict.fromkeys(m for m in (r.message, r.note) if m))


def upcoming(r: RunPublic, within: timedelta = timedelta(0)) -> bool:
    """Whether the run is only planned, to start later than ``within`` from now (by its schedule)."""
    due = datetime.now(UTC) + within
    return r.state == "scheduled" and r.expected_start_time is not None and r.expected_start_time > due


def moving(r: RunPublic) -> bool:
    """Whether the run may change state any moment now (so the page keeps itself fresh)."""
    if r.state in ("pending", "running", "waiting", "cancelling"):
        return True
    return r.state == "scheduled" and not upcoming(r, within=timedelta(minutes=1))


def badge(text: str) -> str:
    return f":{COLORS.get(text, 'gray')}-badge[{text}]"


def tint(value: object) -> str:
    color = COLORS.get(str(value))
    return f"color: {CSS_COLORS[color]}" if color else ""


st.title(":material/account_tree: Pipelines")
st.caption(f"Flow deployments of **{name}**, their runs and the runs' logs.")

project = state.load(client.projects.get, name)
actions = {r.name: set(r.actions) for r in state.load(client.roles)}.get(project.role or "", set())
admin = me is not None and me.is_admin
may_run = admin or "flow:run" in actions
may_write = admin or "flow:write" in actions


limit = int(st.session_state.get("pipelines_limit", 50))
recent = state.load_service(
    "Pipelines are not available on this platform right now, so there are no flows to show or run.",
    client.runs.list,
    name,
    limit=limit,
)
deployments = state.load(client.flows.list, name)

# -- deployments ------------------------------------------------------------------------------------

st.subheader("Deployments")
if not deployments:
    st.info(
        "No flows are deployed yet. Deploy one with the SDK: `client.flows.deploy(project, 'etl.py', 'etl', "
        "name='nightly')` for your own code, or `client.flows.deploy_builtin` for ingest and transform.",
        icon=":material/account_tree:",
    )
else:
    last: dict[str, str] = {}
    following: dict[str, datetime | None] = {}
    for r in recent:  # the latest (expected) start first
        if r.deployment is None:
            continue
        if upcoming(r):
            following[r.deployment] = r.expected_start_time
        else:
            last.setdefault(r.deployment, r.state)
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "Deployment": d.name,
                    "Kind": d.kind,
                    "Flow": d.flow_name,
                    "Entrypoint": d.entrypoint,
                    "Schedule": schedule(d.schedule),
                    "Paused": d.paused,
                    "Last run": last.get(d.name, ""),
                    "Next run": None if d.paused else following.get(d.name),
                    "Retries": d.retries,
                    "Timeout": span(d.timeout_seconds) if d.timeout_seconds else "",
                    "By": d.created_by,
                    "Updated": d.updated_at,
                    "Description": d.description,
                }
                for d in deployments
            ]
        ).style.map(tint, subset=["Last run"]),
        hide_index=True,
        column_config={"Next run": WHEN, "Updated": WHEN},
    )
    if not (may_run or may_write):
        st.caption(f":material/lock: Your role in **{name}** may look at its flows, not run or change them.")
    else:
        by_name = {d.name: d for d in deployments}
        chosen_col, run_col, pause_col, _ = st.columns([3, 1, 1, 2], vertical_alignment="bottom")
        chosen = chosen_col.selectbox("Deployment", list(by_name), key="pipelines_deployment")
        dep = by_name[chosen]
        if may_run and run_col.button(
            "Run now", type="primary", icon=":material/play_arrow:", key="pipelines_run_now", width="stretch"
        ):
            started = state.call(client.flows.run, name, dep.name)
            if started is not None:
                st.session_state["pipelines_run"] = started.id
                state.flash(f"Started run {started.name} of {dep.name}.")
        if may_write:
            if dep.paused:
                label, icon, act, done = "Resume", ":material/resume:", client.flows.resume, "resumed"
            else:
                label, icon, act, done = "Pause", ":material/pause:", client.flows.pause, "paused"
            if pause_col.button(
                label, icon=icon, key="pipelines_pause", width="stretch", help="Pausing stops scheduled runs only."
            ):
                changed = state.call(act, name, dep.name)
                if changed is not None:
                    state.flash(f"{changed.name} is {done}.")

# -- runs -------------------------------------------------------------------------------------------

st.subheader("Runs")
flow_col, state_col, limit_col, refresh_col = st.columns([3, 3, 2, 1], vertical_alignment="bottom")
refresh_col.button("Refresh", icon=":material/refresh:", key="pipelines_refresh", width="stretch")
flow = flow_col.selectbox("Flow", ["Any", *(d.name for d in deployments)], key="pipelines_flow")
wanted = state_col.selectbox("State", ["Any", *STATES], key="pipelines_state")
limit_col.number_input("At most", min_value=10, max_value=500, value=50, step=10, key="pipelines_limit")
if flow == "Any" and wanted == "Any":
    runs = recent
else:
    runs = state.load_service(
        "Pipelines are not available on this platform right now.",
        client.runs.list,
        name,
        flow=None if flow == "Any" else flow,
        state=None if wanted == "Any" else wanted,
        limit=limit,
    )
if not runs:
    st.caption("No runs match these filters." if recent else "No runs yet.")
    st.stop()

st.dataframe(
    pd.DataFrame(
        [
            {
                "Run": r.name,
                "Deployment": r.deployment or "",
                "State": r.state,
                "Start": r.start_time or r.expected_start_time,
                "Duration": state.duration(r.duration_seconds),
                "CPU-seconds": round(r.cpu_seconds, 2) if r.cpu_seconds is not None else None,
                "Peak memory": memory(r.max_rss_bytes),
                "Message": message(r),
            }
            for r in runs
        ]
    ).style.map(tint, subset=["State"]),
    hide_index=True,
    column_config={
        "Start": st.column_config.DatetimeColumn(
            "Start", format="YYYY-MM-DD HH:mm:ss", help="When the run started, or is planned to."
        ),
        "CPU-seconds": st.column_config.NumberColumn("CPU-seconds", format="%.2f"),
        "Message": st.column_config.TextColumn("Message", width="large"),
    },
)
if len(runs) == limit:
    st.caption(f"Showing the newest {limit} runs; raise “At most” to see older ones.")

by_id = {r.id: r for r in runs}
if st.session_state.get("pipelines_run") not in by_id:  # first the latest run that is more than a plan
    st.session_state["pipelines_run"] = next((r.id for r in runs if not upcoming(r)), runs[0].id)
chosen_run = st.selectbox(
    "Run",
    list(by_id),
    key="pipelines_run",
    # Only what never changes: a label that changed under the open page would not be redrawn.
    format_func=lambda i: f"{by_id[i].name} · {by_id[i].deployment or '-'} · {by_id[i].created_at:%Y-%m-%d %H:%M}",
)


def run_panel(seen: RunPublic) -> None:
    """The selected run: state, usage, message and logs.

    While the run is under way the panel alone asks for news every few seconds (redrawing the tables that often
    is slow and makes them flicker); once the run has ended the whole page is drawn again, tables included.
    """
    logs = state.call(client.runs.logs, name, seen.id, limit=LOG_LINES)
    run = logs.run if logs is not None else seen
    if moving(seen) and not moving(run):
        st.rerun()
    with st.container(border=True):
        about, action = st.columns([5, 1], vertical_alignment="center")
        about.markdown(f"**{run.name}** of **{run.deployment or '-'}** {badge(run.state)}")
        about.caption(f"Run {run.id} · {run.state_name}" + (f" · attempt {run.run_count}" if run.run_count > 1 else ""))
        cancellable = may_run and run.state not in (*FINAL, "cancelling")
        if cancellable and action.button(
            "Cancel run", icon=":material/stop_circle:", key="pipelines_cancel", width="stretch"
        ):
            cancelled = state.call(client.runs.cancel, name, run.id)
            if cancelled is not None:
                state.flash(f"Run {cancelled.name} is {cancelled.state}.")
        started_col, took_col, cpu_col, mem_col = st.columns(4)
        started_col.metric(
            "Started",
            f"{run.start_time:%H:%M:%S}" if run.start_time else "-",
            help=f"{run.start_time:%Y-%m-%d %H:%M:%S %Z}" if run.start_time else None,
            border=True,
        )
        took_col.metric("Duration", state.duration(run.duration_seconds) or "-", border=True)
        cpu_col.metric("CPU-seconds", f"{run.cpu_seconds:.2f}" if run.cpu_seconds is not None else "-", border=True)
        mem_col.metric(
            "Peak memory",
            memory(run.max_rss_bytes) or "-",
            help=f"Limit: {memory(run.memory_limit_bytes)}" if run.memory_limit_bytes else None,
            border=True,
        )
        if message(run) and run.state in ("failed", "crashed"):
            st.error(message(run), icon=":material/error:")
        elif message(run):
            st.caption(message(run))
        if run.parameters:
            st.caption("Parameters: " + ", ".join(f"`{k}={v!r}`" for k, v in run.parameters.items()))
        if logs is not None and logs.lines:
            st.code(
                "\n".join(f"{line.time:%H:%M:%S} {line.level:<8} {line.message}" for line in logs.lines),
                language=None,
                line_numbers=False,
            )
            if len(logs.lines) == LOG_LINES:
                st.caption(f"The first {LOG_LINES} log lines; the SDK's `client.runs.follow` reads them all.")
        elif logs is not None:
            st.caption("No log lines yet.")


selected = by_id[chosen_run]
st.fragment(run_panel, run_every=POLL_SECONDS if moving(selected) else None)(selected)
