"""The selected project's monitoring: its routes' monitors, each one's drift over time against its threshold, what
the chosen run found per column with its full report, and the alerts the monitors raised (run and acknowledged here
by the roles that may)."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import altair as alt
import console_state as state
import pandas as pd
import streamlit as st

from selfserve.schemas.monitoring import AlertPublic, MonitorPublic, MonitorRunPublic

client = state.require_client()
me = state.user()
name = state.require_project()

WHEN = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")
PERCENT = "percent"
# How a run's status reads: a window without traffic is not "no drift".
STATUS = {"ok": "ok", "drift": "drift", "no_data": "no data in window", "error": "error"}
# Badge colours: green nothing drifted, red over the threshold, grey nothing to compare, orange the run failed.
COLORS = {"ok": "green", "drift": "red", "no_data": "gray", "error": "orange"}
CSS_COLORS = {"green": "#15803d", "red": "#b91c1c", "orange": "#c2410c", "gray": "#6b7280", "blue": "#1d4ed8"}
RUNS = 200  # how many of the newest runs the drift chart draws
ALERTS = 100
MAX_BARS = 40  # columns in the per-column chart, drifted ones first
REPORT_HEIGHT = 900
REPORT = "monitoring_report"  # session key: the report shown last, as ((project, route, run), html)
MARKDOWN_SPECIALS = "\\`*_{}[]()#+-.!|~:$<>"


def span(seconds: float) -> str:
    """``3600`` -> ``"1h"``, ``5400`` -> ``"90m"``: in the largest unit that divides it."""
    for suffix, unit in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= unit and seconds % unit == 0:
            return f"{int(seconds // unit)}{suffix}"
    return f"{seconds:g}s"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def plain(text: str) -> str:
    """``text`` as it is, in Markdown: column names and messages come from data."""
    return "".join(f"\\{c}" if c in MARKDOWN_SPECIALS else c for c in text)


def status_text(status: str) -> str:
    return STATUS.get(status, status)


def badge(status: str) -> str:
    return f":{COLORS.get(status, 'gray')}-badge[{status_text(status)}]"


def tint(value: object) -> str:
    by_text = {text: COLORS[s] for s, text in STATUS.items()}
    color = by_text.get(str(value))
    return f"color: {CSS_COLORS[color]}" if color else ""


def drifted(run: MonitorRunPublic) -> list[str]:
    return sorted(c for c, v in run.columns.items() if isinstance(v, dict) and v.get("drifted"))


def drifted_text(run: MonitorRunPublic) -> str:
    if not run.columns:
        return ""
    return f"{len(drifted(run))} of {len(run.columns)}"


def reference(mon: MonitorPublic) -> str:
    return f"{mon.reference_dataset}@{mon.reference_version}"


# -- charts -----------------------------------------------------------------------------------------


def drift_chart(runs: list[MonitorRunPublic], threshold: float) -> alt.LayerChart:
    """The share of drifted columns per run over time, a point per run coloured by its status, and the monitor's
    threshold as a dashed rule. Runs that measured nothing (no data, errors) are dotted vertical rules, not zeros."""
    data = pd.DataFrame(
        [
            {
                "when": pd.Timestamp(r.created_at),
                "run": r.id,
                "status": status_text(r.status),
                "drift_share": r.drift_share,
                "drifted": drifted_text(r),
                "rows": r.rows_current,
            }
            for r in runs
        ]
    )
    measured = data[data["drift_share"].notna()]
    unmeasured = data[data["drift_share"].isna()]
    statuses = list(STATUS.values())
    scale = alt.Scale(domain=statuses, range=[CSS_COLORS[COLORS[s]] for s in STATUS])
    color = alt.Color("status:N", scale=scale, title="Run")
    x = alt.X("when:T", title=None)
    about = [
        alt.Tooltip("when:T", title="Run at", format="%Y-%m-%d %H:%M"),
        alt.Tooltip("run:Q", title="Run"),
        "status:N",
    ]
    rows = alt.Tooltip("rows:Q", title="Rows in window")
    found = [
        alt.Tooltip("drift_share:Q", title="Drift share", format=".0%"),
        alt.Tooltip("drifted:N", title="Drifted columns"),
    ]
    y = alt.Y(
        "drift_share:Q", title="Share of columns drifted", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")
    )
    layers: list[alt.Chart] = []
    if not measured.empty:
        layers.append(alt.Chart(measured).mark_line(color=CSS_COLORS["blue"], opacity=0.5).encode(x=x, y=y))
        layers.append(
            alt.Chart(measured)
            .mark_point(filled=True, size=70)
            .encode(x=x, y=y, color=color, tooltip=[*about, *found, rows])
        )
    if not unmeasured.empty:
        layers.append(
            alt.Chart(unmeasured)
            .mark_rule(strokeDash=[2, 3], strokeWidth=2)
            .encode(x=x, color=color, tooltip=[*about, rows])
        )
    rule = pd.DataFrame({"threshold": [threshold], "label": [f"alert at {threshold:.0%}"]})
    layers.append(
        alt.Chart(rule)
        .mark_rule(color=CSS_COLORS["red"], strokeDash=[6, 4])
        .encode(y=alt.Y("threshold:Q", scale=alt.Scale(domain=[0, 1])), tooltip=[alt.Tooltip("label:N", title="")])
    )
    layers.append(
        alt.Chart(rule)
        .mark_text(align="left", baseline="bottom", dx=4, dy=-3, color=CSS_COLORS["red"])
        .encode(y="threshold:Q", x=alt.value(0), text="label:N")
    )
    return alt.LayerChart(layer=layers, title="Drift over time", height=260)


def _column(column: str, found: dict[str, Any]) -> dict[str, Any]:
    score = found.get("score")
    return {
        "column": column,
        "score": float(score) if isinstance(score, int | float) else None,
        "test": str(found.get("stattest") or ""),
        "drifted": "drifted" if found.get("drifted") else "not drifted",
    }


def column_chart(run: MonitorRunPublic) -> alt.Chart:
    """Each column's drift score in this run, drifted columns first and in red; the test behind it in the tooltip."""
    rows = [_column(column, v) for column, v in run.columns.items() if isinstance(v, dict)]
    rows.sort(key=lambda r: (r["drifted"] != "drifted", r["column"]))
    data = pd.DataFrame(rows[:MAX_BARS])
    scale = alt.Scale(domain=["drifted", "not drifted"], range=[CSS_COLORS["red"], CSS_COLORS["blue"]])
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("score:Q", title="Drift score (see each column's test)"),
            y=alt.Y("column:N", sort=list(data["column"]), title=None, axis=alt.Axis(labelLimit=240)),
            color=alt.Color("drifted:N", scale=scale, title=None),
            tooltip=["column:N", alt.Tooltip("score:Q", format=".4g"), "test:N", "drifted:N"],
        )
        .properties(title="Per column", height=max(80, 22 * len(data)))
    )


