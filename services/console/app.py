"""The selfserve console: ``streamlit run services/console/app.py``.

A thin face over the SDK: every page calls :class:`selfserve.client.Client` (through
``console_state``) and only shapes what it gets back for display. The API's URL comes from the
client settings (``SELFSERVE_URL``).
"""

from __future__ import annotations

from pathlib import Path

import console_state as state
import streamlit as st

HERE = Path(__file__).parent

st.set_page_config(page_title="selfserve console", page_icon=":material/hub:", layout="wide")
st.logo(str(HERE / "logo.svg"), size="large", icon_image=":material/hub:")

client = state.client()
if client is None:
    page = st.navigation(
        [st.Page("views/login.py", title="Sign in", icon=":material/login:", url_path="login", default=True)],
        position="hidden",
    )
else:
    page = st.navigation(
        [
            st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
            st.Page("views/data.py", title="Data", icon=":material/database:", url_path="data"),
            st.Page("views/pipelines.py", title="Pipelines", icon=":material/account_tree:", url_path="pipelines"),
            st.Page("views/experiments.py", title="Experiments", icon=":material/science:", url_path="experiments"),
            st.Page("views/models.py", title="Models", icon=":material/model_training:", url_path="models"),
            st.Page("views/serving.py", title="Serving", icon=":material/rocket_launch:", url_path="serving"),
            st.Page("views/monitoring.py", title="Monitoring", icon=":material/monitoring:", url_path="monitoring"),
            st.Page("views/products.py", title="Data products", icon=":material/storefront:", url_path="products"),
            st.Page("views/members.py", title="Members", icon=":material/group:"),
            st.Page("views/audit.py", title="Audit trail", icon=":material/history:", url_path="audit"),
        ]
    )
    me = state.user()
    with st.sidebar:
        switcher = st.container()
        st.divider()
        if me is not None:
            st.markdown(f":material/account_circle: **{me.name}**" + (" · platform admin" if me.is_admin else ""))
        st.caption(f"API: {client.url}")
        st.button("Sign out", icon=":material/logout:", on_click=state.logout, width="stretch")
    with switcher:  # filled last, so that Sign out is there even when the API is not
        state.project_switcher(state.load(client.projects.list))

state.show_flash()
page.run()
