"""The selected project's registered models (MLflow): their versions and aliases, promotion to champion and roll
back (for the roles that may), the promotion history, and where a version came from and went."""

from __future__ import annotations

import console_state as state
import pandas as pd
import streamlit as st

from selfserve.schemas.models import ModelDetail, ModelLineage, ModelVersionPublic

client = state.require_client()
me = state.user()
name = state.require_project()

WHEN = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")
VERSIONS = 100  # the newest versions shown; the SDK's ``client.models.versions`` reads up to 1000
CHAMPION, CHALLENGER = "champion", "challenger"
PENDING = "models_pending"  # the promotion or roll back waiting for its confirmation


def number(value: float) -> str:
    return f"{value:.4g}"


def chosen_by(v: ModelVersionPublic) -> str:
    """The metric the version was chosen by, with its value when the training flow set one."""
    if v.metric is None:
        return ""
    return v.metric if v.metric_value is None else f"{v.metric} = {number(v.metric_value)}"


def previous_champion(model: ModelDetail) -> int | None:
    """The version a roll back would make champion again, as the promotion history tells (the API decides)."""
    return next(
        (
            p.previous_version
            for p in model.promotions
            if p.action == "promote" and p.version == model.champion and p.previous_version is not None
        ),
        None,
    )


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def code_label(lin: ModelLineage) -> str:
    c = lin.code
    if c is None:
        return ""
    if c.deployment:
        return f"flow {c.deployment}" + (f"\n{c.entrypoint}" if c.entrypoint else "")
    if c.source_name:
        return c.source_name.rsplit("/", 1)[-1] + (f"\n@{c.git_commit[:10]}" if c.git_commit else "")
    if c.flow_run_id:
        return f"flow run {c.flow_run_id[:8]}"
    return ""


def lineage_graph(lin: ModelLineage) -> str:
    """Dataset versions -> run <- code; run -> the version -> deployments, as Graphviz DOT."""
    version = quoted(f"{lin.model} v{lin.version}" + (f"\n{', '.join(lin.aliases)}" if lin.aliases else ""))
    lines = ["digraph {", "  rankdir=LR;", "  node [shape=box, style=rounded, fontsize=11];"]
    lines.append(f'  {version} [style="rounded,bold"];')
    if lin.run is None:
        lines.append(f'  "no run recorded" [style="rounded,dashed"]; "no run recorded" -> {version};')
    else:
        run = quoted(f"run {lin.run.name}\n{lin.run.experiment}")
        lines.append(f"  {run} -> {version};")
        for d in lin.datasets:
            ref = quoted(d.name + (f"@{d.version}" if d.version else ""))
            label = f" [label={quoted(d.context)}, fontsize=9]" if d.context else ""
            lines.append(f"  {ref} [shape=cylinder, style=solid]; {ref} -> {run}{label};")
        code = code_label(lin)
        if code:
            lines.append(f"  {quoted(code)} [shape=note, style=solid]; {quoted(code)} -> {run};")
    for dep in lin.deployments:
        lines.append(f"  {version} -> {quoted('deployment ' + dep.name)};")
    if not lin.deployments:
        lines.append(f'  "not deployed yet" [style="rounded,dashed", fontcolor=gray]; {version} -> "not deployed yet";')
    lines.append("}")
    return "\n".join(lines)


st.title(":material/model_training: Models")
st.caption(f"Registered models of **{name}**, their versions, champion and challenger, and where each came from.")

models = state.load_service(
    "Models are not available on this platform right now, so there are no registered models to show.",
    client.models.list,
    name,
)
if not models:
    st.info(
        f'No registered models yet. Register one with the `mlflow` client (`eval "$(selfserve mlflow env {name})"`) '
        f"under the name `{name}.<model>`, or train one with `selfserve train`.",
        icon=":material/model_training:",
    )
    st.stop()

project = state.load(client.projects.get, name)
actions = {r.name: set(r.actions) for r in state.load(client.roles)}.get(project.role or "", set())
may_promote = (me is not None and me.is_admin) or "model:promote" in actions

