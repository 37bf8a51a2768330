"""The selected project at a glance: what it is, your role, and its quotas against their limits."""

from __future__ import annotations

import console_state as state
import streamlit as st

client = state.require_client()
me = state.user()
name = state.project()

if name is None:
    st.title(":material/waving_hand: Welcome to selfserve")
    st.markdown(
        "You are not a member of any project yet. A project holds your team's data, pipelines and "
        "models, with its own members and quotas. Create one (you become its owner), or ask a "
        "project owner to add you."
    )
    with st.form("create_project"):
        st.subheader("Create a project")
        new_name = st.text_input("Name", placeholder="e.g. churn", help="Lowercase letters, digits and '-'.")
        description = st.text_area("Description", placeholder="What the project is for")
        create = st.form_submit_button("Create project", type="primary", icon=":material/add:")
    if create:
        created = state.call(client.projects.create, new_name.strip(), description=description.strip())
        if created is not None:
            state.select_project(created.name)
    st.stop()

project = state.load(client.projects.get, name)
quota = state.load(client.quotas.get, name)
manages = project.role == state.OWNER or (me is not None and me.is_admin)

st.title(f":material/folder: {project.name}")
st.markdown(project.description or "_No description yet._")

status_col, role_col, owner_col, date_col = st.columns(4)
status_col.metric("Status", project.status.capitalize(), border=True)
role_col.metric("Your role", (project.role or "platform admin").capitalize(), border=True)
owner_col.metric("Created by", project.created_by, border=True)
date_col.metric("Created", f"{project.created_at:%Y-%m-%d}", border=True)

for step in project.provisioning:
    if step.status != "ready":
        st.warning(
            f"Provisioning of **{step.provisioner}** is {step.status} after {step.attempts} attempt(s)"
            + (f": {step.error}" if step.error else "."),
            icon=":material/construction:",
        )

pooled = [item for item in quota.items if item.usage is not None]
per_run = [item for item in quota.items if item.usage is None]

usage_col, limits_col = st.columns([3, 2], gap="large")
with usage_col:
    st.subheader("Quota usage")
    if not pooled:
        st.caption("This project has no pooled quotas.")
    for item in pooled:
        share = min(max((item.usage or 0.0) / item.limit, 0.0), 1.0) if item.limit > 0 else 1.0
        mark = " :red[at the limit]" if share >= 1.0 else (" :orange[nearly full]" if share >= 0.9 else "")
        st.progress(share, text=f"**{state.title(item.resource)}** · {item.shown} ({share:.0%}){mark}")
        st.caption(item.description.capitalize())
with limits_col:
    st.subheader("Limits")
    if not per_run:
        st.caption("No per-run or rate limits are set.")
    for item in per_run:
        st.metric(state.title(item.resource), item.shown, help=item.description.capitalize(), border=True)

st.divider()
st.subheader("Quota requests")
units = {item.resource: item.unit for item in quota.items}
if manages:
    with st.expander("Request more quota", icon=":material/add_circle:"):
        with st.form("quota_request", clear_on_submit=True):
            resource = st.selectbox(
                "Resource",
                [item.resource for item in quota.items],
                format_func=lambda r: f"{state.title(r)} (now {next(i.shown for i in quota.items if i.resource == r)})",
            )
            limit = st.text_input("New limit", placeholder="e.g. 20GB for storage, 4 for runs")
            reason = st.text_area("Reason", placeholder="What the extra capacity is for")
            send = st.form_submit_button("Send request", type="primary", icon=":material/send:")
        if send:
            if not limit.strip():
                st.error("Enter the new limit.", icon=":material/error:")
            else:
                sent = state.call(client.quotas.request, name, {resource: limit.strip()}, reason=reason.strip())
                if sent is not None:
                    state.flash(f"Quota request #{sent.id} sent: a platform admin will review it.")
else:
    st.caption(":material/lock: Only project owners can request more quota.")

requests = state.call(client.quotas.requests, name)
if requests:
    st.dataframe(
        [
            {
                "#": r.id,
                "Change": ", ".join(
                    f"{state.title(k)} → {state.amount(v, units.get(k, ''))}" for k, v in r.changes.items()
                ),
                "Reason": r.reason,
                "Status": r.status,
                "Requested by": r.requested_by,
                "Requested": r.created_at,
                "Note": r.note,
            }
            for r in requests
        ],
        hide_index=True,
        column_config={"Requested": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")},
    )
elif requests is not None:
    st.caption("No quota requests yet.")
