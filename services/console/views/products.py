"""Data products: the catalog of every project's published datasets, access requests, and (for owners of the
selected project) the decisions on requests for its products."""

from __future__ import annotations

import console_state as state
import streamlit as st

client = state.require_client()
me = state.user()
current = state.project()

WHEN = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")
# Which decisions a request in each state allows (the API refuses the others).
DECISIONS = {"requested": ("grant", "deny"), "granted": ("revoke",), "denied": ("grant",), "revoked": ("grant",)}


def sla(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for suffix, unit in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * unit and seconds % unit == 0:
            return f"{int(seconds // unit)}{suffix}"
    return f"{seconds:g}s"


st.title(":material/storefront: Data products")
st.caption(
    "Datasets that projects publish for everyone to find. Ask for access from one of your projects; owners decide."
)

catalog_tab, requests_tab = st.tabs(["Catalog", "Requests for our products"])

# -- catalog ----------------------------------------------------------------------------------------

with catalog_tab:
    everything = state.load(client.products.search, "")
    tags = sorted({t for p in everything for t in p.tags})
    text_col, tag_col = st.columns([3, 1])
    text = text_col.text_input("Search", placeholder="Name, project, description or tag", key="products_search")
    tag = tag_col.selectbox("Tag", ["Any", *tags], key="products_tag")
    found = state.load(client.products.search, text.strip(), tag=None if tag == "Any" else tag)

    if not everything:
        st.info(
            "Nothing is published yet. Publish a dataset with `selfserve product publish PROJECT DATASET`.",
            icon=":material/storefront:",
        )
    elif not found:
        st.info("No product matches. Try other words or another tag.", icon=":material/manage_search:")
    else:
        st.dataframe(
            [
                {
                    "Product": f"{p.project}/{p.dataset}",
                    "Description": p.description,
                    "Tags": p.tags,
                    "Owner": p.owner,
                    "Freshness": p.freshness,
                    "SLA": sla(p.sla_freshness_seconds),
                    "Last updated": p.last_updated,
                    "Your access": p.access or "",
                }
                for p in found
            ],
            hide_index=True,
            column_config={
                "Description": st.column_config.TextColumn("Description", width="medium"),
                "Tags": st.column_config.ListColumn("Tags"),
                "Last updated": WHEN,
            },
        )
        st.caption(f"{len(found)} of {len(everything)} products. Their data is readable only once access is granted.")

        st.subheader("Request access")
        mine = [p.name for p in state.load(client.projects.list)]
        if not mine:
            st.caption(":material/lock: Join or create a project first: access is granted to a project.")
        else:
            with st.form("request_access", clear_on_submit=True):
                product = st.selectbox("Product", [f"{p.project}/{p.dataset}" for p in found], key="request_product")
                for_project = st.selectbox(
                    "For project",
                    mine,
                    index=mine.index(current) if current in mine else 0,
                    key="request_for",
                    help="The project whose members will read the product (in SQL as project.dataset).",
                )
                reason = st.text_area("Reason", placeholder="What you need the data for", key="request_reason")
                send = st.form_submit_button("Request access", type="primary", icon=":material/send:")
            if send:
                sent = state.call(client.products.request, product, for_project=for_project, reason=reason.strip())
                if sent is not None:
                    state.flash(f"Access to {sent.product} requested for {sent.consumer} (request #{sent.id}).")

# -- requests for the selected project's products -------------------------------------------------------

with requests_tab:
    if current is None:
        st.info("Select a project to see the requests for its products.", icon=":material/folder_off:")
        st.stop()
    project = state.load(client.projects.get, current)
    roles = {r.name: r.actions for r in state.load(client.roles)}
    decides = (me is not None and me.is_admin) or "product:grant" in roles.get(project.role or "", [])
    if not decides:
        st.caption(f":material/lock: Only the owners of **{current}** decide requests for its products.")
        st.stop()

    st.caption(f"Requests from other projects to read **{current}**'s products.")
    requests = state.load(client.products.requests, current)
    if not requests:
        st.caption("No requests yet.")
        st.stop()
    st.dataframe(
        [
            {
                "#": r.id,
                "Product": r.product,
                "For project": r.consumer,
                "Status": r.status,
                "Requested by": r.requested_by,
                "Reason": r.reason,
                "Decided by": r.decided_by or "",
                "Requested": r.created_at,
            }
            for r in requests
        ],
        hide_index=True,
        column_config={"Requested": WHEN},
    )
    by_id = {r.id: r for r in requests}
    chosen = st.selectbox(
        "Request",
        list(by_id),
        format_func=lambda i: f"#{i} · {by_id[i].consumer} → {by_id[i].product} · {by_id[i].status}",
        key="decide_request",
    )
    request = by_id[chosen]
    allowed = DECISIONS.get(request.status, ())
    grant_col, deny_col, revoke_col, _ = st.columns([1, 1, 1, 3])
    actions = {
        "grant": (grant_col, "Grant", ":material/check:", client.products.grant),
        "deny": (deny_col, "Deny", ":material/block:", client.products.deny),
        "revoke": (revoke_col, "Revoke", ":material/remove_moderator:", client.products.revoke),
    }
    for decision, (col, label, icon, act) in actions.items():
        if col.button(label, icon=icon, disabled=decision not in allowed, key=f"decide_{decision}", width="stretch"):
            decided = state.call(act, current, request.id)
            if decided is not None:
                state.flash(f"Request #{decided.id} from {decided.consumer} for {decided.product} is {decided.status}.")
