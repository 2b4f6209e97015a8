"""Clean up: everything the project created, deleted in dependency order after a typed confirmation.

Each resource has its own tick, kept by kind and name: when the list changes under the operator (a
CLI run, data added by 'Also delete data') nobody's choice is reset. The typed confirmation is for
one selection: when the selection changes after it was typed, it is cleared and asked for again."""
from __future__ import annotations

import time

import streamlit as st

from backend.api import SconesError, human_size, usd
from ui.state import backend, kept, remember, watch_for_changes
from ui.widgets import show_error

CONFIRM_WORD = "delete"
REPORT_SECONDS = 120.0
KIND_TITLES = {
    "endpoint": "Endpoints", "endpoint-config": "Endpoint configs", "model": "Models", "training-job": "Training jobs",
    "executions": "Executions", "state-machine": "State machines", "lambda-function": "Lambda functions",
    "iam-role": "IAM roles", "data": "Data",
}

st.title("Clean up")
st.caption("Everything this workspace created: endpoints (and their processes), endpoint configs, models, "
           "training jobs and artifacts, state machines and executions, and data; on AWS also what carries the "
           "project tag without this workspace having created it, unticked. Deleted in dependency order; "
           "deleting twice is harmless.")



def tick_key(kind: str, name: str) -> str:
    return f"cleanup_tick:{kind}:{name}"


def inventory_signature(resources) -> tuple:
    """What the page draws from the inventory: a change made elsewhere (the CLI, a batch starting) redraws it."""
    return tuple((r.kind, r.name, r.status, r.busy, r.created_here) for r in resources)


try:
    b = backend()
    resources = b.inventory()
except SconesError as exc:
    show_error(exc)
    st.stop()
watch_for_changes("cleanup_signature", lambda: inventory_signature(b.inventory()), inventory_signature(resources),
                  aws=b.name == "aws")
for note in b.inventory_notes():
    st.warning(note, icon=":material/visibility_off:")

# The report of this page's last cleanup stays up a while: a redraw (the watcher seeing an AWS endpoint's
# Deleting end, say) cleared it the moment after it was shown.
shown = st.session_state.get("cleanup_report")
report = shown[1] if shown is not None and time.time() - shown[0] < REPORT_SECONDS else None
if shown is not None and report is None:
    del st.session_state["cleanup_report"]
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

# A ticked resource that is gone now went elsewhere (the CLI, another tab): said once, not silently dropped (audit).
present = {tick_key(r.kind, r.name) for r in resources} if resources else set()
gone = sorted({key.removeprefix("_kept:") for key, on in list(st.session_state.items()) if isinstance(key, str)
               and key.removeprefix("_kept:").startswith("cleanup_tick:") and on is True
               and key.removeprefix("_kept:") not in present})  # the widget's value, or kept while on another page
for key in gone:
    st.session_state.pop(key, None)
    st.session_state.pop(f"_kept:{key}", None)
if gone and report is None:  # (this page's own deletion says what it deleted above)
    st.info("Deleted elsewhere since ticked here (the CLI, another tab): "
            + ", ".join(f"`{k.removeprefix('cleanup_tick:')}`" for k in gone) + ".", icon=":material/sync:")

if not resources:
    st.info("Nothing left: the workspace holds no resources. Every other step on the Home page is back to not started.")
    st.stop()


def set_ticks(keys: list[str], value: bool) -> None:
    for key in keys:
        st.session_state[key] = value


kept("cleanup_data", False)  # kept across pages, as the ticks are
include_data = st.checkbox("Also delete data (staged images, capture, uploads, downloads)", key="cleanup_data",
                           on_change=remember, args=("cleanup_data",))
