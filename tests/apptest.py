"""The whole dashboard (navigation included) under Streamlit's AppTest, switched to one page."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]


def app_page(view: str = "home") -> AppTest:
    """`view`: a file stem in views/ (home, stage, train, deploy, workflow, monitor, cleanup)."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    if view != "home":
        at.switch_page(f"views/{view}.py")
    return at
