"""The selected project's model serving: routes and how they split traffic over deployments (changed here by the
roles that may), each route's traffic per minute, and the deployments' health and logs."""

from __future__ import annotations

import altair as alt
import console_state as state
import pandas as pd
import streamlit as st

from selfserve.schemas.serving import DeploymentPublic, RoutePublic, RouteSpec, RouteStats

client = state.require_client()
me = state.user()
name = state.require_project()

WHEN = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")
MS = "%.1f ms"
# Badge colours: green serving, blue on its way, orange recovering, red given up, grey not started.
COLORS = {"ready": "green", "starting": "blue", "restarting": "orange", "failed": "red", "pending": "gray"}
CSS_COLORS = {"green": "#15803d", "red": "#b91c1c", "blue": "#1d4ed8", "orange": "#c2410c", "gray": "#6b7280"}
WINDOWS = {5: "5 minutes", 15: "15 minutes", 30: "30 minutes", 60: "1 hour"}  # what the API keeps: an hour
LIVE_SECONDS = 10  # how often the traffic charts redraw themselves while "Live" is on
MOVING = ("pending", "starting", "restarting")  # states a deployment leaves by itself
POLL_SECONDS = 3  # how often the panel of a deployment in one of them asks for news
LOG_LINES = 100
NO_SHADOW = "(none)"
SHADOW = " (shadow)"  # how the traffic figures name a shadow's copy of the requests
# Streamlit's own categorical colours, given out by deployment name so that each keeps its colour across charts.
PALETTE = ("#0068c9", "#83c9ff", "#ff2b2b", "#ffabab", "#29b09d", "#7defa1", "#ff8700", "#ffd16a", "#6d3fc0", "#d5dae5")


def split(spec: RouteSpec) -> str:
    """``{"v1": 90, "v2": 10}`` -> ``"v1 90% · v2 10%"``."""
    return " · ".join(f"{target} {weight}%" for target, weight in spec.targets.items())


def badge(text: str) -> str:
    return f":{COLORS.get(text, 'gray')}-badge[{text}]"


def tint(value: object) -> str:
    color = COLORS.get(str(value))
    return f"color: {CSS_COLORS[color]}" if color else ""


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def colors(shown: list[str], order: list[str]) -> alt.Scale:
    """The colour scale of the ``shown`` targets: the n-th deployment of ``order`` (all the project's) has the n-th
    colour in every chart, its shadow copy too, whichever deployments a chart shows."""
    index = {n: i for i, n in enumerate(order)}
    domain = sorted(set(shown))
    picked = [PALETTE[index.get(n.removesuffix(SHADOW), 0) % len(PALETTE)] for n in domain]
    return alt.Scale(domain=domain, range=picked)


def split_chart(spec: RouteSpec, order: list[str]) -> alt.LayerChart:
    """One bar from 0 to 100%, a segment per target, labelled with its deployment and share where there is room."""
    rows, start = [], 0
    for target, weight in spec.targets.items():
        if weight > 0:
            label = f"{target} {weight}%" if weight >= 20 else f"{weight}%" if weight >= 5 else ""
            rows.append(
                {"deployment": target, "percent": weight, "start": start, "end": start + weight, "label": label}
            )
            start += weight
    data = pd.DataFrame(rows)
    data["middle"] = (data["start"] + data["end"]) / 2
    bars = (
        alt.Chart(data)
        .mark_bar(height=34)
        .encode(
            x=alt.X("start:Q", scale=alt.Scale(domain=[0, 100]), title=None, axis=alt.Axis(format="d")),
            x2="end:Q",
            color=alt.Color("deployment:N", scale=colors(list(data["deployment"]), order), legend=None),
            tooltip=["deployment:N", alt.Tooltip("percent:Q", title="% of requests")],
        )
    )
    labels = alt.Chart(data).mark_text(color="white", fontWeight="bold").encode(x="middle:Q", text="label:N")
    return (bars + labels).properties(height=50)


def timeline(stats: RouteStats) -> pd.DataFrame:
    data = pd.DataFrame(stats.timeline)
    data["minute"] = pd.to_datetime(data["minute"], utc=True)
    return data


def per_minute_chart(data: pd.DataFrame, field: str, title: str, order: list[str]) -> alt.Chart:
    """A line per target (a shadow's included: it is a copy of the traffic, not more of it)."""
    return (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("minute:T", title=None, axis=alt.Axis(format="%H:%M")),
            y=alt.Y(f"{field}:Q", title=None, axis=alt.Axis(format="d", tickMinStep=1)),
            color=alt.Color("target:N", title="Target", scale=colors(list(data["target"]), order)),
            tooltip=[alt.Tooltip("minute:T", format="%H:%M"), "target:N", f"{field}:Q"],
        )
        .properties(title=title, height=220)
    )


