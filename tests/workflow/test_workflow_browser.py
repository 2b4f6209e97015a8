"""An operator runs a batch of 5 from the Workflow page in real Chromium, watches the statuses
settle, opens one execution and sees its graph and its history."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.dashboard import SCREENSHOTS, start_dashboard, stop_dashboard

pytestmark = pytest.mark.browser


@pytest.fixture
def wf_url(wf_home, wf):
    proc, url = start_dashboard(wf_home)
    yield url
    stop_dashboard(proc)


def test_batch_of_five_from_the_page(page: Page, wf_url, wf):
    before = len(wf.list_workflow_executions(limit=10_000))
    page.goto(f"{wf_url}/workflow")
    expect(page.get_by_role("heading", name="Workflow", exact=True)).to_be_visible(timeout=30_000)
    count = page.get_by_label("Executions", exact=True)
    count.fill("5")
    count.press("Enter")
    page.get_by_role("button", name="Start", exact=True).click()
    # the table refreshes by itself until nothing runs
    expect(page.get_by_test_id("stMetricValue").nth(0)).to_have_text(str(before + 5), timeout=60_000)
    expect(page.get_by_test_id("stMetricValue").nth(4)).to_have_text("0", timeout=60_000)  # Running
    after = wf.list_workflow_executions(limit=10_000)
    newest = after[:5]
    assert all(e.status in ("SUCCEEDED", "FAILED") for e in newest)
    # the newest execution is opened: its graph and its history
    # the graph may first be drawn while the execution starts (states grey): it is redrawn on the
    # page's next refresh, so wait for a state outlined as succeeded
    graph = page.locator("[data-testid=stGraphVizChart] svg")
    expect(graph).to_be_visible(timeout=30_000)
    expect(graph.locator('[stroke="#2e7d32"]').first).to_be_attached(timeout=30_000)
    svg = graph.inner_html()
    assert "serializeImageData" in svg and "filterInferences" in svg
    assert re.search(r'stroke="#2e7d32"', svg)  # states coloured as succeeded
    expect(page.get_by_text("Event history")).to_be_visible()
    expect(page.get_by_text("serializeImageData · succeeded")).to_be_visible()
    # an event's details in full: select its row (the table shows a line of them)
    expect(page.get_by_text("Select an event's row to read its details in full.")).to_be_visible()
    history = page.get_by_test_id("stDataFrame").last
    history.scroll_into_view_if_needed()
    box = history.bounding_box()
    page.mouse.click(box["x"] + 12, box["y"] + 35 + 17)  # the first row's selection box: ExecutionStarted
    expect(page.get_by_text(re.compile(r"^Event 1 · ExecutionStarted$"))).to_be_visible(timeout=15_000)
    details = page.get_by_test_id("stJson").last
    expect(details).to_contain_text("executionStartedEventDetails")
    expect(details).to_contain_text("s3_key")  # the input, parsed from its JSON string
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 2300})
    page.wait_for_timeout(500)
    page.screenshot(path=str(SCREENSHOTS / "workflow.png"))


def test_the_state_machine_section_follows_a_change_made_elsewhere(page: Page, wf_url, wf):
    """Only the executions refreshed by themselves: the workflow updated from the CLI (or its endpoint deleted)
    left the page showing the old threshold and endpoint until something was clicked."""
    page.goto(f"{wf_url}/workflow")
    expect(page.get_by_text(re.compile(r"scones-workflow · endpoint .* · threshold 0\.50"))).to_be_visible(timeout=30_000)
    machine = next(m for m in wf.list_state_machines() if m.name == "scones-workflow")
    wf.deploy_workflow(machine.endpoint_name, threshold=0.42)
    try:
        expect(page.get_by_text(re.compile(r"scones-workflow · endpoint .* · threshold 0\.42"))).to_be_visible(
            timeout=20_000)  # the page looks every 5 s
    finally:
        wf.deploy_workflow(machine.endpoint_name, threshold=0.5)
