"""MonitoringService over hand-made capture in a real local workspace: counts against a brute-force
count, the CLI summary's keys, chart frames, images, retention and the size cap, execution outcomes."""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import replace

import altair as alt
import numpy as np
import pytest

from backend.api import THRESHOLD_ERROR, Execution, ResourceNotFound, StateMachine, ValidationError
from backend.capture import Columns
from backend.settings import load_settings
from backend.monitoring import MonitoringService, build_chart_data, capture_limits, ready_file_capture_state
from tests.monitor.capture_files import T0, brute_force, write_file, write_records
from tests.monitor.conftest import MonitorBackend

EP = "ep-hand"
THRESHOLDS = [0.0, 0.3, 0.5, 0.7, 0.93, 0.9300000000000002, 0.99, 1.0]


@pytest.fixture
def captured(mb):
    bucket_dir = mb.store.bucket_dir(mb.objects.bucket)
    files = write_records(bucket_dir, EP, 300, per_file=20, seed=5)
    return mb, bucket_dir, files


def test_threshold_counts_match_a_brute_force_count(captured):
    mb, bucket_dir, _ = captured
    truth = brute_force(bucket_dir, EP)
    assert len(truth) == 300
    rng = random.Random(3)
    for t in THRESHOLDS + [rng.random() for _ in range(5)]:
        below = sum(r["confidence"] < t for r in truth)
        counts = mb.threshold_counts(EP, t)
        assert (counts["records"], counts["below_threshold"], counts["passing"]) == (300, below, 300 - below), t
        summary = mb.monitor_summary(EP, threshold=t)
        assert summary["below_threshold"] == below and summary["share_below"] == below / 300
        for label, index in (("class 0", 0), ("class 1", 1)):  # no model record: classes are numbered
            mine = [r for r in truth if int(np.argmax(r["probs"])) == index]
            assert summary["by_label"][label] == {"records": len(mine),
                                                  "below_threshold": sum(r["confidence"] < t for r in mine)}
        charts = mb.monitor_charts(EP, threshold=t)
        assert (charts.records, charts.below) == (300, below)
        assert int(charts.histogram[charts.histogram["side"] == "below threshold"]["records"].sum()) == below
        assert int(charts.buckets["below"].sum()) == below
        table = mb.capture_table(EP, threshold=t)
        assert int((~table["passes"]).sum()) == below


def test_summary_has_the_cli_keys_utc_since_and_nulls_without_records(captured):
    mb, bucket_dir, _ = captured
    confs = sorted(r["confidence"] for r in brute_force(bucket_dir, EP))
    s = mb.monitor_summary(threshold=0.5)  # every endpoint
    assert {"records", "below_threshold", "share_below", "by_label", "confidence", "broken_lines"} <= set(s)
    assert s["records"] == 300 and s["endpoints"] == [EP] and s["broken_lines"] == 0
    assert s["confidence"] == {"min": confs[0], "p50": float(np.median(confs)), "mean": pytest.approx(np.mean(confs))}
    json.dumps(s)  # the CLI prints it as is
    later = mb.monitor_summary(EP, 0.5, since="2026-01-01T00:04:00Z")  # records are one a second from T0
    assert later["records"] == 300 - 240 and later["since"] == "2026-01-01T00:04:00Z"
    naive = mb.monitor_summary(EP, 0.5, since="2026-01-01T00:04:00")  # no offset: UTC
    assert naive["records"] == 60
    none = mb.monitor_summary(EP, 0.5, since="2027-01-01T00:00:00Z")
    assert none["records"] == 0 and none["share_below"] is None
    assert none["confidence"] == {"min": None, "p50": None, "mean": None}
    with pytest.raises(ValidationError, match="ISO 8601"):
        mb.monitor_summary(EP, 0.5, since="last tuesday")
    with pytest.raises(ResourceNotFound, match="No captured data for endpoint 'nope'"):
        mb.monitor_summary("nope")
    assert mb.monitor_threshold() == 0.93  # no workflow: the configured default