# -- the page ---------------------------------------------------------------------------------------

st.title(":material/monitoring: Monitoring")
st.caption(
    f"Drift and quality of **{name}**'s routes: what they are asked to predict, against the data their models learnt "
    "from; and the alerts raised when too much of it drifts."
)

project = state.load(client.projects.get, name)
actions = {r.name: set(r.actions) for r in state.load(client.roles)}.get(project.role or "", set())
admin = me is not None and me.is_admin
may_write = admin or "monitor:write" in actions

monitors = state.load(client.monitors.list, name)
alerts = state.load(client.alerts.list, name, limit=ALERTS)
open_alerts = [a for a in alerts if a.acknowledged_at is None]
if open_alerts:
    routes = sorted({a.route for a in open_alerts})
    st.warning(
        f"{plural(len(open_alerts), 'open alert')} on {', '.join(routes)}: see **Alerts** below.",
        icon=":material/notifications_active:",
    )


def monitors_section() -> MonitorPublic | None:
    st.subheader("Monitors")
    if not monitors:
        how = (
            f"Create one with the CLI: `selfserve monitor create {name} ROUTE --window 1h --schedule '*/15 * * * *'`."
            if may_write
            else "Ask a project owner or scientist to create one."
        )
        st.info(
            "No monitors yet. A monitor compares what a route is asked to predict with the data its model was "
            "trained on, on a schedule, and raises an alert when too many columns drift. " + how,
            icon=":material/monitoring:",
        )
        return None
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "Route": m.route,
                    "Reference": reference(m),
                    "Window": span(m.window_seconds),
                    "Schedule": m.schedule or "on demand",
                    "Threshold": m.drift_share,
                    "Last status": status_text(m.last_run.status) if m.last_run else "never run",
                    "Last drift share": m.last_run.drift_share if m.last_run else None,
                    "Drifted": drifted_text(m.last_run) if m.last_run else "",
                    "Last run": pd.Timestamp(m.last_run.created_at) if m.last_run else pd.NaT,
                    "On drift": m.on_drift,
                }
                for m in monitors
            ]
        ).style.map(tint, subset=["Last status"]),
        hide_index=True,
        column_config={
            "Reference": st.column_config.TextColumn("Reference", help="The dataset version runs compare with."),
            "Window": st.column_config.TextColumn("Window", help="How much of the prediction log each run reads."),
            "Schedule": st.column_config.TextColumn("Schedule", help="Cron, in UTC."),
            "Threshold": st.column_config.NumberColumn(
                "Threshold", format=PERCENT, help="Share of drifted columns that raises an alert."
            ),
            "Last drift share": st.column_config.NumberColumn("Last drift share", format=PERCENT),
            "Drifted": st.column_config.TextColumn("Drifted", help="Drifted columns of the last run."),
            "Last run": WHEN,
        },
    )
    by_route = {m.route: m for m in monitors}
    chosen_col, _ = st.columns([2, 5])
    return by_route[chosen_col.selectbox("Monitor", list(by_route), key="monitoring_route")]


