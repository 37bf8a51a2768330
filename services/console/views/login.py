"""Sign in with a platform account; the token stays in this browser session."""

from __future__ import annotations

import console_state as state
import streamlit as st

_, middle, _ = st.columns([1, 1.2, 1])
with middle:
    st.title(":material/hub: selfserve")
    st.caption("Self-service data and ML platform: projects, members, quotas and their audit trail.")
    if message := state.notice():
        st.info(message, icon=":material/info:")
    with st.form("login"):
        st.subheader("Sign in")
        username = st.text_input("User name", key="login_user", autocomplete="username", placeholder="e.g. alice")
        password = st.text_input("Password", key="login_password", type="password", autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary", icon=":material/login:", width="stretch")
    if submitted and state.login(username.strip(), password):
        st.rerun()
    st.caption("No account yet? Ask a platform admin to create one for you.")
