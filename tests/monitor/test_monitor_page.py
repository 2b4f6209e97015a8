"""The Monitor page in AppTest, against a real local workspace holding hand-made capture."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.monitor.capture_files import brute_force, write_file, write_records, T0

REPO = Path(__file__).resolve().parents[2]
EP = "ep-page"


@pytest.fixture
def monitor_page(mb, monkeypatch):
    """views/monitor.py with `ui.state.backend` answering the monitoring backend (until app.py lists the page)."""
    import ui.state

    monkeypatch.setattr(ui.state, "backend", lambda: mb)
    return AppTest.from_file(str(REPO / "views" / "monitor.py"), default_timeout=60)


def metric(at, prefix: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(prefix))


def test_empty_workspace_says_what_to_do(monitor_page):
    at = monitor_page.run()
    assert not at.exception
    assert any("No captured data yet" in i.value for i in at.info)


def test_counts_charts_slider_images_and_table(monitor_page, mb):
    bucket_dir = mb.store.bucket_dir(mb.objects.bucket)
    start = time.time() - 2 * 3600
    write_records(bucket_dir, EP, 120, start=start, per_file=30)
    write_file(bucket_dir, EP, start + 500, [b"cut short {\n"])
    old = write_records(bucket_dir, EP, 5, start=T0, per_file=5)  # older than the 30-day retention
    truth = [r for r in brute_force(bucket_dir, EP) if r["event"] not in {x["event"] for x in old[0].records}]
    at = monitor_page.run()
    assert not at.exception
    assert at.selectbox(key="mon_endpoint").value == EP
    assert at.slider(key="mon_threshold").value == 0.93  # the default threshold (no workflow deployed)
    assert at.selectbox(key="mon_window").value == "Last 24 hours"
    assert not old[0].path.exists()  # the page applies the retention as it refreshes
    assert metric(at, "Inferences") == "120"
    assert metric(at, "Below threshold") == f"{sum(r['confidence'] < 0.93 for r in truth):,}"
    assert metric(at, "Would pass at 0.93") == f"{sum(r['confidence'] >= 0.93 for r in truth):,}"
    assert len(at.get("vega_lite_chart")) == 4  # over time, histogram, share below, class mix
    assert any("No workflow execution" in c.value for c in at.caption)
    assert any("1 broken line skipped" in c.value for c in at.caption)
    assert any("The endpoint was deleted" in i.value for i in at.info)
    table = at.dataframe[0].value
    assert len(table) == 120 and table["inference_time"].is_monotonic_decreasing  # newest first
    # what an operator reads first comes first (at 1,000 px only three columns show)
    assert list(table.columns[:4]) == ["inference_time", "predicted", "confidence", "passes"]
    assert table.columns[4].startswith("p_") and list(table.columns[-2:]) == ["event_id", "image_ref"]
    assert len(at.get("image")) == 12  # the lowest-confidence grid, decoded from the captured input

    for t, shown in ((0.0, "0.00"), (0.5, "0.50"), (0.935, "0.935"), (1.0, "1.00")):  # what-if: the counts follow
        at.slider(key="mon_threshold").set_value(t).run()  # the slider at once, at the threshold as it is (not 0.94)
        assert not at.exception
        assert metric(at, f"Would pass at {shown}") == f"{sum(r['confidence'] >= t for r in truth):,}"
    assert metric(at, "Would pass at 1.00") != metric(at, "Inferences")

    at.selectbox(key="mon_window").set_value("Everything captured").run()
    assert metric(at, "Inferences") == "120"
    at.selectbox(key="mon_window").set_value("Last hour").run()
    assert metric(at, "Inferences") == "0"
    # the endpoint is gone: no new ones, but earlier ones are there to see (audit: 'and none will be', no hint)
    assert any(i.value.startswith("No inference captured in this window, and no new ones will be: The endpoint was "
                                  "deleted") and i.value.endswith("Widen the window to see what was captured earlier.")
               for i in at.info)
