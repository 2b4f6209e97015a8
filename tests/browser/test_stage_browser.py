"""An operator opens the dashboard, stages the mirror archive through the page and sees the result."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


def test_home_then_stage_the_mirror_by_upload(page: Page, dashboard_url, mirror_archive, screenshots, dashboard_home):
    page.goto(dashboard_url)
    expect(page.get_by_text("Scones Unlimited: image-classification workflow")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("No data staged yet.")).to_be_visible()
    expect(page.get_by_text(str(dashboard_home))).to_be_visible()

    page.get_by_role("link", name="Stage data").first.click()
    expect(page.get_by_text("Bundled sample (offline, 1,200 real images)")).to_be_visible(timeout=30_000)
    page.get_by_text("Upload an archive").click()
    # The limit as the browser shows it (512 MB, the limit before, read "1GB")
    expect(page.get_by_test_id("stFileUploaderDropzoneInstructions")).to_contain_text("250MB per file", timeout=30_000)
    page.locator("input[type=file]").set_input_files(str(mirror_archive))
    expect(page.get_by_role("button", name="Remove cifar-100-python.tar.gz")).to_be_visible(timeout=30_000)
    start = page.get_by_role("button", name="Start staging")
    expect(start).to_be_enabled(timeout=30_000)
    start.click()

    expect(page.get_by_text("Staged dataset")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stMetricValue").first).to_have_text("1,200")
    expect(page.get_by_text(re.compile(r"images under\s+train/"))).to_be_visible()
    images = page.locator("[data-testid=stImage] img")
    expect(images.nth(15)).to_be_visible(timeout=30_000)
    expect(images).to_have_count(16)  # 8 per class
    expect(page.get_by_text("bike_s_000682.png")).to_be_visible()
    page.set_viewport_size({"width": 1400, "height": 2100})  # Streamlit scrolls inside its own container
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshots / "stage.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})

    page.get_by_role("link", name="Home").first.click()
    expect(page.get_by_text("1,200 images of bicycle, motorcycle")).to_be_visible(timeout=30_000)
    page.screenshot(path=str(screenshots / "home.png"))