def latency_chart(data: pd.DataFrame, order: list[str]) -> alt.Chart:
    """p50 (solid) and p95 (dashed) per minute, a colour per target."""
    long = data.melt(
        id_vars=["minute", "target"], value_vars=["p50_ms", "p95_ms"], var_name="percentile", value_name="ms"
    ).dropna(subset=["ms"])
    long["percentile"] = long["percentile"].str.removesuffix("_ms")
    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("minute:T", title=None, axis=alt.Axis(format="%H:%M")),
            y=alt.Y("ms:Q", title=None),
            color=alt.Color("target:N", title="Target", scale=colors(list(data["target"]), order)),
            strokeDash=alt.StrokeDash("percentile:N", sort=["p50", "p95"], legend=None),
            tooltip=[
                alt.Tooltip("minute:T", format="%H:%M"),
                "target:N",
                "percentile:N",
                alt.Tooltip("ms:Q", format=".1f"),
            ],
        )
        .properties(title=alt.TitleParams("Latency per minute, ms", subtitle="p50 solid, p95 dashed"), height=220)
    )


st.title(":material/rocket_launch: Serving")
st.caption(f"Routes of **{name}** over its model deployments, their traffic, and how the deployments are doing.")

project = state.load(client.projects.get, name)
actions = {r.name: set(r.actions) for r in state.load(client.roles)}.get(project.role or "", set())
admin = me is not None and me.is_admin
may_route = admin or "route:write" in actions
may_deploy = admin or "deployment:write" in actions

routes = state.load(client.routes.list, name)
deployments = state.load(client.deployments.list, name)
by_deployment = {d.name: d for d in deployments}
color_order = sorted({*by_deployment, *(t for r in routes for t in r.spec.targets)})


# -- routes -----------------------------------------------------------------------------------------


def edit_form(route: RoutePublic) -> None:
    """Weights per deployment (adding up to 100), the sticky key and the shadow; the feature view is kept."""
    names = list(dict.fromkeys([*route.spec.targets, *by_deployment]))
    version = f"{route.name}_{route.revision}"  # a new revision starts the form from its spec
    with st.form(f"serving_edit_{version}"):
        st.markdown("**Change the split**")
        grid = st.columns(min(4, len(names)))
        weights: dict[str, int] = {}
        for i, target in enumerate(names):
            weights[target] = int(
                grid[i % len(grid)].number_input(
                    target,
                    min_value=0,
                    max_value=100,
                    step=5,
                    value=route.spec.targets.get(target, 0),
                    key=f"serving_weight_{version}_{target}",
                    help="% of requests; 0 takes the deployment out of the route.",
                )
            )
        columns = sorted({c.name for d in deployments if d.name in names for c in d.inputs})
        key_col, shadow_col = st.columns(2)
        sticky = key_col.text_input(
            "Sticky key",
            value=route.spec.sticky_key or "",
            key=f"serving_sticky_{version}",
            placeholder="none: each request is assigned by chance",
            help="A/B test: requests with the same value of this input column always reach the same deployment."
            + (f" The deployments' inputs: {', '.join(columns)}." if columns else ""),
        )
        shadows = [NO_SHADOW, *names]
        shadow = shadow_col.selectbox(
            "Shadow",
            shadows,
            index=shadows.index(route.spec.shadow) if route.spec.shadow in shadows else 0,
            key=f"serving_shadow_{version}",
            help="A deployment that gets a copy of every request; its answers are only logged.",
        )
        saved = st.form_submit_button("Save split", type="primary", icon=":material/save:")
    if not saved:
        return
    targets = {t: w for t, w in weights.items() if w > 0}
    total = sum(targets.values())
    if total != 100:
        st.error(f"The weights add up to {total}%, not 100%.", icon=":material/error:")
        return
    changed = state.call(
        client.routes.set,
        name,
        route.name,
        targets,
        sticky_key=sticky.strip() or None,
        shadow=None if shadow == NO_SHADOW else shadow,
        feature_view=route.spec.feature_view,
    )
    if changed is not None:
        state.flash(f"Route {changed.name} sends {split(changed.spec)} now (revision {changed.revision}).")