def test_the_monitor_step_is_done_once_any_process_has_read_the_capture(captured, home):
    """'scones monitor' reads capture in a process of its own: the Home page and 'scones status' in another
    process said 'open Monitor to read it' for ever after."""
    from tests.monitor.conftest import monitor_backend

    mb, _, _ = captured
    assert monitor_backend(home).step_statuses()["monitor"].state == "in_progress"
    assert mb.monitor_summary(EP, threshold=0.5)["records"] == 300  # as the CLI does
    step = monitor_backend(home).step_statuses()["monitor"]  # a fresh process: nothing read in it
    assert step.state == "done" and "300 inferences read" in step.detail, step.detail
    # no endpoint of that name now (hand-made capture reads as a deleted endpoint's): Home says so
    assert step.detail.startswith(f"Captured data of {EP} (endpoint deleted, its capture kept); "), step.detail
    # Traffic since: the count read is no longer the latest, so the step says so instead of 'done' (it said
    # '300 inferences read' while hundreds more had been captured).
    write_records(mb.store.bucket_dir(mb.objects.bucket), EP, 40, start=T0 + 1000, per_file=20, seed=6)
    step = monitor_backend(home).step_statuses()["monitor"]
    assert step.state == "in_progress" and "300 inferences read, more captured since" in step.detail, step.detail
    assert monitor_backend(home).monitor_summary(EP, threshold=0.5)["records"] == 340  # read again (as the CLI does)
    step = monitor_backend(home).step_statuses()["monitor"]
    assert step.state == "done" and "340 inferences read" in step.detail, step.detail


def test_broken_lines_are_reported(mb):
    bucket_dir = mb.store.bucket_dir(mb.objects.bucket)
    write_records(bucket_dir, EP, 5, per_file=5)
    write_file(bucket_dir, EP, T0 + 100, [b"garbage\n", b'{"half": \n'])
    assert mb.monitor_summary(EP)["broken_lines"] == 2
    assert mb.capture_status(EP).broken_lines == 2


def test_lowest_confidence_images_and_table_handles(captured):
    mb, bucket_dir, _ = captured
    truth = sorted(brute_force(bucket_dir, EP), key=lambda r: r["confidence"])
    low = mb.lowest_confidence(EP, 8)
    assert [im.confidence for im in low] == [r["confidence"] for r in truth[:8]]
    by_event = {r["event"]: r for r in truth}
    for im in low:
        assert im.image == by_event[im.event_id]["image"] and im.image.startswith(b"\x89PNG")
        assert list(im.probabilities.values()) == by_event[im.event_id]["probs"]
    table = mb.capture_table(EP, threshold=0.5)
    assert list(table.columns) == ["inference_time", "event_id", "p_class 0", "p_class 1", "predicted", "confidence",
                                   "passes", "image_ref"]
    assert table["inference_time"].is_monotonic_increasing and str(table["inference_time"].dt.tz) == "UTC"
    row = table.iloc[123]
    assert mb.capture_image(row["image_ref"]) == by_event[row["event_id"]]["image"]
    newest = mb.capture_table(EP, threshold=0.5, limit=10)
    assert list(newest["event_id"]) == list(table["event_id"][-10:])


def test_the_lowest_confidence_grid_shows_each_image_once(mb):
    """A batch of random test images sends some several times: the same image's answers took 4 of 12 tiles (audit)."""
    from tests.monitor.capture_files import png, record_line

    bucket_dir = mb.store.bucket_dir(mb.objects.bucket)
    a, b, c = png(1), png(2), png(3)
    sent = [(a, 0.51), (a, 0.51), (b, 0.6), (a, 0.51), (c, 0.7), (None, 0.55), (None, 0.55), (None, 0.56)]
    lines = [record_line([p, 1 - p], T0 + i, image)[0] for i, (image, p) in enumerate(sent)]
    write_file(bucket_dir, EP, T0, lines)
    low = mb.lowest_confidence(EP, 5)
    assert [(im.image, im.confidence) for im in low] == [(a, 0.51), (None, 0.55), (None, 0.56), (b, 0.6), (c, 0.7)]
    assert [im.confidence for im in mb.lowest_confidence(EP, 2)] == [0.51, 0.55]


def test_chart_frames_stay_small_at_a_million_records():
    n = 1_000_000
    rng = np.random.default_rng(1)
    p = rng.beta(8, 1.2, n)
    probs = np.stack([p, 1 - p], axis=1)
    cols = Columns(T0 + np.arange(n, dtype=np.float64), np.zeros(n, "S1"), probs, probs.max(axis=1),
                   probs.argmax(axis=1).astype(np.int16), np.zeros(n, np.int32), np.zeros(n, np.int64),
                   np.zeros(n, np.int32), np.zeros(n, np.int8))
    charts = build_chart_data(cols, ("bicycle", "motorcycle"), 0.93, None, None, [], max_points=4000)
    below = int((probs.max(axis=1) < 0.93).sum())
    assert (charts.records, charts.below) == (n, below)
    assert len(charts.points) <= 4000 and charts.points_from == n
    assert (charts.points["side"] == "below threshold").sum() >= 1000  # the doubtful ones are all kept when they fit
    assert len(charts.buckets) <= 122 and int(charts.buckets["records"].sum()) == n
    assert int(charts.class_mix["records"].sum()) == n and int(charts.histogram["records"].sum()) == n
    widths = (charts.histogram["bin_end"] - charts.histogram["bin_start"]).round(9)
    assert set(widths) == {0.05}  # 5% bins: 2% ones drew hairlines at 1,000 px
    from ui.charts_monitor import (class_mix_chart, confidence_histogram_chart, confidence_over_time_chart,
                                   share_below_chart)
    for chart in (confidence_over_time_chart(charts.points, 0.93), confidence_histogram_chart(charts.histogram, 0.93),
                  share_below_chart(charts.buckets), class_mix_chart(charts.class_mix)):
        chart.to_dict()  # Altair's 5,000-row limit would raise here
    assert alt.data_transformers.options.get("max_rows", 5000) == 5000


