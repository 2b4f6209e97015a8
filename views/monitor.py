"""Monitor: captured confidence against the workflow's threshold, and what another threshold would do.

Everything comes from the endpoint's data capture (Model Monitor's JSONL, the same on both
backends), read incrementally by the backend; the charts get aggregated or sampled frames only.
"""
from __future__ import annotations

import time

import streamlit as st

from backend.api import SconesError, human_size
from ui.charts_monitor import (
    bucket_label, class_mix_chart, confidence_histogram_chart, confidence_over_time_chart, outcomes_chart,
    share_below_chart,
)
from ui.state import backend, kept
from ui.widgets import THRESHOLD_FORMAT, THRESHOLD_STEP, image_grid, show_error, threshold_text

WINDOWS = {"Last 15 minutes": 900, "Last hour": 3600, "Last 24 hours": 86400, "Last 7 days": 7 * 86400,
           "Everything captured": None}
CHART_PX = 330  # a chart with its title and legend (Streamlit does not size layered charts from the spec)
TABLE_ROWS = 500
LOWEST = 12

st.title("Monitor")
st.caption("Confidence of every captured inference against the workflow's threshold. Move the threshold to see "
           "how many inferences, and workflow executions, would pass. Times are UTC.")

try:
    b = backend()
    endpoints = b.monitored_endpoints()
    workflow_threshold = b.monitor_threshold()
except SconesError as exc:
    show_error(exc)
    st.stop()

try:  # endpoints with capture off and nothing captured are not listed: say which, and why
    uncaptured = [e.endpoint_name for e in b.list_endpoints() if e.endpoint_name not in endpoints]
except SconesError:
    uncaptured = []
not_listed = (f" Not listed: {', '.join(uncaptured)} (capture off, nothing captured): deploy again with capture "
              "on (Deploy page, or `scones deploy --capture-percent 100`) to monitor it.") if uncaptured else ""

if not endpoints:
    st.info("No captured data yet: deploy an endpoint with data capture on the Deploy page, then send it traffic "
            "(the Workflow page runs batches)." + not_listed)
    st.stop()
if not_listed:
    st.caption(not_listed.strip())


def controls_ui() -> tuple[str, int | None, float]:
    """The endpoint, the window (seconds back from now; None: everything) and the threshold to try."""
    c1, c2, c3 = st.columns([2, 1.6, 2])  # "Last 24 hours" whole at 1,000 px (it read "Last 24 hou")
    for key, options in (("mon_endpoint", endpoints), ("mon_window", list(WINDOWS))):
        if st.session_state.get(f"_kept:{key}", options[0]) not in options:  # an endpoint since deleted
            st.session_state.pop(f"_kept:{key}")
    # Kept while you visit other pages; the threshold starts over from the workflow's when that changes.
    kept("mon_endpoint", endpoints[0])
    kept("mon_window", "Last 24 hours")
    kept("mon_threshold", float(workflow_threshold), follow=float(workflow_threshold))
    endpoint = c1.selectbox("Endpoint", endpoints, key="mon_endpoint")
    window = c2.selectbox("Time window", list(WINDOWS), key="mon_window")
    threshold = c3.slider("Threshold", 0.0, 1.0, step=THRESHOLD_STEP, format=THRESHOLD_FORMAT, key="mon_threshold",
                          help=f"The workflow's threshold is {threshold_text(workflow_threshold)}; moving this "
                               "changes only the counts and charts below.")
    return endpoint, WINDOWS[window], threshold


