"""The selected project's audit trail: every change and every denial, newest first."""

from __future__ import annotations

import json

import console_state as state
import pandas as pd
import streamlit as st

client = state.require_client()
name = state.require_project()

SINCE = {"Last hour": "1h", "Last 24 hours": "24h", "Last 7 days": "7d", "Last 30 days": "30d", "All time": None}

st.title(":material/history: Audit trail")
st.caption(f"Every change and every denial in **{name}**: who, when, what, and the outcome.")

who_col, since_col, limit_col = st.columns([2, 2, 1])
who = who_col.text_input("User", placeholder="Anyone", key="audit_user", help="Only this user's actions.")
window = since_col.selectbox("Since", list(SINCE), index=2, key="audit_since")
limit = limit_col.number_input("At most", min_value=10, max_value=5000, value=200, step=50, key="audit_limit")

events = state.load(client.audit.list, name, user=who.strip() or None, since=SINCE[window], limit=int(limit))

if not events:
    st.info("No events match these filters. Try a longer time window or another user.", icon=":material/manage_search:")
    st.stop()

table = pd.DataFrame(
    [
        {
            "When": e.at,
            "Who": e.principal,
            "Action": e.action,
            "Target": e.target or "",
            "Outcome": e.outcome,
            "Detail": json.dumps(e.detail, sort_keys=True) if e.detail else "",
        }
        for e in events
    ]
)

total, denied, people = st.columns(3)
total.metric("Events", len(events), border=True)
denied.metric("Denied or failed", int((table["Outcome"] != "ok").sum()), border=True)
people.metric("Principals", table["Who"].nunique(), border=True)

st.dataframe(
    table,
    hide_index=True,
    column_config={"When": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")},
)
if len(events) == int(limit):
    st.caption(f"Showing the newest {len(events)} events; raise “At most” to see older ones.")
st.download_button(
    "Download CSV",
    table.to_csv(index=False),
    file_name=f"{name}-audit.csv",
    mime="text/csv",
    icon=":material/download:",
    on_click="ignore",
)
