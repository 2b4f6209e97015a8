"""Capture written by the real endpoint process, read back through the monitoring methods: traffic
from workflow executions and direct invocations, compared with json.loads of every line."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.monitor.capture_files import brute_force

REPO = Path(__file__).resolve().parents[2]
EP = "scones-endpoint"


@pytest.fixture(scope="module")
def traffic(wf, shared_data):
    """A batch of 12 workflow executions and the six shared sample PNGs sent straight to the endpoint."""
    arns = wf.start_workflow_batch(12)
    executions = wf.wait_workflow_executions(arns, timeout=120)
    sent = [p.read_bytes() for p in sorted((shared_data / "samples").glob("*.png"))]
    for body in sent:
        wf.invoke_endpoint(EP, body, "image/png")
    return executions, sent


def test_the_table_matches_every_line_the_endpoint_wrote(wf, traffic):
    executions, sent = traffic
    truth = brute_force(wf.store.bucket_dir(wf.objects.bucket), EP)
    assert len(truth) >= 18  # every request was captured (capture 100%)
    table = wf.capture_table(EP)
    by_event = {r["event"]: r for r in truth}
    assert sorted(table["event_id"]) == sorted(by_event)
    classes = wf.describe_model(wf.describe_endpoint(EP).model_name).classes
    for _, row in table.iterrows():
        expected = by_event[row["event_id"]]
        assert [row[f"p_{c}"] for c in classes] == expected["probs"]
        assert row["confidence"] == expected["confidence"] and row["predicted"] == classes[int(np.argmax(expected["probs"]))]
        assert row["inference_time"].strftime("%Y-%m-%dT%H:%M:%SZ") == expected["time"]
    for body in sent:  # the PNGs sent are the images the handles decode to
        assert any(wf.capture_image(h) == body for h in table["image_ref"])
    for t in (0.0, 0.5, 0.55, 0.6, 0.75, 0.9, 1.0):
        below = sum(r["confidence"] < t for r in truth)
        summary = wf.monitor_summary(EP, threshold=t)
        assert (summary["records"], summary["below_threshold"]) == (len(truth), below)
        assert wf.threshold_counts(EP, t)["passing"] == len(truth) - below
        assert sum(v["records"] for v in summary["by_label"].values()) == len(truth)
    assert wf.monitor_summary()["threshold"] == 0.5  # the workflow's threshold by default
    low = wf.lowest_confidence(EP, 3)
    # one tile per image: random test images repeat, and a repeated image answers the same (the grid showed one
    # picture several times: audit), so the expected are the lowest of the distinct images sent
    distinct: dict[bytes, float] = {}
    for r in sorted(truth, key=lambda r: r["confidence"]):
        distinct.setdefault(r["image"], r["confidence"])
    assert [im.confidence for im in low] == sorted(distinct.values())[:3]
    assert len({im.image for im in low}) == len(low)
    assert all(im.image == by_event[im.event_id]["image"] for im in low)


def test_workflow_outcomes_follow_the_executions(wf, traffic):
    everything = wf.list_workflow_executions(limit=10_000)
    charts = wf.monitor_charts(EP)
    totals = charts.outcomes.groupby("outcome")["executions"].sum().to_dict()
    expected = {"succeeded": sum(e.status == "SUCCEEDED" for e in everything),
                "below threshold": sum(e.error == "THRESHOLD_CONFIDENCE_NOT_MET" for e in everything)}
    assert {k: totals.get(k, 0) for k in expected} == expected and sum(expected.values()) == len(everything)
    with_conf = [e for e in everything if e.confidence is not None]
    assert charts.executions == len(with_conf)
    assert wf.threshold_counts(EP, 0.7)["executions_passing"] == sum(e.confidence >= 0.7 for e in with_conf)


def test_a_live_endpoint_is_capturing_and_receiving(wf, traffic):
    status = wf.capture_status(EP)
    assert (status.state, status.endpoint_status, status.enabled, status.receiving) == ("capturing", "InService", True, True)
    assert status.destination == "s3://scones-unlimited/data_capture" and status.records == len(wf.capture_table(EP))
    assert status.max_bytes == 10 * 1024 ** 3 and status.retention_days == 30


def test_an_endpoint_at_its_size_cap_keeps_answering_and_capture_says_paused(wf, traffic, monkeypatch):
    monkeypatch.setenv("SCONES_CAPTURE_MAX_BYTES", "12000")  # the endpoint process reads it at start
    model = wf.describe_endpoint(EP).model_name
    wf.deploy(model, "capped", capture_percent=100)
    try:
        assert wf.wait_endpoint("capped", timeout=60).status == "InService"
        _, sent = traffic
        answers = [wf.invoke_endpoint("capped", sent[i % len(sent)], "image/png") for i in range(8)]
        assert len(answers) == 8 and all(len(a.probabilities) == 2 for a in answers)  # every request answered
        time.sleep(0.1)
        status = wf.capture_status("capped")
        assert status.state == "paused" and "size cap" in status.reason and status.dropped >= 1
        assert 0 < status.records < 8 and status.paused_since is not None
        assert status.max_bytes == 12000  # the cap the endpoint runs under, not the dashboard's 10 GiB
        assert "KiB of 11.7 KiB)" in status.reason  # sizes a person reads, not "0.00 GiB of 0.00 GiB"
        deadline = time.monotonic() + 3  # the dropped count reaches the page without another request
        while wf.capture_status("capped").dropped != 8 - status.records and time.monotonic() < deadline:
            time.sleep(0.1)
        assert wf.capture_status("capped").dropped == 8 - status.records
        at = page_at(wf, monkeypatch)
        at.selectbox(key="mon_endpoint").set_value("capped").run()
        assert not at.exception
        assert any("Capture is paused on capped" in w.value and f"{8 - status.records:,} answered requests" in w.value
                   for w in at.warning)
        assert any("of the endpoint's 11.7 KiB cap" in c.value for c in at.caption)
    finally:
        wf.delete_endpoint("capped")


def page_at(wf, monkeypatch) -> AppTest:
    import ui.state

    monkeypatch.setattr(ui.state, "backend", lambda: wf)
    at = AppTest.from_file(str(REPO / "views" / "monitor.py"), default_timeout=60).run()
    assert not at.exception
    return at


def test_the_page_on_a_live_endpoint_shows_executions_and_follows_the_slider(wf, traffic, monkeypatch):
    at = page_at(wf, monkeypatch)
    assert at.selectbox(key="mon_endpoint").value == EP and at.slider(key="mon_threshold").value == 0.5
    records = wf.threshold_counts(EP, 0.5, since=time.time() - 86400)["records"]
    assert next(m.value for m in at.metric if m.label == "Inferences") == f"{records:,}"
    assert len(at.get("vega_lite_chart")) == 5  # with the workflow outcomes
    for t in (0.6, 0.9):
        at.slider(key="mon_threshold").set_value(t).run()
        counts = wf.threshold_counts(EP, t, since=time.time() - 86400)
        values = {m.label: m.value for m in at.metric}
        assert values[f"Would pass at {t:.2f}"] == f"{counts['passing']:,}"
        assert values["Executions passing"] == f"{counts['executions_passing']:,} of {counts['executions']:,}"
        assert next(m for m in at.metric if m.label == "Executions passing").delta == f"at {t:.2f}"


def test_an_endpoint_with_capture_on_and_nothing_captured_yet_has_an_empty_table(wf):
    model = wf.describe_endpoint(EP).model_name
    wf.deploy(model, "quiet-endpoint", capture_percent=100)
    try:
        assert wf.wait_endpoint("quiet-endpoint", timeout=60).status == "InService"
        table = wf.capture_table("quiet-endpoint")
        classes = wf.describe_model(model).classes
        assert len(table) == 0 and [f"p_{c}" for c in classes] == [c for c in table.columns if c.startswith("p_")]
        at = AppTest.from_file(str(REPO / "views" / "monitor.py"), default_timeout=60)
        at.session_state["mon_endpoint"] = "quiet-endpoint"
        at.run()
        assert not at.exception
    finally:
        wf.delete_endpoint("quiet-endpoint")


def test_capture_off_endpoints_are_named_and_a_deleted_ones_capture_keeps_its_class_names(wf, traffic, monkeypatch):
    _, sent = traffic
    model = wf.describe_endpoint(EP).model_name
    classes = wf.describe_model(model).classes
    wf.deploy(model, "was-captured", capture_percent=100)
    wf.deploy(model, "never-captured", capture_enabled=False)
    try:
        assert wf.wait_endpoint("was-captured", timeout=60).status == "InService"
        for body in sent[:3]:
            wf.invoke_endpoint("was-captured", body, "image/png")
        wf.deploy(model, "was-captured", capture_enabled=False)  # capture turned off: what it took stays
        assert wf.wait_endpoint("was-captured", timeout=60).status == "InService"
        assert wf.wait_endpoint("never-captured", timeout=60).status == "InService"
        time.sleep(3.1)  # the list of capture sources is kept 3 s
        listed = wf.monitored_endpoints()
        assert "was-captured" in listed and "never-captured" not in listed
        status = wf.capture_status("was-captured")
        assert (status.state, status.endpoint_status) == ("off", "InService")  # not "the endpoint was deleted"
        assert status.reason.startswith("Capture is off for this endpoint")
        monitor = wf.step_statuses()["monitor"]  # Home names what captured something, not what captures nothing
        assert "never-captured" not in monitor.detail
        at = page_at(wf, monkeypatch)
        assert any("Not listed: never-captured (capture off, nothing captured)" in c.value for c in at.caption)
        at.selectbox(key="mon_endpoint").set_value("was-captured").run()
        assert not at.exception
        assert wf.capture_table("was-captured").shape[0] == 3
    finally:
        wf.delete_endpoint("never-captured")
        wf.delete_endpoint("was-captured")
    wf.monitoring._cache.clear()  # what a later look sees: the endpoint is gone, its capture stays
    remembered = wf.monitoring.index_root / "classes" / "was-captured.json"
    assert json.loads(remembered.read_text()) == list(classes)  # kept while the endpoint served
    table = wf.capture_table("was-captured")
    assert len(table) == 3 and [c for c in table.columns if c.startswith("p_")] == [f"p_{c}" for c in classes]
    assert wf.capture_status("was-captured").endpoint_status == "deleted"


def test_an_endpoint_sampling_zero_percent_says_so_rather_than_asking_for_traffic(wf, traffic, monkeypatch):
    model = wf.describe_endpoint(EP).model_name
    wf.deploy(model, "zero-sampled", capture_percent=0)
    try:
        assert wf.wait_endpoint("zero-sampled", timeout=60).status == "InService"
        wf.invoke_endpoint("zero-sampled", traffic[1][0], "image/png")
        wf.monitoring._cache.clear()  # the list of capture sources is kept 3 s
        at = AppTest.from_file(str(REPO / "views" / "monitor.py"), default_timeout=60)
        import ui.state

        monkeypatch.setattr(ui.state, "backend", lambda: wf)
        at.session_state["mon_endpoint"] = "zero-sampled"
        at.run()
        assert not at.exception
        assert any("samples 0% of requests" in i.value for i in at.info)
    finally:
        wf.delete_endpoint("zero-sampled")


def test_the_controls_outlive_a_visit_to_another_page_and_the_threshold_follows_the_workflows(wf, traffic, monkeypatch):
    import ui.state

    monkeypatch.setattr(ui.state, "backend", lambda: wf)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.switch_page("views/monitor.py").run()
    assert not at.exception and at.slider(key="mon_threshold").value == 0.5
    at.slider(key="mon_threshold").set_value(0.7).run()
    at.selectbox(key="mon_window").set_value("Last hour").run()
    at.switch_page("views/stage.py").run()
    at.switch_page("views/monitor.py").run()
    assert (at.slider(key="mon_threshold").value, at.selectbox(key="mon_window").value) == (0.7, "Last hour")
    try:
        wf.deploy_workflow(threshold=0.8)  # e.g. `scones workflow deploy --threshold 0.8` meanwhile
        wf.monitoring._cache.clear()
        at.switch_page("views/monitor.py").run()
        assert at.slider(key="mon_threshold").value == 0.8  # not the stale 0.7 tried against 0.5
        assert at.selectbox(key="mon_window").value == "Last hour"
    finally:
        wf.deploy_workflow(threshold=0.5)


def test_capture_older_than_the_endpoint_is_said_to_come_from_an_earlier_one_of_its_name(wf, traffic, monkeypatch):
    """After a cleanup that kept data, an endpoint deployed again under the same name showed the old endpoint's
    capture mixed with its own, as one series, without a word (a full-journey browser audit)."""
    from tests.monitor.capture_files import T0, write_records

    model = wf.describe_endpoint(EP).model_name
    bucket_dir = wf.store.bucket_dir(wf.objects.bucket)
    write_records(bucket_dir, "reborn", 5, start=T0, per_file=5, seed=4)  # an earlier "reborn", 2026-01-01
    wf.deploy(model, "reborn", capture_percent=100)
    try:
        assert wf.wait_endpoint("reborn", timeout=60).status == "InService"
        wf.invoke_endpoint("reborn", traffic[1][0], "image/png")
        deadline = time.monotonic() + 30
        while wf.capture_status("reborn").records < 6 and time.monotonic() < deadline:
            time.sleep(0.3)
        status = wf.capture_status("reborn")
        assert status.records == 6 and status.before_endpoint == 5
        assert wf.capture_status(EP).before_endpoint == 0
        time.sleep(3.1)  # the list of capture sources is kept 3 s
        at = page_at(wf, monkeypatch)
        at.selectbox(key="mon_endpoint").set_value("reborn").run()
        assert not at.exception
        assert any(i.value.startswith("5 of these inferences are older than the endpoint reborn itself") for i in at.info)
    finally:
        wf.delete_endpoint("reborn")