def switch_form(route: RoutePublic) -> None:
    """Blue/green (every request to one deployment at once) and roll back, with a reason for the history."""
    names = list(dict.fromkeys([*route.spec.targets, *by_deployment]))
    with st.form("serving_switch", clear_on_submit=True):
        to_col, reason_col, switch_col, back_col = st.columns([2, 3, 1, 1], vertical_alignment="bottom")
        to = to_col.selectbox(
            "Switch every request to",
            names,
            key="serving_switch_to",
            help="Blue/green: one deployment takes all the traffic at once; the sticky key and shadow stay.",
        )
        reason = reason_col.text_input(
            "Reason", key="serving_reason", placeholder="Kept in the route's history and the audit trail"
        )
        switch = switch_col.form_submit_button("Switch", icon=":material/swap_horiz:", width="stretch")
        back = back_col.form_submit_button(
            "Roll back",
            icon=":material/undo:",
            width="stretch",
            disabled=route.revision == 1,
            help="The route has had one spec only." if route.revision == 1 else "Back to the spec before this one.",
        )
    if switch:
        changed = state.call(client.routes.switch, name, route.name, to, reason=reason.strip())
        if changed is not None:
            state.flash(f"Route {changed.name} sends every request to {to} now (revision {changed.revision}).")
    if back:
        changed = state.call(client.routes.rollback, name, route.name, reason=reason.strip())
        if changed is not None:
            state.flash(f"Rolled back route {changed.name}: it sends {split(changed.spec)} again.")


def create_route_form() -> None:
    with st.form("serving_new_route", clear_on_submit=True):
        name_col, target_col, submit_col = st.columns([2, 2, 1], vertical_alignment="bottom")
        route_name = name_col.text_input("Route name", key="serving_new_route_name", placeholder="e.g. score")
        target = target_col.selectbox("Deployment", list(by_deployment), key="serving_new_route_target")
        if submit_col.form_submit_button("Create route", icon=":material/add:", width="stretch"):
            if not route_name.strip():
                st.error("Enter the route's name.", icon=":material/error:")
                return
            created = state.call(client.routes.create, name, route_name.strip(), target)
            if created is not None:
                st.session_state["serving_route"] = created.name
                state.flash(f"Route {created.name} sends every request to {target}.")


def routes_section() -> RoutePublic | None:
    """The routes table and the selected route: its split, its controls and its history."""
    st.subheader("Routes")
    if may_route and deployments:
        with st.expander("New route", icon=":material/add_road:", expanded=not routes):
            create_route_form()
    if not routes:
        if may_route and deployments:
            sdk = f"client.routes.create('{name}', 'score', '{deployments[0].name}')"
            how = f"Create one above, or with the SDK: `{sdk}`."
        elif may_route:
            how = "Deploy a model first (below), then create a route over it."
        else:
            how = "Ask a project owner to create one."
        st.info(
            "No routes yet. A route is the stable address predictions are sent to; it splits them over deployments. "
            + how,
            icon=":material/alt_route:",
        )
        return None
    st.dataframe(
        [
            {
                "Route": r.name,
                "Split": split(r.spec),
                "Sticky key": r.spec.sticky_key or "",
                "Shadow": r.spec.shadow or "",
                "Feature view": r.spec.feature_view or "",
                "Revision": r.revision,
                "Updated": r.updated_at,
                "Created by": r.created_by,
            }
            for r in routes
        ],
        hide_index=True,
        column_config={
            "Split": st.column_config.TextColumn("Split", width="medium", help="% of requests per deployment."),
            "Shadow": st.column_config.TextColumn("Shadow", help="Gets a copy of every request; answers only logged."),
            "Updated": WHEN,
        },
    )
    by_name = {r.name: r for r in routes}
    chosen_col, _ = st.columns([2, 5])
    route = by_name[chosen_col.selectbox("Route", list(by_name), key="serving_route")]
    st.altair_chart(split_chart(route.spec, color_order), width="stretch")
    notes = [f"Predict: `POST {route.predict_path}`"]
    if route.spec.sticky_key:
        notes.append(f"sticky by `{route.spec.sticky_key}`")
    if route.spec.shadow:
        notes.append(f"**{route.spec.shadow}** gets a copy of every request")
    if route.spec.feature_view:
        notes.append(f"missing inputs are filled from feature view **{route.spec.feature_view}**")
    st.caption(" · ".join(notes))
    for target in [*route.spec.targets, *([route.spec.shadow] if route.spec.shadow else [])]:
        dep = by_deployment.get(target)
        if dep is not None and dep.state != "ready":
            now = "has failed" if dep.state == "failed" else f"is {dep.state}"
            st.warning(
                f"Deployment **{target}** {now}: requests sent to it fail until it is ready.",
                icon=":material/warning:",
            )
    if may_route:
        edit_form(route)
        switch_form(route)
    else:
        st.caption(f":material/lock: Your role in **{name}** may look at its routes, not change them.")
    with st.expander(f"History of {route.name}", icon=":material/history:"):
        history = state.call(client.routes.history, name, route.name)
        if history:
            st.dataframe(
                [
                    {
                        "Revision": h.revision,
                        "Action": h.action,
                        "Split": split(h.spec),
                        "Sticky key": h.spec.sticky_key or "",
                        "Shadow": h.spec.shadow or "",
                        "Feature view": h.spec.feature_view or "",
                        "By": h.actor,
                        "Reason": h.reason,
                        "When": h.at,
                    }
                    for h in history
                ],
                hide_index=True,
                column_config={"When": WHEN, "Reason": st.column_config.TextColumn("Reason", width="medium")},
            )
    return route