def test_buckets_fit_the_data_not_the_whole_window():
    # Three minutes of traffic seen in a 24-hour window: buckets a few seconds wide, not one 15-minute band.
    n = 180
    probs = np.stack([np.full(n, 0.8), np.full(n, 0.2)], axis=1)
    cols = Columns(T0 + np.arange(n, dtype=np.float64), np.zeros(n, "S1"), probs, probs.max(axis=1),
                   probs.argmax(axis=1).astype(np.int16), np.zeros(n, np.int32), np.zeros(n, np.int64),
                   np.zeros(n, np.int32), np.zeros(n, np.int8))
    charts = build_chart_data(cols, ("bicycle", "motorcycle"), 0.5, T0 + n - 86400, T0 + n, [])
    assert charts.bucket_seconds <= 5 and len(charts.buckets) >= 36
    assert int(charts.buckets["records"].sum()) == n
    empty = build_chart_data(cols, ("bicycle", "motorcycle"), 0.5, T0 - 86400, T0 - 3600, [])  # no data inside
    assert empty.records == 0 and empty.bucket_seconds == 900  # the window's own buckets


@pytest.mark.parametrize("cap_from", ["service", "endpoint"])
def test_retention_and_size_cap_delete_oldest_files_and_never_recent_ones(mb, monkeypatch, cap_from):
    """The cap is the service's, or the endpoint's own when its process says (an endpoint started under a
    smaller SCONES_CAPTURE_MAX_BYTES than the dashboard's pauses at it, and resumes once this makes room)."""
    bucket_dir = mb.store.bucket_dir(mb.objects.bucket)
    day = 86400
    now = T0 + 40 * day
    old = write_records(bucket_dir, EP, 10, start=T0, per_file=5)  # 40 days old
    mid = write_records(bucket_dir, EP, 30, start=T0 + 35 * day, per_file=5, seed=2)  # 5 days old
    fresh = write_file(bucket_dir, EP, now - 30, [], mtime=None)  # written a moment ago (empty: just begun)
    os.utime(fresh, (time.time(), time.time()))
    size_mid = sum(f.path.stat().st_size for f in mid)
    cap = int(size_mid * 0.7)
    svc = MonitoringService(mb, mb.settings.home / "capture_index", retention_days=30,
                            max_bytes=cap if cap_from == "service" else 10 * 1024 ** 3,
                            capture_state=(lambda e: None) if cap_from == "service" else (lambda e: {"max_bytes": cap}),
                            clock=lambda: now)
    assert svc.monitor_summary(EP)["records"] == 40
    out = svc.enforce_capture_limits(EP)["endpoints"][EP]
    assert out["past_retention"] == 2
    assert out["left_bytes"] <= 0.9 * size_mid * 0.7
    gone = {f.key for f in old} | {f.key for f in mid[:out["past_size_cap"]]}
    left = {o.key for o in mb.objects.list("data_capture/") if o.key.endswith(".jsonl")}
    assert not gone & left and str(fresh.relative_to(bucket_dir)) in left
    remaining = [f for f in mid[out["past_size_cap"]:]]
    assert svc.monitor_summary(EP)["records"] == sum(len(f.records) for f in remaining)
    assert svc.enforce_capture_limits(EP)["endpoints"][EP]["deleted_files"] == 0


def test_capture_limits_come_from_the_environment():
    assert capture_limits({}) == (30.0, 10 * 1024 ** 3)
    assert capture_limits({"SCONES_CAPTURE_RETENTION_DAYS": "7", "SCONES_CAPTURE_MAX_BYTES": "1e9"}) == (7.0, 10 ** 9)
    with pytest.raises(ValidationError, match="SCONES_CAPTURE_MAX_BYTES"):
        capture_limits({"SCONES_CAPTURE_MAX_BYTES": "lots"})


class WorkflowFake(MonitorBackend):
    """The workspace with a workflow's records faked: a state machine on EP and its executions."""

    executions: list[Execution] = []

    def describe_state_machine(self, name: str = "scones-workflow") -> StateMachine:
        return StateMachine(name, f"arn:{name}", EP, 0.8, {}, {}, "", "")

    def list_workflow_executions(self, state_machine=None, limit: int = 200) -> list[Execution]:
        return self.executions[:limit]


