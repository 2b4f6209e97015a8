"""Chart builders for the Monitor page: DataFrame in, alt.Chart out (no Streamlit, no backend).

The frames come pre-aggregated or sampled from the backend (`MonitorCharts`), so none of these
charts carries more than a few thousand rows whatever the number of captured inferences. The
threshold is always its own `mark_rule` layer.
"""
from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

PASSES, BELOW = "passes", "below threshold"
SIDE_SCALE = alt.Scale(domain=[PASSES, BELOW], range=["#1f77b4", "#d62728"])
OUTCOME_SCALE = alt.Scale(domain=["succeeded", "below threshold", "other error", "running"],
                          range=["#2e7d32", "#ef6c00", "#c62828", "#1565c0"])
HEIGHT = 240


def time_x(field: str, *columns: pd.Series, domain: tuple[Any, Any] | None = None) -> alt.X:
    """A time axis in UTC (the page states its times in UTC; Vega would draw the browser's zone) with
    24-hour labels as fine as the span (Vega's defaults give 12-hour '03:30' for 15:30), the date in the
    labels when the axis crosses midnight and in the title when it does not. `domain` (start, end): the
    window all the page's time charts share, so they line up; else the span of the data."""
    times = pd.to_datetime(pd.Series(domain) if domain is not None else pd.concat(columns), utc=True)
    if not len(times) or times.isna().all():
        return alt.X(f"{field}:T", title="UTC", scale=alt.Scale(type="utc"),
                     axis=alt.Axis(format="%H:%M:%S", labelOverlap=True))
    lo, hi = times.min(), times.max()
    span = (hi - lo).total_seconds()
    one_day = lo.date() == hi.date()
    if span > 2 * 86400:
        fmt = "%b %d"
    elif not one_day:
        fmt = "%b %d %H:%M"
    else:
        fmt = "%H:%M:%S" if span <= 600 else "%H:%M"
    # The window as Vega-Lite date-times in UTC: a domain of epoch-millisecond numbers drew every point of a
    # point chart at the left edge, with no labels, in Chromium.
    scale = alt.Scale(type="utc", domain=[utc_datetime(lo), utc_datetime(hi)]) if domain is not None \
        else alt.Scale(type="utc")
    return alt.X(f"{field}:T", title=f"UTC, {lo:%Y-%m-%d}" if one_day else "UTC", scale=scale,
                 axis=alt.Axis(format=fmt, labelOverlap=True, labelFlush=True, tickCount=6))


