"""The selected project's data: datasets (versions, preview, schema, column profiles, lineage), sources and jobs."""

from __future__ import annotations

import json
from typing import Any

import altair as alt
import console_state as state
import pandas as pd
import streamlit as st

client = state.require_client()
name = state.require_project()

NUMERIC = ("byte", "short", "integer", "long", "float", "double", "decimal")
TEMPORAL = ("date", "timestamp")
PROFILE_ROWS = 1000  # the API's default preview maximum
WHEN = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for suffix, unit in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= unit:
            return f"{n / unit:.1f} {suffix}"
    return f"{n} B"


def ref(entry: dict[str, Any]) -> str:
    where = "" if entry.get("project") == name else f"{entry.get('project')}/"
    return f"{where}{entry.get('dataset')}@{entry.get('version')}"


def producer(p: dict[str, Any]) -> str:
    kind = p.get("kind", "?")
    if kind == "upload":
        return f"upload of {p.get('file', 'a file')}"
    if kind == "transform":
        return f"{p.get('engine', '?')} transform"
    if kind == "ingest":
        return f"ingest from {p.get('source')} ({p.get('source_kind')})"
    return str(kind)


def frame(data: Any) -> pd.DataFrame:
    """A preview or query result (rows as lists) as a DataFrame."""
    return pd.DataFrame(data.rows, columns=[c.name for c in data.columns])


def profile_chart(values: pd.Series, type_: str) -> alt.Chart:
    """A histogram for numbers and times, the most frequent values for everything else."""
    column = str(values.name)
    if type_.startswith(NUMERIC):
        data = pd.DataFrame({column: pd.to_numeric(values, errors="coerce")}).dropna()
        x = alt.X(field=column, type="quantitative", bin=alt.Bin(maxbins=20), title=None)
        chart = alt.Chart(data).mark_bar().encode(x=x, y=alt.Y("count()", title="rows"))
    elif type_.startswith(TEMPORAL):
        data = pd.DataFrame({column: pd.to_datetime(values, errors="coerce", utc=True)}).dropna()
        x = alt.X(field=column, type="temporal", timeUnit="yearmonth", title=None)
        chart = alt.Chart(data).mark_bar().encode(x=x, y=alt.Y("count()", title="rows"))
    else:
        counts = values.astype("string").fillna("(null)").value_counts().head(12)
        data = pd.DataFrame({"value": counts.index.astype(str), "rows": counts.to_numpy()})
        y = alt.Y(field="value", type="nominal", sort="-x", title=None, axis=alt.Axis(labelOverlap=False))
        chart = alt.Chart(data).mark_bar().encode(x=alt.X(field="rows", type="quantitative"), y=y)
    return chart.properties(title=column, height=180)


st.title(":material/database: Data")
st.caption(f"Datasets and sources of **{name}**.")

datasets_tab, sources_tab, jobs_tab = st.tabs(["Datasets", "Sources", "Jobs"])

# -- datasets ---------------------------------------------------------------------------------------

