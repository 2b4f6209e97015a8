"""An operator sends traffic through the workflow, opens Monitor in real Chromium, moves the threshold
and sees the counts change; more traffic shows up without a reload.

Needs the page in app.py's navigation (title "Monitor", url_path "monitor") and the monitoring
methods on LocalBackend (MonitoringBackendMixin).
"""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, expect

from tests.dashboard import SCREENSHOTS, start_dashboard, stop_dashboard

pytestmark = pytest.mark.browser
EP = "scones-endpoint"


@pytest.fixture
def monitor_url(wf_home, wf):
    proc, url = start_dashboard(wf_home)
    yield url
    stop_dashboard(proc)


def metric_value(page: Page, label: str):
    """The value of the metric whose label is exactly `label`."""
    labelled = page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
    return page.get_by_test_id("stMetric").filter(has=labelled).get_by_test_id("stMetricValue")


def test_traffic_then_monitor_and_move_the_threshold(page: Page, monitor_url, wf):
    wf.wait_workflow_executions(wf.start_workflow_batch(10), timeout=120)
    since = time.time() - 86400
    counts = {t: wf.threshold_counts(EP, t, since=since) for t in (0.5, 0.0, 1.0)}
    records = counts[0.5]["records"]
    assert records >= 10 and counts[0.0]["passing"] == records

    page.goto(f"{monitor_url}/monitor")
    expect(page.get_by_role("heading", name="Monitor", exact=True)).to_be_visible(timeout=30_000)
    expect(metric_value(page, "Inferences")).to_have_text(f"{records:,}", timeout=30_000)
    expect(metric_value(page, "Would pass at 0.50")).to_have_text(f"{counts[0.5]['passing']:,}")
    expect(page.locator("[data-testid=stVegaLiteChart]").first).to_be_visible(timeout=30_000)

    slider = page.get_by_role("slider")
    slider.focus()
    slider.press("End")  # threshold 1.00: (almost) nothing passes
    expect(metric_value(page, "Would pass at 1.00")).to_have_text(f"{counts[1.0]['passing']:,}", timeout=30_000)
    slider.press("Home")  # threshold 0.00: everything passes
    expect(metric_value(page, "Would pass at 0.00")).to_have_text(f"{records:,}", timeout=30_000)
    assert counts[1.0]["passing"] != records  # the counts did change
    executions = metric_value(page, "Executions passing at 0.00")
    expect(executions).to_have_text(f"{counts[0.0]['executions']:,} of {counts[0.0]['executions']:,}")

    keys = wf.test_image_keys()[:4]
    for key in keys:  # more traffic while the page is open: it refreshes by itself
        wf.invoke_endpoint(EP, wf.get_object(key), "image/png")
    expect(metric_value(page, "Inferences")).to_have_text(f"{records + len(keys):,}", timeout=30_000)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    slider.press("PageUp")
    page.set_viewport_size({"width": 1400, "height": 2400})
    page.wait_for_timeout(1000)
    page.screenshot(path=str(SCREENSHOTS / "monitor.png"))