# -- traffic ----------------------------------------------------------------------------------------


def traffic_panel(route: RoutePublic, minutes: int) -> None:
    """Requests, errors and latency per minute and target, as the gateway saw them."""
    stats = state.call(client.routes.stats, name, route.name, window=minutes * 60)
    if stats is None:
        return
    if not stats.timeline:
        st.info(
            f"No traffic on **{route.name}** in the last {WINDOWS[minutes]} yet. Predictions sent to "
            f"`POST {route.predict_path}` show up here within seconds.",
            icon=":material/monitoring:",
        )
        return
    data = timeline(stats)
    requests_col, errors_col, latency_col = st.columns(3)
    requests_col.altair_chart(per_minute_chart(data, "requests", "Requests per minute", color_order), width="stretch")
    errors_col.altair_chart(per_minute_chart(data, "errors", "Errors per minute", color_order), width="stretch")
    latency_col.altair_chart(latency_chart(data, color_order), width="stretch")
    st.dataframe(
        [
            {
                "Target": t.target,
                "Shadow": t.shadow,
                "Requests": t.requests,
                "Errors": t.errors,
                "Error rate": t.errors / t.requests if t.requests else None,
                "p50": t.p50_ms,
                "p95": t.p95_ms,
                "p99": t.p99_ms,
            }
            for t in stats.targets
        ],
        hide_index=True,
        column_config={
            "Shadow": st.column_config.CheckboxColumn("Shadow", help="A copy of the traffic; its answers only logged."),
            "Error rate": st.column_config.NumberColumn("Error rate", format="percent"),
            "p50": st.column_config.NumberColumn("p50", format=MS),
            "p95": st.column_config.NumberColumn("p95", format=MS),
            "p99": st.column_config.NumberColumn("p99", format=MS),
        },
    )
    total, errors = sum(t.requests for t in stats.targets), sum(t.errors for t in stats.targets)
    st.caption(
        f"{plural(total, 'request')}, {plural(errors, 'error')} in the last {WINDOWS[minutes]}, "
        "as this API server saw them."
    )


def traffic_section(route: RoutePublic) -> None:
    st.subheader(f"Traffic of {route.name}")
    window_col, live_col, refresh_col = st.columns([2, 1, 1], vertical_alignment="bottom")
    minutes = window_col.selectbox(
        "Window", list(WINDOWS), index=1, key="serving_window", format_func=lambda m: f"last {WINDOWS[m]}"
    )
    live = live_col.toggle("Live", key="serving_live", help=f"Redraw the charts every {LIVE_SECONDS} s.")
    refresh_col.button("Refresh", icon=":material/refresh:", key="serving_refresh", width="stretch")
    st.fragment(traffic_panel, run_every=LIVE_SECONDS if live else None)(route, minutes)


# -- deployments ------------------------------------------------------------------------------------