def utc_datetime(moment: pd.Timestamp) -> alt.DateTime:
    """A moment as a Vega-Lite DateTime in UTC, to the millisecond."""
    return alt.DateTime(year=moment.year, month=moment.month, date=moment.day, hours=moment.hour,
                        minutes=moment.minute, seconds=moment.second, milliseconds=moment.microsecond // 1000, utc=True)


def with_when(frame: pd.DataFrame, field: str) -> pd.DataFrame:
    """`when`: the time as UTC text for tooltips (a temporal tooltip would be in the browser's zone)."""
    times = pd.to_datetime(frame[field], utc=True)
    return frame.assign(when=times.dt.strftime("%Y-%m-%d %H:%M:%S UTC"))


WHEN = alt.Tooltip("when:N", title="time")


def threshold_rule(threshold: float, axis: str = "y") -> alt.Chart:
    """The threshold as a dashed rule across the chart (y for confidence-over-time, x for the histogram)."""
    frame = pd.DataFrame({"threshold": [float(threshold)]})
    enc = alt.Y("threshold:Q") if axis == "y" else alt.X("threshold:Q")
    return (alt.Chart(frame).mark_rule(color="#444", strokeDash=[6, 4], size=2)
            .encode(enc, tooltip=[alt.Tooltip("threshold:Q", format=".6~f")]))


# 0% and 100% at their gridlines: the theme's flush end labels sat 100% below its line, so points at 0.998
# looked above 100% (browser audit).
PERCENT_Y = alt.Axis(format=".0%", labelFlush=False)


def confidence_over_time_chart(points: pd.DataFrame, threshold: float, title: str = "Confidence over time",
                               domain: tuple[Any, Any] | None = None) -> alt.LayerChart:
    """Each (sampled) inference as a point, coloured by whether it passes the threshold."""
    dots = (alt.Chart(with_when(points, "time")).mark_circle(size=18, opacity=0.7)
            .encode(x=time_x("time", points["time"], domain=domain),
                    y=alt.Y("confidence:Q", scale=alt.Scale(domain=[0, 1]), axis=PERCENT_Y, title="confidence"),
                    color=alt.Color("side:N", scale=SIDE_SCALE, title=None, legend=alt.Legend(orient="bottom")),
                    tooltip=[WHEN, "label:N", alt.Tooltip("confidence:Q", format=".4f")]))
    return alt.layer(dots, threshold_rule(threshold, "y")).properties(title=title, height=HEIGHT)


def confidence_histogram_chart(histogram: pd.DataFrame, threshold: float) -> alt.LayerChart:
    """Inferences per confidence bin, the part of each bin below the threshold in red."""
    bars = (alt.Chart(histogram).mark_bar()
            .encode(x=alt.X("bin_start:Q", bin="binned", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%"),
                            title="confidence"),
                    x2="bin_end:Q",
                    y=alt.Y("records:Q", stack=True, title="inferences", axis=alt.Axis(format=",d", tickMinStep=1)),
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


def per_bucket_title(text: str, bucket_label: str) -> alt.TitleParams:
    """The bucket on a line of its own (the same on charts side by side, so their plots line up): one line
    was cut to "Share below threshold per se…" at 1,000 px (browser audit)."""
    return alt.TitleParams(text, subtitle=f"per {bucket_label}" if bucket_label else "")


SHARE_SIDES = ["below threshold", "passes"]
SHARE_COLORS = ["#d62728", "#e6e6e6"]  # the passing rest pale: a bucket with traffic and 0% below still shows


def share_below_chart(buckets: pd.DataFrame, bucket_label: str = "", domain: tuple[Any, Any] | None = None) -> alt.Chart:
    """Share of inferences below the threshold in each time bucket, over the passing rest drawn pale (a bucket at
    0% below looked like one without traffic: audit)."""
    below = buckets.assign(side=SHARE_SIDES[0], y0=0.0, y1=buckets["share_below"])
    passes = buckets.assign(side=SHARE_SIDES[1], y0=buckets["share_below"], y1=1.0)
    df = with_when(pd.concat([below, passes], ignore_index=True), "start")
    return (alt.Chart(df).mark_rect()
            .encode(x=time_x("start", df["start"], df["end"], domain=domain), x2="end:T",
                    # A legend below, as the class mix beside it has: both plots then take the same width and
                    # height, and their time axes line up (audit: a legend on the right narrowed one of them).
                    color=alt.Color("side:N", scale=alt.Scale(domain=SHARE_SIDES, range=SHARE_COLORS),
                                    title=None, legend=alt.Legend(orient="bottom")),
                    y=alt.Y("y1:Q", scale=alt.Scale(domain=[0, 1]), axis=PERCENT_Y, title="below threshold"),
                    y2="y0:Q",
                    tooltip=[WHEN, alt.Tooltip("records:Q", format=","),
                             alt.Tooltip("below:Q", format=","), alt.Tooltip("share_below:Q", format=".1%")])
            .properties(title=per_bucket_title("Share below threshold", bucket_label), height=HEIGHT))


def class_mix_chart(class_mix: pd.DataFrame, bucket_label: str = "", domain: tuple[Any, Any] | None = None) -> alt.Chart:
    """Predicted classes per time bucket, as shares of the bucket."""
    df = with_when(stacked(class_mix, "share", "label"), "start")
    return (alt.Chart(df).mark_rect()
            .encode(x=time_x("start", df["start"], df["end"], domain=domain), x2="end:T",
                    y=alt.Y("y1:Q", scale=alt.Scale(domain=[0, 1]), axis=PERCENT_Y, title="share"),
                    y2="y0:Q",
                    # Below, as the share chart beside it has one (see share_below_chart).
                    color=alt.Color("label:N", title=None, legend=alt.Legend(orient="bottom")),
                    tooltip=[WHEN, "label:N", alt.Tooltip("records:Q", format=","),
                             alt.Tooltip("share:Q", format=".1%")])
            .properties(title=per_bucket_title("Class mix", bucket_label), height=HEIGHT))


def outcomes_chart(outcomes: pd.DataFrame, bucket_label: str = "", domain: tuple[Any, Any] | None = None) -> alt.Chart:
    """Workflow executions per time bucket: succeeded, failed on the threshold, failed otherwise."""
    df = with_when(stacked(outcomes, "executions", "outcome", list(OUTCOME_SCALE.domain)), "start")
    return (alt.Chart(df).mark_rect()
            .encode(x=time_x("start", df["start"], df["end"], domain=domain), x2="end:T",
                    y=alt.Y("y1:Q", title="executions"), y2="y0:Q",
                    color=alt.Color("outcome:N", scale=OUTCOME_SCALE, title=None, legend=alt.Legend(orient="bottom")),
                    tooltip=[WHEN, "outcome:N", "executions:Q"])
            .properties(title=per_bucket_title("Workflow outcomes", bucket_label), height=HEIGHT))


def bucket_label(seconds: int) -> str:
    """120 -> '2 minutes', 3600 -> 'hour'."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0 and seconds >= size:
            n = seconds // size
            return unit if n == 1 else f"{n} {unit}s"
    return f"{seconds} s"