visible = [r for r in resources if include_data or not r.is_data]
chosen: list[tuple[str, str]] = []
for kind, title in KIND_TITLES.items():
    group = [r for r in visible if r.kind == kind]
    if not group:
        continue
    keys = [tick_key(r.kind, r.name) for r in group]
    with st.container(border=True):
        head, all_on, all_off = st.columns([4, 1, 1], vertical_alignment="center")  # "None" read "N..." at [6, 1, 1]
        head.markdown(f"**{title}** ({len(group)})")
        all_on.button("All", key=f"cleanup_all:{kind}", on_click=set_ticks, args=(keys, True), width="stretch")
        all_off.button("None", key=f"cleanup_none:{kind}", on_click=set_ticks, args=(keys, False), width="stretch")
        for r, key in zip(group, keys):
            facts = [r.status] + ([human_size(r.size_bytes)] if r.size_bytes is not None else []) \
                + ([f"{usd(r.hourly_usd)}/h"] if r.hourly_usd is not None else [])
            kept(key, r.created_here)  # first shown: ticked when this workspace created it; then as left
            if st.checkbox(f"`{r.name}` · {' · '.join(facts)}", key=key):
                chosen.append((r.kind, r.name))
            if r.detail:
                st.caption(r.detail)

elsewhere = [r for r in visible if not r.created_here]
if elsewhere:
    st.warning(f"{len(elsewhere)} resource(s) carry the project tag but were not created by this workspace "
               "(another workspace's, or one whose records are lost): they start unticked. Tick one to delete it.")
data_hidden = sum(r.is_data for r in resources) - sum(r.is_data for r in visible)
if data_hidden:
    st.caption(f"{data_hidden} data set(s) kept: tick the box above to delete data too.")

# What the deletion would leave, and why, before anything is deleted (the dry run of `scones cleanup`).
going: list[tuple[str, str]] = []
if chosen:
    try:
        going, blocked = b.cleanup_plan(chosen, include_data=include_data, resources=resources)
    except SconesError as exc:
        show_error(exc)
        st.stop()
    for kind, name, reason in blocked:
        st.warning(f"Will be left: {kind}:{name}: {reason}", icon=":material/block:")
    for warning in b.cleanup_warnings(going, resources):  # what it would interrupt or break
        st.warning(warning, icon=":material/link_off:")

# The confirmation is for the plan it was typed under (what is ticked, and what that would delete): a
# changed selection, or a list changed under it (the CLI deleted something), asks again.
# (A widget's value is cleared by setting it before the widget is drawn: removing it would leave the
# browser showing the old text, and sending it back.)
selection = [sorted(chosen), sorted(going)]
if st.session_state.pop("cleanup_clear_confirm", False):
    st.session_state["cleanup_confirm"] = ""
if st.session_state.get("cleanup_confirm") and st.session_state.get("cleanup_confirmed_for") != selection:
    st.session_state["cleanup_confirm"] = ""
    st.info(f"The selection changed (or what it would delete did) after **{CONFIRM_WORD}** was typed: check it, "
            "then type it again.",
            icon=":material/restart_alt:")
st.session_state["cleanup_selection"] = selection


def remember_selection() -> None:
    st.session_state["cleanup_confirmed_for"] = st.session_state.get("cleanup_selection")


typed = st.text_input(f"Type {CONFIRM_WORD} to confirm", key="cleanup_confirm", on_change=remember_selection,
                      placeholder=f"type {CONFIRM_WORD} here")  # a plain label: screen readers and get_by_label read it as shown
go = st.button(f"Delete {len(going)} selected" if len(going) == len(chosen) else
               f"Delete {len(going)} of {len(chosen)} selected", type="primary", key="cleanup_go",
               disabled=not going or typed.strip().lower() != CONFIRM_WORD)
if go:
    with st.spinner("Deleting in dependency order…"):
        try:
            st.session_state["cleanup_report"] = (time.time(), b.cleanup(chosen, include_data=include_data))
        except SconesError as exc:
            show_error(exc)
        else:
            st.session_state["cleanup_clear_confirm"] = True  # the next run clears the typed word
            st.rerun()
