"""Chart builders for the deploy page: DataFrame in, alt.Chart out (no Streamlit, no backend)."""
from __future__ import annotations

from typing import Sequence

import altair as alt
import pandas as pd

ROW_PX = 28  # one bar per class
AXIS_PX = 60  # the probability axis, its labels and title


def probabilities_frame(classes: Sequence[str], probabilities: Sequence[float]) -> pd.DataFrame:
    """One row per class, in the model's class order: class, probability, predicted (the arg-max)."""
    if len(classes) != len(probabilities):
        raise ValueError(f"{len(probabilities)} probabilities for {len(classes)} classes")
    best = max(range(len(probabilities)), key=lambda i: probabilities[i]) if probabilities else -1
    return pd.DataFrame({
        "class": list(classes),
        "probability": [float(p) for p in probabilities],
        "predicted": [i == best for i in range(len(classes))],
    }, columns=["class", "probability", "predicted"])


def probability_chart_height(df: pd.DataFrame) -> int:
    """Pixels the chart needs in all (Streamlit does not size a layered chart from its spec)."""
    return max(1, len(df)) * ROW_PX + AXIS_PX


def probability_chart(df: pd.DataFrame) -> alt.LayerChart:
    """Horizontal bars on a fixed 0..1 axis, classes in the model's order, the predicted one highlighted."""
    order = list(df["class"])
    base = alt.Chart(df).encode(
        y=alt.Y("class:N", sort=order, title=None),
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%"), title="probability"),
        tooltip=["class", alt.Tooltip("probability:Q", format=".4f")],
    )
    bars = base.mark_bar().encode(
        color=alt.Color("predicted:N", scale=alt.Scale(domain=[True, False], range=["#1f77b4", "#c7c7c7"]), legend=None),
    )
    labels = base.mark_text(align="left", dx=3).encode(text=alt.Text("probability:Q", format=".1%"))
    return alt.layer(bars, labels).properties(height=max(1, len(df)) * ROW_PX)