def status_ui(status) -> None:
    if status.state == "paused":
        since = f" since {status.paused_since}" if status.paused_since else ""
        st.warning(f"Capture is paused on {status.endpoint}{since}: {status.reason} "
                   f"{status.dropped:,} answered requests were not captured.", icon=":material/pause_circle:")
    elif status.state == "off":
        st.info(status.reason, icon=":material/info:")
    used = status.used_bytes / status.max_bytes if status.max_bytes else 0.0
    parts = [f"capture of {status.sampling_percent}% of requests to `{status.destination}`" if status.enabled
             else f"captured data in `{status.destination}`",
             f"{human_size(status.used_bytes)} in {status.files:,} files ({used:.1%} of the endpoint's {human_size(status.max_bytes)} cap)",
             f"retention {status.retention_days:g} days"]
    if status.broken_lines:
        parts.append(f":orange[{status.broken_lines:,} broken line{'' if status.broken_lines == 1 else 's'} skipped]")
    if status.skipped_records:
        parts.append(f"{status.skipped_records:,} records without probabilities")
    if status.newest:
        parts.append(f"newest {status.newest}")
    st.caption(" · ".join(parts))
    if status.before_endpoint:
        st.info(f"{status.before_endpoint:,} of these inferences are older than the endpoint {status.endpoint} itself: an "
                "earlier endpoint of the same name, deleted since (perhaps with another model), captured them under "
                "the same name, and they are counted here with its own. Choose a time window that starts after "
                "the endpoint was created to see its own alone.", icon=":material/history:")


def metrics_ui(charts, threshold: float) -> None:
    c = st.columns([1, 1.1, 1.1, 1.5])  # the longest label the most room: it read "Executions pas…" at 1,000 px
    c[0].metric("Inferences", f"{charts.records:,}",
                help="Inferences in the endpoint's data capture in this window (a sample when capture takes less than "
                     "100% of requests). Executions are read from the workflow's history: they count even when "
                     "capture is off, sampled, or paused.")
    share = charts.below / charts.records if charts.records else 0.0
    c[1].metric("Below threshold", f"{charts.below:,}", f"{share:.1%} of them", delta_color="off", delta_arrow="off")
    at = threshold_text(threshold)
    c[2].metric(f"Would pass at {at}", f"{charts.passing:,}")
    c[3].metric("Executions passing", f"{charts.executions_passing:,} of {charts.executions:,}", f"at {at}",
                delta_color="off", delta_arrow="off",  # the threshold below: in the label it was cut at 1,000 px
                help="Workflow executions that would pass at this threshold, of those whose classify step ran (they "
                     "carry a confidence); executions that failed "
                     f"for other reasons ({charts.executions_failed_other:,}) fail at any threshold.")


def charts_ui(charts, status) -> None:
    if charts.records == 0:
        if status.enabled and status.sampling_percent == 0:
            st.info(f"Capture on {status.endpoint} samples 0% of requests, so nothing is captured whatever the traffic: "
                    "deploy it again with a capture percentage above 0 (Deploy page, or `scones deploy "
                    "--capture-percent 100`).")
        elif status.state == "off":  # what was captured before may lie outside the window (audit: no hint)
            st.info(f"No inference captured in this window, and no new ones will be: {status.reason} Widen the "
                    "window to see what was captured earlier.")
        else:
            st.info("No inference captured in this window: widen the window, or send the endpoint traffic.")
    per = bucket_label(charts.bucket_seconds)
    # One time axis for every time chart (what the buckets and the executions span), so they line up.
    starts = [f["start"] for f in (charts.buckets, charts.outcomes) if len(f)]
    ends = [f["end"] for f in (charts.buckets, charts.outcomes) if len(f)]
    domain = (min(x.min() for x in starts), max(x.max() for x in ends)) if starts else None
    left, right = st.columns(2)
    sampled = f" ({len(charts.points):,} of {charts.points_from:,} shown)" if len(charts.points) < charts.points_from else ""
    left.altair_chart(confidence_over_time_chart(charts.points, charts.threshold, f"Confidence over time{sampled}",
                                                 domain=domain), width="stretch", height=CHART_PX)
    right.altair_chart(confidence_histogram_chart(charts.histogram, charts.threshold), width="stretch", height=CHART_PX)
    left, right = st.columns(2)
    left.altair_chart(share_below_chart(charts.buckets, per, domain=domain), width="stretch", height=CHART_PX)
    right.altair_chart(class_mix_chart(charts.class_mix, per, domain=domain), width="stretch", height=CHART_PX)
    if len(charts.outcomes):
        st.altair_chart(outcomes_chart(charts.outcomes, per, domain=domain), width="stretch", height=CHART_PX)
    else:
        st.caption("No workflow execution calls this endpoint in this window.")


