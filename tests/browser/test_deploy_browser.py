"""An operator deploys a trained model from the Deploy page, uploads a CIFAR PNG and sees its class.

Needs the page in app.py's navigation (title "Deploy", url_path "deploy") and LocalBackend with the
deployment methods. The workspace gets real data and a real (one-epoch) model through the backend
first; the endpoint process is deleted at teardown, so nothing outlives the test.
"""
from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Page, expect

from backend import get_backend
from backend.settings import load_settings

pytestmark = pytest.mark.browser


@pytest.fixture
def trained_workspace(dashboard_home, mirror_archive):
    """The mirror staged and a one-epoch model of the local preset, in the dashboard's workspace."""
    b = get_backend(load_settings({"SCONES_HOME": str(dashboard_home)}))
    b.stage_data(str(mirror_archive))
    hp = b.default_training_hyperparameters("local")
    hp["epochs"] = "1"
    job = b.create_training_job(hp, job_name="browser-job")
    deadline = time.monotonic() + 180
    while (trained := b.describe_training_job(job)).status == "InProgress" and time.monotonic() < deadline:
        time.sleep(0.25)
    assert trained.status == "Completed", trained.failure_reason
    model = b.create_model(job, "browser-model")
    yield b, model
    for endpoint in b.list_endpoints():
        b.delete_endpoint(endpoint.endpoint_name)


def test_deploy_from_the_page_then_classify_an_uploaded_png(page: Page, dashboard_url, trained_workspace,
                                                           sample_png_path, screenshots):
    b, model = trained_workspace
    page.goto(f"{dashboard_url}/deploy")
    expect(page.get_by_role("heading", name="Deploy a model")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("combobox", name="Model")).to_have_value(
        re.compile(r"^browser-model · served accuracy \d\.\d{3} \(8-bit graph\)$"))  # the defaults serve 8 bits
    expect(page.get_by_text("Classes in order: bicycle, motorcycle")).to_be_visible()  # the model's metrics and classes
    name = page.get_by_label("Endpoint name (an existing endpoint is updated)")
    name.fill("browser-endpoint")
    name.press("Enter")
    page.get_by_role("button", name="Deploy", exact=True).click()

    expect(page.get_by_text(re.compile(r"Deploying browser-model to endpoint browser-endpoint"))).to_be_visible(
        timeout=30_000)
    expect(page.get_by_text("InService", exact=True)).to_be_visible(timeout=60_000)  # the status updates by itself
    assert b.describe_endpoint("browser-endpoint").status == "InService"

    page.locator("input[type=file]").set_input_files(str(sample_png_path))
    expect(page.get_by_text(sample_png_path.name).first).to_be_visible(timeout=30_000)
    classify = page.get_by_role("button", name="Classify")
    expect(classify).to_be_enabled(timeout=30_000)
    classify.click()
    verdict = page.get_by_text(re.compile(r"^(bicycle|motorcycle) · confidence \d+\.\d%$"))
    expect(verdict.first).to_be_visible(timeout=30_000)
    expect(page.locator("[data-testid=stVegaLiteChart]").first).to_be_visible(timeout=30_000)
    predicted = verdict.first.inner_text().split(" · ")[0]
    expected = b.invoke_endpoint("browser-endpoint", sample_png_path.read_bytes(), "image/png").label
    assert predicted == expected
    page.set_viewport_size({"width": 1400, "height": 2000})
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshots / "deploy.png"))


@pytest.fixture
def sample_png_path(shared_data):
    return sorted((shared_data / "samples").glob("*.png"))[0]
