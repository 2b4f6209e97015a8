"""Clean up: everything the project created, deleted in dependency order after a typed confirmation."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from backend.api import SconesError
from ui.state import backend
from ui.widgets import show_error

CONFIRM_WORD = "delete"

st.title("Clean up")
st.caption("Everything this workspace created: endpoints (and their processes), endpoint configs, models, "
           "training jobs and artifacts, state machines and executions, and data; on AWS also what carries the "
           "project tag without this workspace having created it, unticked. Deleted in dependency order; "
           "deleting twice is harmless.")

try:
    b = backend()
    resources = b.inventory()
except SconesError as exc:
    show_error(exc)
    st.stop()
for note in b.inventory_notes():
    st.warning(note, icon=":material/visibility_off:")

report = st.session_state.pop("cleanup_report", None)
if report is not None:
    if report.deleted:
        st.success(f"Deleted {len(report.deleted)}: " + ", ".join(f"{k}:{n}" for k, n in report.deleted))
    for kind, name, reason in report.left:
        st.warning(f"Left {kind}:{name}: {reason}")
elif (last := b.last_cleanup()) is not None and last[1].left:  # an earlier cleanup (this page's or the CLI's)
    at, earlier = last
    with st.expander(f"Last clean up, {at.replace('T', ' ')[:19]} UTC: {len(earlier.deleted)} deleted, "
                     f"{len(earlier.left)} left"):
        for kind, name, reason in earlier.left:
            st.markdown(f"- `{kind}:{name}`: {reason}")

if not resources:
    st.info("Nothing left: the workspace holds no resources. Every other step on the Home page is back to not started.")
    st.stop()

include_data = st.checkbox("Also delete data (staged images, capture, uploads, downloads)", value=False,
                           key="cleanup_data")
visible = [r for r in resources if include_data or not r.is_data]
frame = pd.DataFrame([{
    "delete": r.created_here, "kind": r.kind, "name": r.name, "status": r.status,
    "size": "" if r.size_bytes is None else f"{r.size_bytes / 1e6:.2f} MB",
    "hourly USD": "" if r.hourly_usd is None else f"{r.hourly_usd:.3f}", "detail": r.detail,
} for r in visible])
edited = st.data_editor(frame, hide_index=True, disabled=[c for c in frame.columns if c != "delete"],
                        key="cleanup_table", width="stretch", column_config={
                            "delete": st.column_config.CheckboxColumn(width="small"),
                            "name": st.column_config.TextColumn(width="large")})
chosen = [(row.kind, row.name) for row in edited.itertuples() if row.delete]
elsewhere = [r for r in visible if not r.created_here]
if elsewhere:
    st.warning(f"{len(elsewhere)} resource(s) carry the project tag but were not created by this workspace "
               "(another workspace's, or one whose records are lost): they start unticked. Tick one to delete it.")
data_hidden = sum(r.is_data for r in resources) - sum(r.is_data for r in visible)
if data_hidden:
    st.caption(f"{data_hidden} data set(s) kept: tick the box above to delete data too.")

typed = st.text_input(f"Type **{CONFIRM_WORD}** to confirm", key="cleanup_confirm")
go = st.button(f"Delete {len(chosen)} selected", type="primary", key="cleanup_go",
               disabled=not chosen or typed.strip().lower() != CONFIRM_WORD)
if go:
    with st.spinner("Deleting in dependency order…"):
        try:
            st.session_state["cleanup_report"] = b.cleanup(chosen, include_data=include_data)
        except SconesError as exc:
            show_error(exc)
        else:
            st.session_state.pop("cleanup_confirm", None)
            st.rerun()
