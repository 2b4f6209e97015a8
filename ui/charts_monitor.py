"""Chart builders for the Monitor page: DataFrame in, alt.Chart out (no Streamlit, no backend).

The frames come pre-aggregated or sampled from the backend (`MonitorCharts`), so none of these
charts carries more than a few thousand rows whatever the number of captured inferences. The
threshold is always its own `mark_rule` layer.
"""
from __future__ import annotations

import altair as alt
import pandas as pd

PASSES, BELOW = "passes", "below threshold"
SIDE_SCALE = alt.Scale(domain=[PASSES, BELOW], range=["#1f77b4", "#d62728"])
OUTCOME_SCALE = alt.Scale(domain=["succeeded", "below threshold", "other error", "running"],
                          range=["#2e7d32", "#ef6c00", "#c62828", "#1565c0"])
HEIGHT = 240


def threshold_rule(threshold: float, axis: str = "y") -> alt.Chart:
    """The threshold as a dashed rule across the chart (y for confidence-over-time, x for the histogram)."""
    frame = pd.DataFrame({"threshold": [float(threshold)]})
    enc = alt.Y("threshold:Q") if axis == "y" else alt.X("threshold:Q")
    return (alt.Chart(frame).mark_rule(color="#444", strokeDash=[6, 4], size=2)
            .encode(enc, tooltip=[alt.Tooltip("threshold:Q", format=".2f")]))


def confidence_over_time_chart(points: pd.DataFrame, threshold: float, title: str = "Confidence over time") -> alt.LayerChart:
    """Each (sampled) inference as a point, coloured by whether it passes the threshold."""
    dots = (alt.Chart(points).mark_circle(size=18, opacity=0.7)
            .encode(x=alt.X("time:T", title=None),
                    y=alt.Y("confidence:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%"), title="confidence"),
                    color=alt.Color("side:N", scale=SIDE_SCALE, title=None, legend=alt.Legend(orient="bottom")),
                    tooltip=[alt.Tooltip("time:T", format="%Y-%m-%d %H:%M:%S"), "label:N",
                             alt.Tooltip("confidence:Q", format=".4f")]))
    return alt.layer(dots, threshold_rule(threshold, "y")).properties(title=title, height=HEIGHT)


def confidence_histogram_chart(histogram: pd.DataFrame, threshold: float) -> alt.LayerChart:
    """Inferences per confidence bin, the part of each bin below the threshold in red."""
    bars = (alt.Chart(histogram).mark_bar()
            .encode(x=alt.X("bin_start:Q", bin="binned", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%"),
                            title="confidence"),
                    x2="bin_end:Q",
                    y=alt.Y("records:Q", stack=True, title="inferences"),
                    color=alt.Color("side:N", scale=SIDE_SCALE, title=None, legend=alt.Legend(orient="bottom")),
                    tooltip=[alt.Tooltip("bin_start:Q", format=".2f", title="from"),
                             alt.Tooltip("bin_end:Q", format=".2f", title="to"), "side:N",
                             alt.Tooltip("records:Q", format=",")]))
    return alt.layer(bars, threshold_rule(threshold, "x")).properties(title="Confidence histogram", height=HEIGHT)


def stacked(frame: pd.DataFrame, value: str, group: str, order: list[str] | None = None) -> pd.DataFrame:
    """Add y0/y1: each group's stretch of its time bucket, stacked in `order` (time buckets vary in width,
    so bars are drawn as rectangles from start to end, already stacked)."""
    df = frame.copy()
    if order:
        df["_order"] = df[group].map({g: i for i, g in enumerate(order)}).fillna(len(order))
    else:
        df["_order"] = df[group].astype(str)
    df = df.sort_values(["start", "_order"]).drop(columns="_order")
    df["y1"] = df.groupby("start")[value].cumsum()
    df["y0"] = df["y1"] - df[value]
    return df


def share_below_chart(buckets: pd.DataFrame, bucket_label: str = "") -> alt.Chart:
    """Share of inferences below the threshold in each time bucket."""
    df = buckets.assign(zero=0.0)
    return (alt.Chart(df).mark_rect(color="#d62728")
            .encode(x=alt.X("start:T", title=None), x2="end:T",
                    y=alt.Y("share_below:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%"),
                            title="below threshold"), y2="zero:Q",
                    tooltip=[alt.Tooltip("start:T", format="%Y-%m-%d %H:%M:%S"), alt.Tooltip("records:Q", format=","),
                             alt.Tooltip("below:Q", format=","), alt.Tooltip("share_below:Q", format=".1%")])
            .properties(title=f"Share below threshold{' per ' + bucket_label if bucket_label else ''}", height=HEIGHT))


def class_mix_chart(class_mix: pd.DataFrame, bucket_label: str = "") -> alt.Chart:
    """Predicted classes per time bucket, as shares of the bucket."""
    return (alt.Chart(stacked(class_mix, "share", "label")).mark_rect()
            .encode(x=alt.X("start:T", title=None), x2="end:T",
                    y=alt.Y("y1:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%"), title="share"),
                    y2="y0:Q",
                    color=alt.Color("label:N", title=None, legend=alt.Legend(orient="bottom")),
                    tooltip=[alt.Tooltip("start:T", format="%Y-%m-%d %H:%M:%S"), "label:N",
                             alt.Tooltip("records:Q", format=","), alt.Tooltip("share:Q", format=".1%")])
            .properties(title=f"Class mix{' per ' + bucket_label if bucket_label else ''}", height=HEIGHT))


def outcomes_chart(outcomes: pd.DataFrame, bucket_label: str = "") -> alt.Chart:
    """Workflow executions per time bucket: succeeded, failed on the threshold, failed otherwise."""
    return (alt.Chart(stacked(outcomes, "executions", "outcome", list(OUTCOME_SCALE.domain))).mark_rect()
            .encode(x=alt.X("start:T", title=None), x2="end:T",
                    y=alt.Y("y1:Q", title="executions"), y2="y0:Q",
                    color=alt.Color("outcome:N", scale=OUTCOME_SCALE, title=None, legend=alt.Legend(orient="bottom")),
                    tooltip=[alt.Tooltip("start:T", format="%Y-%m-%d %H:%M:%S"), "outcome:N", "executions:Q"])
            .properties(title=f"Workflow outcomes{' per ' + bucket_label if bucket_label else ''}", height=HEIGHT))


def bucket_label(seconds: int) -> str:
    """120 -> '2 minutes', 3600 -> 'hour'."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0 and seconds >= size:
            n = seconds // size
            return unit if n == 1 else f"{n} {unit}s"
    return f"{seconds} s"