st.dataframe(
    [
        {
            "Model": m.name,
            "Champion": m.champion,
            "Challenger": m.challenger,
            "Other aliases": [f"{a} → v{v}" for a, v in sorted(m.aliases.items()) if a not in (CHAMPION, CHALLENGER)],
            "Latest version": m.latest_version,
            "Updated": m.updated_at,
            "Description": m.description,
        }
        for m in models
    ],
    hide_index=True,
    column_config={
        "Champion": st.column_config.NumberColumn("Champion", format="v%d"),
        "Challenger": st.column_config.NumberColumn("Challenger", format="v%d"),
        "Other aliases": st.column_config.ListColumn("Other aliases"),
        "Latest version": st.column_config.NumberColumn("Latest version", format="v%d"),
        "Updated": WHEN,
        "Description": st.column_config.TextColumn("Description", width="medium"),
    },
)

model_name = st.selectbox(
    "Model",
    [m.name for m in models],
    key="models_model",
)
model = state.load(client.models.get, name, model_name, versions=VERSIONS)

# -- versions ---------------------------------------------------------------------------------------

st.subheader(f"Versions of {model.name}")
if not model.versions:
    st.caption("No versions yet.")
    st.stop()
st.dataframe(
    pd.DataFrame(
        [
            {
                "Version": v.version,
                "Aliases": v.aliases,
                "Status": v.status,
                "Run": v.run_id or "",
                "Experiment": v.experiment or "",
                "Metric": chosen_by(v),
                "Metrics": ", ".join(f"{k}={number(x)}" for k, x in sorted(v.metrics.items())),
                "Created": v.created_at,
            }
            for v in model.versions
        ]
    ),
    hide_index=True,
    column_config={
        "Version": st.column_config.NumberColumn("Version", format="v%d"),
        "Aliases": st.column_config.ListColumn("Aliases"),
        "Run": st.column_config.TextColumn("Run", help="The MLflow run the version was made from."),
        "Metric": st.column_config.TextColumn("Metric", help="The metric the version was chosen by."),
        "Metrics": st.column_config.TextColumn("Metrics", width="medium", help="The run's metrics."),
        "Created": WHEN,
    },
)
if len(model.versions) == VERSIONS:
    st.caption(f"The newest {VERSIONS} versions; `client.models.versions` reads more.")

by_version = {v.version: v for v in model.versions}
if st.session_state.get("models_version") not in by_version:  # the champion first, else the newest
    st.session_state["models_version"] = model.champion if model.champion in by_version else model.versions[0].version
version_col, promote_col, rollback_col, _ = st.columns([3, 2, 2, 1], vertical_alignment="bottom")
# Labels hold only what never changes (no aliases): a label that changed under the open page would not be redrawn.
version = version_col.selectbox("Version", list(by_version), key="models_version", format_func=lambda v: f"v{v}")

pending = st.session_state.get(PENDING)
if pending is not None and (pending["model"], pending.get("version", version)) != (model.name, version):
    st.session_state.pop(PENDING)  # asked about another model or version: that question is gone
    pending = None
if not may_promote:
    st.caption(f":material/lock: Your role in **{name}** may look at its models, not promote them or roll them back.")
else:
    if promote_col.button(
        "Promote to champion",
        type="primary",
        icon=":material/trophy:",
        key="models_promote",
        width="stretch",
        disabled=version == model.champion,
        help=f"v{version} is the champion already." if version == model.champion else None,
    ):
        pending = st.session_state[PENDING] = {"action": "promote", "model": model.name, "version": version}
    if rollback_col.button(
        "Roll back champion",
        icon=":material/undo:",
        key="models_rollback",
        width="stretch",
        disabled=model.champion is None,
        help="The model has no champion." if model.champion is None else "Make the champion before it champion again.",
    ):
        pending = st.session_state[PENDING] = {"action": "rollback", "model": model.name}