def execution(i: int, status: str, error: str | None, confidence: float | None) -> Execution:
    start = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(T0 + 10 * i))
    return Execution(f"x{i}", f"arn:x{i}", "scones-workflow", status, start, None, 1.0, error, None, None, None,
                     confidence)


def test_workflow_outcomes_and_executions_that_would_pass(home):
    b = WorkflowFake(load_settings())
    write_records(b.store.bucket_dir(b.objects.bucket), EP, 30, per_file=10)
    b.executions = ([execution(i, "SUCCEEDED", None, 0.95) for i in range(4)]
                    + [execution(10 + i, "FAILED", THRESHOLD_ERROR, 0.6) for i in range(3)]
                    + [execution(20, "FAILED", "States.Timeout", None), execution(21, "RUNNING", None, None)])
    assert b.monitor_threshold() == 0.8  # the workflow's threshold is the default
    charts = b.monitor_charts(EP)
    totals = charts.outcomes.groupby("outcome")["executions"].sum().to_dict()
    assert totals == {"succeeded": 4, "below threshold": 3, "other error": 1, "running": 1}
    assert (charts.executions, charts.executions_passing, charts.executions_failed_other) == (7, 4, 1)
    assert b.threshold_counts(EP, 0.5)["executions_passing"] == 7
    assert b.threshold_counts(EP, 0.96)["executions_passing"] == 0


def test_executions_count_for_the_endpoint_they_called_not_the_one_their_machine_calls_now(home):
    b = WorkflowFake(load_settings())  # its machine calls EP now
    write_records(b.store.bucket_dir(b.objects.bucket), EP, 30, per_file=10)
    write_records(b.store.bucket_dir(b.objects.bucket), "ep-before", 30, per_file=10)
    earlier = [replace(execution(i, "SUCCEEDED", None, 0.95), endpoint="ep-before") for i in range(3)]
    unknown = [execution(10 + i, "SUCCEEDED", None, 0.95) for i in range(2)]  # from before endpoints were noted
    b.executions = earlier + unknown + [replace(execution(20, "SUCCEEDED", None, 0.95), endpoint=EP)]
    assert b.monitor_charts(EP).executions == 3  # the machine's guess for the unknown two, and the one noted
    assert b.monitor_charts("ep-before").executions == 3


def test_capture_status_reads_the_endpoints_ready_file(mb, tmp_path):
    serving = tmp_path / "serving"
    serving.mkdir()
    (serving / "ep-x-0123abcd.json").write_text(json.dumps({"port": 1, "capture": {"state": "paused",
                                                                                  "reason": "The disk is full."}}))
    (serving / "ep-x-extra-0123abcd.json").write_text(json.dumps({"port": 2, "capture": {"state": "capturing"}}))
    state = ready_file_capture_state(serving)
    assert state("ep-x") == {"state": "paused", "reason": "The disk is full."}
    assert state("ep-x-extra")["state"] == "capturing" and state("other") is None


def test_the_step_is_done_right_after_this_process_read_the_new_traffic(captured, home):
    """The dashboard's own Monitor page reading the new traffic turns Home's step back to done at once (the whole
    'unread' answer was cached, a minute on AWS)."""
    from tests.monitor.conftest import monitor_backend

    mb, _, _ = captured
    mb.monitor_summary(EP, threshold=0.5)
    dash = monitor_backend(home)
    assert dash.step_statuses()["monitor"].state == "done"
    write_records(mb.store.bucket_dir(mb.objects.bucket), EP, 40, start=T0 + 1000, per_file=20, seed=6)
    time.sleep(5.1)  # past the capture listing's cache
    assert dash.step_statuses()["monitor"].state == "in_progress"
    assert dash.monitor_summary(EP, threshold=0.5)["records"] == 340  # the Monitor page of this dashboard reads it
    step = dash.step_statuses()["monitor"]
    assert step.state == "done", step.detail


def test_an_endpoint_never_opened_in_monitor_is_not_traffic_since_the_last_read(captured, home):
    """Monitor reads the endpoint it shows. With a second endpoint's capture (an old endpoint's folder, say) never
    opened, the step said 'more captured since' for ever, though nothing arrived since the read."""
    from tests.monitor.conftest import monitor_backend

    mb, bucket_dir, _ = captured
    write_records(bucket_dir, "ep-old", 50, per_file=25, seed=9)
    assert mb.monitor_summary(EP, threshold=0.5)["records"] == 300  # the Monitor page reads the endpoint it shows
    step = monitor_backend(home).step_statuses()["monitor"]
    assert step.state == "done" and "since" not in step.detail, step.detail
