"""An operator sends traffic through the workflow, opens Monitor in real Chromium, moves the threshold
and sees the counts change; more traffic shows up without a reload.

Needs the page in app.py's navigation (title "Monitor", url_path "monitor") and the monitoring
methods on LocalBackend (MonitoringBackendMixin).
"""
from __future__ import annotations

import re
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
    executions = metric_value(page, "Executions passing")  # at 0.00: the threshold is the metric's delta
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


def test_clean_up_in_a_browser_keeps_an_untick_and_asks_again_when_the_list_changes(page: Page, monitor_url, wf):
    """Nothing is deleted here (the workspace serves the other tests): the ticks, the preview and the
    confirmation as an operator meets them."""
    page.goto(f"{monitor_url}/cleanup")
    expect(page.get_by_role("heading", name="Clean up", exact=True)).to_be_visible(timeout=30_000)
    endpoint = page.get_by_test_id("stCheckbox").filter(has_text=f"{EP} · InService")
    expect(endpoint.locator("input")).to_be_checked(timeout=30_000)
    endpoint.locator("label").click()
    expect(endpoint.locator("input")).not_to_be_checked(timeout=30_000)
    expect(page.get_by_text(f"serves model", exact=False).first).to_be_visible(timeout=30_000)  # the preview
    confirm = page.get_by_test_id("stTextInput").locator("input")
    confirm.fill("delete")
    confirm.press("Enter")
    go = page.get_by_role("button", name=re.compile(r"^Delete \d+ of \d+ selected$"))
    expect(go).to_be_enabled(timeout=30_000)
    data = page.get_by_test_id("stCheckbox").filter(has_text="Also delete data")
    data.locator("label").click()
    expect(page.get_by_text("The selection changed", exact=False)).to_be_visible(timeout=30_000)
    expect(confirm).to_have_value("", timeout=30_000)
    expect(go).to_be_disabled()
    expect(endpoint.locator("input")).not_to_be_checked()  # the untick survived the longer list
    assert wf.describe_endpoint(EP).status == "InService"
