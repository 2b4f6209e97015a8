"""Small widgets shared by pages. They draw; they never call the backend themselves."""
from __future__ import annotations

from typing import Any

import streamlit as st

from backend.api import SconesError, StepStatus
from backend.images import displayable

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


def show_image(where: Any, data: bytes, caption: str, width: int) -> None:
    """st.image for any image someone sent: 16-bit ones scaled, one that cannot be drawn named instead."""
    shown = displayable(data)
    if shown is None:
        where.caption(f"{caption} (cannot be drawn)")
    else:
        where.image(shown, caption=caption, width=width)


def image_grid(items: list[tuple[bytes, str]], columns: int = 8, width: int = 72) -> None:
    """items: (image bytes, caption); images are shown pixelated at a readable size."""
    for start in range(0, len(items), columns):
        cols = st.columns(columns)
        for col, (data, caption) in zip(cols, items[start:start + columns]):
            show_image(col, data, caption, width)