def settings_caption(mon: MonitorPublic) -> str:
    facts = [
        f"Compares the last {span(mon.window_seconds)} of **{mon.route}**'s predictions with **{reference(mon)}**",
        f"cron `{mon.schedule}` (UTC)" if mon.schedule else "on demand only",
        f"alert at {mon.drift_share:.0%} of columns drifted",
    ]
    if mon.label:
        facts.append(f"label `{plain(mon.label)}`" + (f" ({mon.task})" if mon.task else ""))
    facts.append(f"on drift: {mon.on_drift}" + (f" (policy {mon.policy})" if mon.on_drift == "retrain" else ""))
    if mon.webhook_url:
        facts.append(f"alerts POSTed to `{mon.webhook_url}`")
    return " · ".join(facts)


def run_label(run: MonitorRunPublic) -> str:
    return f"#{run.id} · {run.created_at:%Y-%m-%d %H:%M} · {status_text(run.status)}"


def run_summary(run: MonitorRunPublic, mon: MonitorPublic) -> None:
    """What the run found: its status, drift against the threshold, drifted columns, rows and quality."""
    where = ""
    if run.window_start is not None and run.window_end is not None:
        where = f" between {run.window_start:%Y-%m-%d %H:%M} and {run.window_end:%H:%M} UTC"
    st.markdown(f"Run **#{run.id}** {badge(run.status)}")
    if run.status == "no_data":
        st.info(
            f"No data in window: **{mon.route}** logged no predictions{where}, so there was nothing to compare with "
            f"{reference(mon)}. This says nothing about drift either way.",
            icon=":material/hourglass_empty:",
        )
        return
    if run.status == "error":
        st.error(f"The run failed: {run.error or 'no reason given'}", icon=":material/error:")
        return
    share, drift_col, rows_col, ref_col = st.columns(4)
    share.metric(
        "Drift share",
        f"{run.drift_share:.0%}" if run.drift_share is not None else "-",
        help=f"Share of columns drifted; the alert threshold is {mon.drift_share:.0%}.",
    )
    drift_col.metric("Drifted columns", drifted_text(run) or "-")
    rows_col.metric("Rows in window", f"{run.rows_current:,}", help=f"Logged predictions{where}.")
    ref_col.metric("Reference rows", f"{run.rows_reference:,}", help=f"Rows of {reference(mon)}.")
    names = drifted(run)
    if names:
        st.caption("Drifted: " + ", ".join(f"`{plain(n)}`" for n in names))
    if run.columns:
        st.altair_chart(column_chart(run), width="stretch")
        if len(run.columns) > MAX_BARS:
            st.caption(f"The first {MAX_BARS} of {len(run.columns)} columns, drifted ones first: the report has all.")
    if run.quality:
        st.markdown("**Quality**")
        cells = st.columns(min(4, len(run.quality)))
        for i, (metric, value) in enumerate(sorted(run.quality.items())):
            cells[i % len(cells)].metric(metric.replace("_", " ").capitalize(), f"{value:.3f}")


