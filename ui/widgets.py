"""Small widgets shared by pages. They draw; they never call the backend themselves."""
from __future__ import annotations

from datetime import datetime, timezone
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


# Threshold sliders move by 0.001 so a threshold set elsewhere (scones workflow deploy --threshold 0.935) is
# shown and used as it is, not rounded to 0.94 in the label while 0.935 decides.
THRESHOLD_STEP, THRESHOLD_FORMAT = 0.001, "%.3f"


def threshold_text(value: float) -> str:
    """0.93 -> '0.93', 0.935 -> '0.935', 0.5 -> '0.50': the decimals it has (at least 2, at most 6)."""
    whole, _, decimals = f"{value:.6f}".rstrip("0").partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}"


def status_badge(status: StepStatus) -> str:
    color, text = STATE_BADGES.get(status.state, ("gray", status.state))
    return f":{color}-badge[{text}]"


def utc_time(iso: str) -> str:
    """An ISO 8601 time as the pages write times: 2026-11-29T02:47:05.330Z -> 2026-11-29 02:47:05 UTC."""
    try:
        when = datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return str(iso)
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def show_error(exc: SconesError) -> None:
    st.error(str(exc), icon=":material/error:")


def show_image(where: Any, data: bytes, caption: str, width: int | str) -> None:
    """st.image for any image someone sent: 16-bit ones scaled, one that cannot be drawn named instead."""
    shown = displayable(data)
    if shown is None:
        where.caption(f"{caption} (cannot be drawn)")
    else:
        where.image(shown, caption=caption, width=width)


def image_grid(items: list[tuple[bytes, str]], columns: int = 8) -> None:
    """items: (image bytes, caption); each image as wide as its column: a fixed width ran the grid past the
    page's right edge at 1,000 px (browser audit)."""
    for start in range(0, len(items), columns):
        cols = st.columns(columns)
        for col, (data, caption) in zip(cols, items[start:start + columns]):
            show_image(col, data, caption, "stretch")
