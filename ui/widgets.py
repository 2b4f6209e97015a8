"""Small widgets shared by pages. They draw; they never call the backend themselves."""
from __future__ import annotations

import streamlit as st

from backend.api import SconesError, StepStatus

STATE_BADGES = {
    "not_started": ("gray", "not started"),
    "in_progress": ("blue", "in progress"),
    "done": ("green", "done"),
    "failed": ("red", "failed"),
}


def status_badge(status: StepStatus) -> str:
    color, text = STATE_BADGES.get(status.state, ("gray", status.state))
    return f":{color}-badge[{text}]"


def show_error(exc: SconesError) -> None:
    st.error(str(exc), icon=":material/error:")


def image_grid(items: list[tuple[bytes, str]], columns: int = 8, width: int = 72) -> None:
    """items: (image bytes, caption); images are shown pixelated at a readable size."""
    for start in range(0, len(items), columns):
        cols = st.columns(columns)
        for col, (data, caption) in zip(cols, items[start:start + columns]):
            col.image(data, caption=caption, width=width)