def report_html(mon: MonitorPublic, run: MonitorRunPublic) -> str | None:
    """The run's HTML report; the one shown last is kept in the session, since a run's report never changes."""
    key = (name, mon.route, run.id)
    kept = st.session_state.get(REPORT)
    if kept is not None and kept[0] == key:
        return str(kept[1])
    with tempfile.TemporaryDirectory(prefix="selfserve-report-") as tmp:
        saved = state.call(client.monitors.report, name, mon.route, Path(tmp) / "report.html", run=run.id)
        if saved is None:
            return None
        html = saved.read_text(encoding="utf-8", errors="replace")
    st.session_state[REPORT] = (key, html)
    return html


def report_section(mon: MonitorPublic, run: MonitorRunPublic) -> None:
    if not run.has_report:
        st.caption(f"Run #{run.id} kept no report." + (" Pick an earlier run above." if run.status != "ok" else ""))
        return
    html = report_html(mon, run)
    if html is None:
        return
    title_col, download_col = st.columns([5, 1], vertical_alignment="bottom")
    title_col.markdown(f"**Report of run #{run.id}**")
    download_col.download_button(
        "Download",
        html.encode(),
        file_name=f"{mon.route}-run-{run.id}-report.html",
        mime="text/html",
        icon=":material/download:",
        key="monitoring_download",
        width="stretch",
    )
    # A data: URL gives the report's scripts an origin of their own, away from the console's.
    st.iframe("data:text/html;base64," + base64.b64encode(html.encode()).decode(), height=REPORT_HEIGHT)


