"""Who works in the selected project, and with which role; owners add, change and remove members."""

from __future__ import annotations

import console_state as state
import streamlit as st

client = state.require_client()
me = state.user()
name = state.require_project()

project = state.load(client.projects.get, name)
members = state.load(client.members.list, name)
roles = state.load(client.roles)
manages = project.role == state.OWNER or (me is not None and me.is_admin)

st.title(":material/group: Members")
st.caption(f"Who works in **{name}**, and with which role.")

people = [m for m in members if m.kind != "service"]
st.dataframe(
    [{"User": m.user, "Role": m.role, "Kind": m.kind, "Member since": m.created_at} for m in members],
    hide_index=True,
    column_config={"Member since": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")},
)
st.caption(f"{len(people)} {'person' if len(people) == 1 else 'people'}, plus the project's service account.")

with st.expander("What each role may do", icon=":material/badge:"):
    st.dataframe(
        [{"Role": r.name, "For": r.description, "Actions": ", ".join(r.actions)} for r in roles],
        hide_index=True,
    )

if not manages:
    st.caption(":material/lock: Only project owners can add, change or remove members.")
    st.stop()

st.subheader("Manage members")
assignable = [r.name for r in roles if r.name != state.SERVICE_ROLE]
describe = {r.name: r.description for r in roles}
least = assignable.index("viewer") if "viewer" in assignable else 0  # offer the smallest role first
forms, _ = st.columns([3, 2])
add_tab, change_tab, remove_tab = forms.tabs(["Add", "Change role", "Remove"])

with add_tab, st.form("add_member", clear_on_submit=True):
    user = st.text_input("User name", key="add_user", placeholder="e.g. bob")
    role = st.selectbox(
        "Role", assignable, index=least, key="add_role", help="\n\n".join(f"**{r}**: {describe[r]}" for r in assignable)
    )
    if st.form_submit_button("Add member", type="primary", icon=":material/person_add:"):
        if not user.strip():
            st.error("Enter the user's name.", icon=":material/error:")
        elif state.call(client.members.add, name, user.strip(), role) is not None:
            state.flash(f"Added {user.strip()} to {name} as {role}.")

with change_tab:
    if not people:
        st.caption("No members to change.")
    else:
        with st.form("change_role"):
            who = st.selectbox("Member", [m.user for m in people], key="change_user")
            new_role = st.selectbox("New role", assignable, index=least, key="change_role_to")
            if st.form_submit_button("Change role", icon=":material/edit:") and (
                state.call(client.members.set_role, name, who, new_role) is not None
            ):
                state.flash(f"{who} is now {new_role} in {name}.")

with remove_tab:
    if not people:
        st.caption("No members to remove.")
    else:
        with st.form("remove_member"):
            gone = st.selectbox("Member", [m.user for m in people], key="remove_user")
            sure = st.checkbox("They lose access to everything in this project.")
            if st.form_submit_button("Remove member", icon=":material/person_remove:"):
                if not sure:
                    st.error("Tick the box to confirm.", icon=":material/error:")
                elif state.attempt(client.members.remove, name, gone):
                    state.flash(f"Removed {gone} from {name}.")