with datasets_tab:
    datasets = state.load(client.datasets.list, name)
    if not datasets:
        st.info(
            "No datasets yet. Upload a file (`selfserve dataset upload`), ingest a source (`selfserve ingest`) "
            "or run a transform (`selfserve transform`).",
            icon=":material/upload_file:",
        )
    else:
        st.dataframe(
            [
                {
                    "Dataset": d.name,
                    "Version": d.current_version,
                    "Rows": d.rows,
                    "Size": size(d.bytes),
                    "Columns": len(d.columns),
                    "Contract": d.has_contract,
                    "Published": d.published,
                    "Updated": d.updated_at,
                    "Description": d.description,
                }
                for d in datasets
            ],
            hide_index=True,
            column_config={"Updated": WHEN},
        )
        chosen = st.selectbox("Dataset", [d.name for d in datasets], key="data_dataset")
        dataset = next(d for d in datasets if d.name == chosen)
        history = state.load(client.datasets.history, name, chosen)
        by_version = {v.version: v for v in history}
        version = st.selectbox(
            "Version",
            list(by_version),
            key=f"data_version_{chosen}",
            format_func=lambda n: (
                f"v{n} · {by_version[n].operation} · {by_version[n].created_at:%Y-%m-%d %H:%M}"
                + (" · latest" if n == dataset.current_version else "")
            ),
            help="Every write made one version; older ones stay readable (time travel).",
        )
        current = by_version[version]

        version_col, rows_col, size_col, columns_col = st.columns(4)
        version_col.metric("Version", f"v{current.version}", border=True)
        rows_col.metric("Rows", f"{current.rows:,}", border=True)
        size_col.metric("Size", size(current.bytes), border=True)
        columns_col.metric("Columns", len(current.columns), border=True)

        preview_tab, schema_tab, profile_tab, lineage_tab = st.tabs(
            ["Preview", "Schema", "Profile", "History & lineage"]
        )

        with preview_tab:
            limit = st.slider("Rows", min_value=10, max_value=500, value=50, step=10, key="data_preview_rows")
            preview = state.call(client.datasets.preview, name, chosen, version=version, limit=limit)
            if preview is not None:
                st.dataframe(frame(preview), hide_index=True)
                more = " (more rows not shown)" if preview.truncated else ""
                st.caption(f"The first {preview.row_count} rows of {chosen} v{version}{more}.")

        with schema_tab:
            st.dataframe(
                [{"Column": c.name, "Type": c.type, "Nullable": c.nullable} for c in current.columns],
                hide_index=True,
            )

        with profile_tab:
            sample = state.call(client.datasets.preview, name, chosen, version=version, limit=PROFILE_ROWS)
            if sample is not None and sample.row_count:
                df = frame(sample)
                types = {c.name: c.type for c in sample.columns}
                shown = "every row" if not sample.truncated else f"the first {sample.row_count:,} rows"
                st.caption(f"Column profiles of {chosen} v{version}, from {shown}.")
                st.dataframe(
                    [
                        {
                            "Column": c,
                            "Type": types[c],
                            "Nulls": int(df[c].isna().sum()),
                            "Distinct": int(df[c].astype("string").nunique()),
                            "Min": df[c].min() if types[c].startswith(NUMERIC) else None,
                            "Mean": round(float(df[c].mean()), 3) if types[c].startswith(NUMERIC) else None,
                            "Max": df[c].max() if types[c].startswith(NUMERIC) else None,
                        }
                        for c in df.columns
                    ],
                    hide_index=True,
                )
                grid = st.columns(3)
                for i, column in enumerate(df.columns):
                    with grid[i % 3]:
                        st.altair_chart(profile_chart(df[column], types[column]), width="stretch")
            elif sample is not None:
                st.caption("This version has no rows to profile.")

        with lineage_tab:
            st.dataframe(
                [
                    {
                        "Version": v.version,
                        "Operation": v.operation,
                        "Rows": v.rows,
                        "Rows written": v.rows_written,
                        "Size": size(v.bytes),
                        "Made by": producer(v.producer),
                        "Inputs": ", ".join(ref(i) for i in v.inputs),
                        "By": v.created_by,
                        "When": v.created_at,
                    }
                    for v in history
                ],
                hide_index=True,
                column_config={"When": WHEN},
            )
            st.subheader(f"Lineage of {chosen} v{version}", divider="gray")
            made = current.producer
            st.markdown(
                f"Made by **{producer(made)}**, by {current.created_by} at {current.created_at:%Y-%m-%d %H:%M}."
            )
            if current.inputs:
                st.markdown("Read " + ", ".join(f"`{ref(i)}`" for i in current.inputs) + ".")
                edges = "\n".join(f'  "{ref(i)}" -> "{chosen}@{version}";' for i in current.inputs)
                st.graphviz_chart(
                    f"digraph {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n{edges}\n"
                    f'  "{chosen}@{version}" [style="rounded,bold"];\n}}'
                )
            if made.get("sql"):
                st.code(made["sql"], language="sql")
            elif made.get("code"):
                st.code(made["code"], language="python")
            elif made.get("kind") == "ingest":
                read = made.get("query") or made.get("table")
                st.markdown(
                    f"Read `{read}`"
                    + (f", incrementally by `{made['incremental']}`." if made.get("incremental") else ".")
                )
            with st.expander("Producer details", icon=":material/info:"):
                st.code(json.dumps(made, indent=2, sort_keys=True), language="json")

# -- sources ----------------------------------------------------------------------------------------

with sources_tab:
    sources = state.load(client.sources.list, name)
    if not sources:
        st.info(
            "No sources yet. Add one with `selfserve source add` (PostgreSQL, MySQL, SQLite, S3, files, "
            "REST, Redis, NATS).",
            icon=":material/cable:",
        )
    for source in sources:
        with st.container(border=True):
            about, action = st.columns([5, 1], vertical_alignment="center")
            settings = ", ".join(f"{k}={v}" for k, v in source.config.items())
            secrets = f" · secrets: {', '.join(source.secrets)}" if source.secrets else ""
            about.markdown(f"**{source.name}** · {source.kind}")
            about.caption(f"{settings}{secrets} · added by {source.created_by} on {source.created_at:%Y-%m-%d}")
            if action.button("Test", key=f"test_source_{source.name}", icon=":material/network_check:"):
                result = state.call(client.sources.test, name, source.name)
                if result is not None and result.ok:
                    st.success(result.message, icon=":material/check_circle:")
                elif result is not None:
                    st.error(result.message, icon=":material/error:")

# -- jobs -------------------------------------------------------------------------------------------

with jobs_tab:
    jobs = state.load(client.jobs.list, name)
    if not jobs:
        st.caption("No ingest or transform jobs yet.")
    else:
        st.dataframe(
            [
                {
                    "#": j.id,
                    "Kind": j.kind,
                    "Status": j.status,
                    "Into": j.params.get("to"),
                    "Rows read": j.progress.get("rows_read"),
                    "Started": j.started_at,
                    "Finished": j.finished_at,
                    "By": j.created_by,
                    "Error": j.error or "",
                }
                for j in jobs
            ],
            hide_index=True,
            column_config={"Started": WHEN, "Finished": WHEN},
        )
