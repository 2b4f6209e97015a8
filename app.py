"""Scones Unlimited operator dashboard: `streamlit run app.py` (or `make run`)."""
from __future__ import annotations

import streamlit as st

from backend.api import SconesError
from ui.widgets import show_error

# The pages live in views/, not pages/: with a pages/ folder beside app.py, Streamlit also runs its
# older folder-based mode, and the first visit to a deep link (say /workflow) after a start showed
# the file names as the navigation instead of this list.
st.set_page_config(page_title="Scones Unlimited", page_icon=":material/bakery_dining:", layout="wide")

PAGES = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/stage.py", title="Stage data", icon=":material/inventory_2:", url_path="stage"),
    st.Page("views/train.py", title="Train", icon=":material/model_training:", url_path="train"),
    st.Page("views/deploy.py", title="Deploy", icon=":material/rocket_launch:", url_path="deploy"),
    st.Page("views/workflow.py", title="Workflow", icon=":material/account_tree:", url_path="workflow"),
    st.Page("views/monitor.py", title="Monitor", icon=":material/monitoring:", url_path="monitor"),
    st.Page("views/cleanup.py", title="Clean up", icon=":material/delete_sweep:", url_path="cleanup"),
]

try:
    page = st.navigation(PAGES)
    if st.session_state.get("_page_shown") != page.url_path:
        # A question a page asked (keys ending in ':question', such as Deploy's "delete it anyway?") is answered
        # on that page or dropped: it is not waiting there when the page is opened again later.
        for key in [k for k in st.session_state if str(k).endswith(":question")]:
            del st.session_state[key]
    st.session_state["_page_shown"] = page.url_path
    page.run()
except SconesError as exc:  # a backend error a page did not expect (AWS throttling, a lost session...): one
    show_error(exc)         # sentence where the page stopped, as every page does for the errors it expects