if may_promote and pending is not None:
    with st.form("models_confirm", clear_on_submit=True):
        before = previous_champion(model)
        if pending["action"] == "promote":
            question = f"Make version {pending['version']} the champion of **{model.name}**?"
            if model.champion is not None:
                question += f" Version {model.champion}, the champion now, is kept for a roll back."
            st.warning(question)
        else:
            target = f"version {before}" if before is not None else "the champion before it"
            st.warning(
                f"Roll back **{model.name}**? Version {model.champion} stops being the champion and {target} "
                "becomes champion again."
            )
        reason = st.text_input(
            "Reason", key="models_reason", placeholder="Kept in the promotion history and the audit trail"
        )
        confirm_col, cancel_col, _ = st.columns([1, 1, 4])
        confirm = confirm_col.form_submit_button("Confirm", type="primary", icon=":material/check:")
        cancel = cancel_col.form_submit_button("Cancel")
    if cancel:
        st.session_state.pop(PENDING, None)
        st.rerun()
    if confirm:
        st.session_state.pop(PENDING, None)
        if pending["action"] == "promote":
            done = state.call(client.models.promote, name, model.name, pending["version"], reason=reason.strip())
        else:
            done = state.call(client.models.rollback, name, model.name, reason=reason.strip())
        if done is not None:
            was = f" (was v{done.previous_version})" if done.previous_version is not None else ""
            if done.action == "promote":
                state.flash(f"{done.model} v{done.version} is the champion now{was}.")
            state.flash(f"Rolled back {done.model}: v{done.version} is the champion again{was}.")

# -- lineage ----------------------------------------------------------------------------------------

st.subheader(f"Lineage of {model.name} v{version}")
lineage = state.load(client.models.lineage, name, model.name, version)
st.graphviz_chart(lineage_graph(lineage))
data_col, run_col, code_col = st.columns(3)
with data_col, st.container(border=True):
    st.markdown("**Dataset versions**")
    for d in lineage.datasets:
        context = f" · {d.context}" if d.context else ""
        st.markdown(f"`{d.name}{'@' + d.version if d.version else ''}`{context}")
    if not lineage.datasets:
        st.caption("The run recorded no dataset.")
with run_col, st.container(border=True):
    st.markdown("**Run**")
    if lineage.run is None:
        st.caption("The version names no run.")
    else:
        r = lineage.run
        st.markdown(f"`{r.name}` in **{r.experiment}** · {r.status}" + (f" · by {r.user}" if r.user else ""))
        st.caption(f"Run {r.id}" + (f" · started {r.start_time:%Y-%m-%d %H:%M}" if r.start_time else ""))
        if r.params:
            st.caption("Parameters: " + ", ".join(f"`{k}={v}`" for k, v in sorted(r.params.items())))
        if r.metrics:
            st.caption("Metrics: " + ", ".join(f"`{k}={number(v)}`" for k, v in sorted(r.metrics.items())))
with code_col, st.container(border=True):
    st.markdown("**Code**")
    c = lineage.code
    facts = (
        []
        if c is None
        else [
            ("Flow deployment", c.deployment),
            ("Entrypoint", c.entrypoint),
            ("Code archive", c.code_sha[:12] if c.code_sha else None),
            ("Flow run", c.flow_run_id),
            ("Source", c.source_name),
            ("Git commit", c.git_commit[:12] if c.git_commit else None),
        ]
    )
    for label, value in facts:
        if value:
            st.markdown(f"{label}: `{value}`")
    if not any(value for _, value in facts):
        st.caption("The run recorded no code.")
if lineage.deployments:
    st.caption("Deployed as: " + ", ".join(d.name for d in lineage.deployments))
else:
    st.caption("Deployments: none yet (serving lists its deployments of a version here).")

# -- history ----------------------------------------------------------------------------------------

st.subheader("Promotion history")
if not model.promotions:
    st.caption("No promotions yet.")
else:
    st.dataframe(
        [
            {
                "When": p.at,
                "Action": p.action,
                "Version": p.version,
                "Replaced": p.previous_version,
                "By": p.actor,
                "Reason": p.reason,
            }
            for p in model.promotions
        ],
        hide_index=True,
        column_config={
            "When": WHEN,
            "Version": st.column_config.NumberColumn("Version", format="v%d"),
            "Replaced": st.column_config.NumberColumn("Replaced", format="v%d"),
            "Reason": st.column_config.TextColumn("Reason", width="large"),
        },
    )