def deployment_panel(seen: DeploymentPublic) -> None:
    """The selected deployment: state, what it serves, its last error, delete, and its log.

    While the deployment is on its way (or back) to ready the panel alone asks for news every few seconds; once it
    has settled the whole page is drawn again, the tables and the routes' warnings included.
    """
    dep = (state.call(client.deployments.get, name, seen.name) or seen) if seen.state in MOVING else seen
    if dep.state not in MOVING and seen.state in MOVING:
        st.rerun()
    with st.container(border=True):
        about, action = st.columns([5, 2], vertical_alignment="center")
        about.markdown(f"**{dep.name}** serves **{dep.model} v{dep.version}** {badge(dep.state)}")
        facts = [f"asked for `{dep.model_ref}` by {dep.created_by}"]
        if dep.state == "ready" and dep.ready_at is not None:
            facts.append(f"ready since {dep.ready_at:%Y-%m-%d %H:%M:%S %Z}")
        if dep.restarts:
            facts.append(f"restarted {plural(dep.restarts, 'time')}")
        facts.append(f"used by {', '.join(dep.routes)}" if dep.routes else "no route uses it")
        about.caption(" · ".join(facts))
        if dep.inputs:
            about.caption("Inputs: " + ", ".join(f"`{c.name}` {c.type}" for c in dep.inputs))
        if may_deploy:
            sure = action.checkbox(
                f"Stop serving {dep.name}", key=f"serving_delete_sure_{dep.name}", disabled=bool(dep.routes)
            )
            in_use = f"Routes {', '.join(dep.routes)} send it traffic: change them first." if dep.routes else None
            if action.button(
                "Delete deployment",
                icon=":material/delete:",
                key="serving_delete",
                width="stretch",
                disabled=bool(dep.routes),
                help=in_use,
            ):
                if not sure:
                    st.error("Tick the box to confirm.", icon=":material/error:")
                elif state.attempt(client.deployments.delete, name, dep.name):
                    state.flash(f"Deployment {dep.name} is deleted.")
        if dep.last_error and dep.state == "failed":
            st.error(dep.last_error, icon=":material/error:")
        elif dep.last_error:
            st.caption(f"Last error: {dep.last_error}")
        logs_box = st.expander(
            f"Last {LOG_LINES} log lines", icon=":material/article:", key=f"serving_logs_{dep.name}", on_change="rerun"
        )
        with logs_box:
            logs = state.call(client.deployments.logs, name, dep.name, tail=LOG_LINES) if logs_box.open else None
            if logs is not None and logs.lines:
                st.code("\n".join(logs.lines), language=None)
            elif logs is not None:
                st.caption("No log lines yet.")


def create_deployment_form() -> None:
    with st.form("serving_new_deployment", clear_on_submit=True):
        name_col, model_col, submit_col = st.columns([2, 2, 1], vertical_alignment="bottom")
        dep_name = name_col.text_input("Deployment name", key="serving_new_name", placeholder="e.g. clf-v1")
        model = model_col.text_input(
            "Model",
            key="serving_new_model",
            placeholder="clf@champion or clf@7",
            help="A registered model of this project, by alias or version number.",
        )
        if submit_col.form_submit_button("Deploy", type="primary", icon=":material/rocket_launch:", width="stretch"):
            if not dep_name.strip() or not model.strip():
                st.error("Enter the deployment's name and the model to serve.", icon=":material/error:")
                return
            created = state.call(client.deployments.create, name, dep_name.strip(), model.strip())
            if created is not None:
                st.session_state["serving_deployment"] = created.name
                state.flash(
                    f"Deployment {created.name} of {created.model} v{created.version} is {created.state}; "
                    "it takes a minute or so to be ready."
                )


def deployments_section() -> None:
    st.subheader("Deployments")
    if may_deploy:
        with st.expander("New deployment", icon=":material/add:", expanded=not deployments):
            create_deployment_form()
    if not deployments:
        st.info(
            "No deployments yet. A deployment serves one registered model version"
            + (", e.g. `clf@champion`: deploy one above." if may_deploy else "; ask a project owner to deploy one."),
            icon=":material/rocket_launch:",
        )
        return
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "Deployment": d.name,
                    "Model": f"{d.model}@{d.version}",
                    "Asked for": d.model_ref,
                    "State": d.state,
                    "Restarts": d.restarts,
                    "Last error": d.last_error or "",
                    "Routes": d.routes,
                    "Ready since": pd.Timestamp(d.ready_at) if d.state == "ready" and d.ready_at else pd.NaT,
                    "By": d.created_by,
                }
                for d in deployments
            ]
        ).style.map(tint, subset=["State"]),
        hide_index=True,
        column_config={
            "Model": st.column_config.TextColumn("Model", help="The registered model and the version served."),
            "Asked for": st.column_config.TextColumn("Asked for", help="The alias or version it was created with."),
            "Last error": st.column_config.TextColumn("Last error", width="medium"),
            "Routes": st.column_config.ListColumn("Routes", help="Routes that send it traffic."),
            "Ready since": WHEN,
        },
    )
    ready = sum(d.state == "ready" for d in deployments)
    st.caption(f"{ready} of {plural(len(deployments), 'deployment')} ready.")
    chosen_col, _ = st.columns([2, 5])
    chosen = chosen_col.selectbox("Deployment", list(by_deployment), key="serving_deployment")
    selected = by_deployment[chosen]
    st.fragment(deployment_panel, run_every=POLL_SECONDS if selected.state in MOVING else None)(selected)
    if not may_deploy:
        st.caption(f":material/lock: Your role in **{name}** may look at its deployments, not create or delete them.")


shown = routes_section()
if shown is not None:
    traffic_section(shown)
deployments_section()
