"""Home: the six steps of the workflow, each with its state from the backend."""
from __future__ import annotations

import streamlit as st

from backend.api import SconesError
from ui.state import backend
from ui.widgets import show_error, status_badge

STEP_TITLES = {
    "stage": ("1 · Stage", "CIFAR-100 bicycle and motorcycle images, as PNGs and .lst files in the bucket."),
    "train": ("2 · Train", "The image-classification algorithm, with live accuracy per epoch."),
    "deploy": ("3 · Deploy", "An endpoint with data capture; try it on an image."),
    "workflow": ("4 · Workflow", "Serialize → classify → filter by confidence, as Step Functions runs it."),
    "monitor": ("5 · Monitor", "Captured confidence against the threshold."),
    "cleanup": ("6 · Clean up", "Everything the project created, removed in order."),
}
STEP_PAGES = {"stage": "views/stage.py", "train": "views/train.py", "deploy": "views/deploy.py",
              "workflow": "views/workflow.py", "monitor": "views/monitor.py",
              "cleanup": "views/cleanup.py"}

st.title("Scones Unlimited: image-classification workflow")
st.caption("Sort delivery photos into bicycles and motorcycles: stage, train, deploy, run the workflow, "
           "monitor confidence and clean up, from one place.")

try:
    b = backend()
    workspace = b.describe_workspace()
except SconesError as exc:
    show_error(exc)
    st.stop()

left, right = st.columns(2)
left.metric("Backend", workspace["backend"])
right.metric("Workspace", workspace["home"])


@st.fragment(run_every=2.0)
def steps_view() -> None:
    try:
        steps = b.step_statuses()
    except SconesError as exc:
        show_error(exc)
        return
    cols = st.columns(3)
    for i, (name, (title, blurb)) in enumerate(STEP_TITLES.items()):
        status = steps[name]
        with cols[i % 3].container(border=True):
            st.markdown(f"#### {title}")
            st.markdown(status_badge(status), help=blurb)
            st.caption(status.detail or blurb)
            if name in STEP_PAGES:
                st.page_link(STEP_PAGES[name], label=f"Open {title.split('· ')[1]}", icon=":material/arrow_forward:")


steps_view()
