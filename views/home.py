"""Home: the six steps of the workflow, each with its state from the backend."""
from __future__ import annotations

import streamlit as st

from backend.api import SconesError, usd
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

left, right = st.columns([1, 3])
left.metric("Backend", workspace["backend"])
with right:  # a path is shown whole (wrapped), where a metric cut it to one line
    st.markdown("Workspace")
    st.code(workspace["home"], language=None, wrap_lines=True)


def idle_warnings() -> None:
    """Endpoints bill every hour they exist: name the ones nobody has called for an hour."""
    try:
        idle = b.idle_endpoints()
    except SconesError as exc:
        st.caption(f"Idle endpoints could not be checked: {exc}")
        return
    for e in idle:
        cost = f"about ${e.cost_so_far_usd:,.2f} so far ({usd(e.hourly_usd)}/h)" if e.cost_so_far_usd is not None \
            else f"a price the table does not list ({e.instance_type})"
        st.warning(f"Endpoint **{e.endpoint_name}** ({e.instance_type}) has had no invocations for "
                   f"{e.hours_idle:.0f} h and has cost {cost} since it was created {e.hours_running:.1f} h ago: "
                   "delete it on the Clean up page if nobody needs it.", icon=":material/savings:")
    if idle:
        st.page_link("views/cleanup.py", label="Open Clean up", icon=":material/delete_sweep:")


def roles_ui() -> None:
    """The three IAM roles, shown in full before anything is created."""
    with st.expander("Provision roles"):
        st.caption("SageMaker, the workflow's Lambda functions and Step Functions each need a role. These are the "
                   "roles this creates, each with one inline policy that names this workspace's resources only; "
                   "an existing role of the project is updated in place. A SCONES_*_ROLE_ARN setting still wins.")
        try:
            plan = b.role_plan()
        except SconesError as exc:
            show_error(exc)
            return
        for role in plan:
            state = f"exists (`{role.arn}`): *Create roles* rewrites its policy" if role.exists else "will be created"
            st.markdown(f"**{role.name}** ({role.kind}) · {state}")
            st.json({"trust_policy": role.trust_policy, "policies": role.policies}, expanded=False)
        sure = st.checkbox("I have read these policies: create or update the three roles", key="roles_confirm")
        if st.button("Create roles", type="primary", disabled=not sure, key="roles_create"):
            try:
                arns = b.provision_roles(plan)
            except SconesError as exc:
                show_error(exc)
            else:  # redraw, so the plan above shows the roles as they now are
                st.session_state["roles_notice"] = ("Roles ready (IAM takes a few seconds to make a new role usable): "
                                                    + ", ".join(f"{kind} `{arn}`" for kind, arn in arns.items()))
                st.rerun()
        done = st.session_state.pop("roles_notice", None)
        if done:
            st.success(done, icon=":material/badge:")


idle_warnings()
if workspace["backend"] == "aws":
    roles_ui()


@st.fragment(run_every=2.0)
def steps_view() -> None:
    try:
        steps = b.step_statuses()
    except SconesError as exc:
        show_error(exc)
        return
    items = list(STEP_TITLES.items())
    for row in range(0, len(items), 3):  # a row at a time: the cards read 1 to 6 in order (column by column
        cols = st.columns(3)            # they read 1, 4, 2, 5, 3, 6 to the keyboard and screen readers)
        for col, (name, (title, blurb)) in zip(cols, items[row:row + 3]):
            status = steps[name]
            with col.container(border=True):
                step_card(name, title, blurb, status)


def step_card(name: str, title: str, blurb: str, status) -> None:
    st.markdown(f"##### {title}")  # "4 · Workflow" wrapped after the dot at 1,000 px as a ####
    if name == "cleanup" and status.state == "in_progress":  # resources made since the last one: nothing runs
        st.markdown(":orange-badge[resources to clean up]", help=blurb)
    else:
        st.markdown(status_badge(status), help=blurb)
    st.caption(status.detail or blurb)
    if name in STEP_PAGES:
        st.page_link(STEP_PAGES[name], label=f"Open {title.split('· ')[1]}", icon=":material/arrow_forward:")


steps_view()
