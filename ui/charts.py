"""Chart builders: DataFrame in, alt.Chart out; no Streamlit here, so they test on their own."""
from __future__ import annotations

import altair as alt
import pandas as pd


def counts_frame(counts: dict[str, dict[str, int]]) -> pd.DataFrame:
    """{split: {class: n}} -> long table with columns split, class, images."""
    rows = [{"split": s, "class": c, "images": n} for s, per in counts.items() for c, n in per.items()]
    return pd.DataFrame(rows, columns=["split", "class", "images"])


def class_balance_chart(df: pd.DataFrame) -> alt.Chart:
    """Grouped bars: images per class, one group per split."""
    return (
        alt.Chart(df, title="Class balance")
        .mark_bar()
        .encode(
            x=alt.X("class:N", title=None, axis=alt.Axis(labelAngle=0)),
            xOffset="split:N",
            y=alt.Y("images:Q", title="images"),
            color=alt.Color("split:N", title="split", scale=alt.Scale(domain=["train", "test"])),
            tooltip=["split", "class", "images"],
        )
        .properties(height=260)
    )
