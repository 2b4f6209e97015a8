"""Scones Unlimited operator dashboard: `streamlit run app.py` (or `make run`)."""
from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="Scones Unlimited", page_icon=":material/bakery_dining:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/stage.py", title="Stage data", icon=":material/inventory_2:", url_path="stage"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
    st.Page("pages/deploy.py", title="Deploy", icon=":material/rocket_launch:", url_path="deploy"),
    st.Page("pages/workflow.py", title="Workflow", icon=":material/account_tree:", url_path="workflow"),
    st.Page("pages/monitor.py", title="Monitor", icon=":material/monitoring:", url_path="monitor"),
    st.Page("pages/cleanup.py", title="Clean up", icon=":material/delete_sweep:", url_path="cleanup"),
]

st.navigation(PAGES).run()