def monitor_section(mon: MonitorPublic) -> None:
    st.subheader(f"Monitor of {mon.route}")
    about, action = st.columns([5, 1], vertical_alignment="center")
    about.caption(settings_caption(mon))
    if may_write:
        if action.button(
            "Run now",
            type="primary",
            icon=":material/play_arrow:",
            key="monitoring_run_now",
            width="stretch",
            help="Start a run of the monitor's flow on the project's pool.",
        ):
            started = state.call(client.monitors.run, name, mon.route)
            if started is not None:
                state.flash(
                    f"Started a run of the monitor on {mon.route} (flow run {started}); it shows here once it ends."
                )
    else:
        st.caption(f":material/lock: Your role in **{name}** may look at its monitors, not run them.")
    runs = state.call(client.monitors.runs, name, mon.route, limit=RUNS)
    if runs is None:
        return
    if not runs:
        when = f"on its schedule (cron `{mon.schedule}`, UTC)" if mon.schedule else "when someone runs it"
        st.info(
            f"No runs yet: the monitor runs {when}"
            + (", or now with **Run now**." if may_write else ".")
            + " Each run reads the route's prediction log and compares it with the reference.",
            icon=":material/schedule:",
        )
        return
    st.altair_chart(drift_chart(runs, mon.drift_share), width="stretch")
    nothing = sum(r.status == "no_data" for r in runs)
    if nothing:
        st.caption(f"{plural(nothing, 'run')} had no data in the window: dotted rules, not drift of 0%.")
    by_id = {r.id: r for r in runs}
    if st.session_state.get("monitoring_run") not in by_id:
        st.session_state["monitoring_run"] = runs[0].id
    chosen_col, _ = st.columns([3, 4])
    chosen = chosen_col.selectbox(
        "Run", list(by_id), key="monitoring_run", format_func=lambda i: run_label(by_id[i]), help="Newest first."
    )
    run = by_id[chosen]
    run_summary(run, mon)
    report_section(mon, run)
    with st.expander(f"All runs of {mon.route} ({len(runs)})", icon=":material/history:"):
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "Run": r.id,
                        "When": pd.Timestamp(r.created_at),
                        "Status": status_text(r.status),
                        "Drift share": r.drift_share,
                        "Drifted": drifted_text(r),
                        "Rows": r.rows_current,
                        "Report": r.has_report,
                        "Error": r.error or "",
                    }
                    for r in runs
                ]
            ).style.map(tint, subset=["Status"]),
            hide_index=True,
            column_config={
                "When": WHEN,
                "Drift share": st.column_config.NumberColumn("Drift share", format=PERCENT),
                "Rows": st.column_config.NumberColumn("Rows", help="Logged predictions in the run's window."),
                "Error": st.column_config.TextColumn("Error", width="medium"),
            },
        )


def alert_card(a: AlertPublic) -> None:
    with st.container(border=True):
        text_col, button_col = st.columns([6, 1], vertical_alignment="center")
        text_col.markdown(f":red-badge[{a.kind}] **{a.route}** · {plain(a.message)}")
        facts = [f"alert #{a.id}", f"{a.created_at:%Y-%m-%d %H:%M:%S %Z}"]
        if a.run_id is not None:
            facts.append(f"run #{a.run_id}")
        if a.webhook:
            facts.append(f"webhook {a.webhook}")
        text_col.caption(" · ".join(facts))
        if may_write and button_col.button(
            "Acknowledge", icon=":material/done:", key=f"monitoring_ack_{a.id}", width="stretch"
        ):
            acked = state.call(client.alerts.ack, name, a.id)
            if acked is not None:
                state.flash(f"Alert #{acked.id} on {acked.route} is acknowledged.")


def alerts_section() -> None:
    st.subheader("Alerts")
    if not alerts:
        st.caption("No alerts yet: a monitor raises one when a run's share of drifted columns reaches its threshold.")
        return
    if open_alerts:
        for a in open_alerts:
            alert_card(a)
        if not may_write:
            st.caption(f":material/lock: Your role in **{name}** may look at alerts, not acknowledge them.")
    else:
        st.caption("No open alerts: every alert has been acknowledged.")
    done = [a for a in alerts if a.acknowledged_at is not None]
    if done:
        with st.expander(f"Acknowledged ({len(done)})", icon=":material/done_all:"):
            st.dataframe(
                [
                    {
                        "Alert": a.id,
                        "Route": a.route,
                        "Kind": a.kind,
                        "Message": a.message,
                        "Raised": a.created_at,
                        "Acknowledged by": a.acknowledged_by or "",
                        "Acknowledged": a.acknowledged_at,
                    }
                    for a in done
                ],
                hide_index=True,
                column_config={
                    "Message": st.column_config.TextColumn("Message", width="large"),
                    "Raised": WHEN,
                    "Acknowledged": WHEN,
                },
            )


shown = monitors_section()
if shown is not None:
    monitor_section(shown)
alerts_section()