def lowest_ui(endpoint: str, since: float | None) -> None:
    st.markdown("**Lowest confidence**")
    images = b.lowest_confidence(endpoint, LOWEST, since)
    if not images:
        st.caption("Nothing captured in this window.")
        return
    with_image = [(im.image, f"{im.label} {im.confidence:.1%} · " + ", ".join(f"{k} {p:.2f}" for k, p in im.probabilities.items()))
                  for im in images if im.image]
    if with_image:
        image_grid(with_image, columns=6)
    if len(with_image) < len(images):
        st.caption(f"{len(images) - len(with_image)} of these have no captured input (capture of Output only).")


def table_ui(endpoint: str, since: float | None, threshold: float) -> None:
    table = b.capture_table(endpoint, since, None, threshold, limit=TABLE_ROWS)
    st.markdown(f"**Captured inferences** (newest {min(len(table), TABLE_ROWS):,})")
    # What an operator reads first comes first, with one format for every probability: at 1,000 px the table
    # showed the time, the event id and one probability, and 0.024 stood beside 0.5295 (audit).
    probabilities = [c for c in table.columns if c.startswith("p_")]
    first = ["inference_time", "predicted", "confidence", "passes"]
    order = first + probabilities + [c for c in table.columns if c not in first and c not in probabilities]
    st.dataframe(table.iloc[::-1][order], hide_index=True, height=280, column_config={
        **{c: st.column_config.NumberColumn(format="%.4f") for c in ["confidence", *probabilities]}})
    st.download_button("Download CSV (the whole window)", data=lambda: b.capture_table(endpoint, since, None, threshold)
                       .to_csv(index=False), file_name=f"capture-{endpoint}.csv", mime="text/csv", on_click="ignore",
                       key="mon_csv", icon=":material/download:")


endpoint, window_seconds, threshold = controls_ui()
try:
    progress = b.refresh_capture(endpoint, background=True)
    status = None if progress.running else b.capture_status(endpoint)
except SconesError as exc:
    show_error(exc)
    st.stop()


def cadence(progress, status) -> float | None:
    """Poll while the capture is being read or traffic arrives; slowly while the endpoint serves."""
    if progress.running:
        return 1.0
    if status is not None and status.receiving:
        return 3.0
    return 15.0 if status is not None and status.endpoint_status == "InService" else None


every = cadence(progress, status)


@st.fragment(run_every=every)
def monitor_view() -> None:
    try:
        progress = b.refresh_capture(endpoint, background=True)
        if progress.running:
            done = progress.bytes_done / progress.bytes_total if progress.bytes_total else 0.0
            st.progress(done, text=f"Reading the capture of {endpoint}: {human_size(progress.bytes_done)} of "
                                   f"{human_size(progress.bytes_total)} (read once, then kept as a compact index).")
            return
        if progress.error:
            st.error(f"Reading the capture failed: {progress.error}")
        status = b.capture_status(endpoint)
        if cadence(progress, status) != every:
            st.rerun()  # traffic started or stopped: poll at the new pace
        enforced = b.enforce_capture_limits(endpoint, force=False)
        deleted = enforced.get("endpoints", {}).get(endpoint, {}).get("deleted_files", 0)
        if deleted:
            st.toast(f"Deleted {deleted} capture file(s) past the retention or the size cap.")
        since = time.time() - window_seconds if window_seconds else None
        status_ui(status)
        charts = b.monitor_charts(endpoint, since, None, threshold)
        metrics_ui(charts, threshold)
        charts_ui(charts, status)
        lowest_ui(endpoint, since)
        table_ui(endpoint, since, threshold)
    except SconesError as exc:
        show_error(exc)


monitor_view()
