"""An operator starts a 2-epoch training job from the Train page and watches the chart gain points."""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, expect

from backend import get_backend
from backend.settings import load_settings
from tests.training import synthetic

pytestmark = pytest.mark.browser

N_TRAIN = 640  # 32x32 images in batches of 8: an epoch lasts seconds, well over the page's 1.5 s poll


def chart_points(page: Page) -> int:
    """Vega-Lite draws each epoch's metrics as SVG symbols (legend symbols excluded): 3 per epoch."""
    return page.locator("[data-testid=stVegaLiteChart] g.mark-symbol.role-mark path").count()


def test_start_a_two_epoch_job_and_see_the_chart_gain_points(page: Page, dashboard_url, dashboard_home):
    backend = get_backend(load_settings().with_overrides(home=dashboard_home, backend="local"))
    synthetic.stage(backend, n_train=N_TRAIN, n_test=32, size=32)

    page.goto(f"{dashboard_url}/train")
    expect(page.get_by_text("New training job")).to_be_visible(timeout=30_000)
    for name, value in {"epochs": "2", "mini_batch_size": "8"}.items():
        box = page.get_by_label(name, exact=True)
        box.fill(value)
        box.press("Tab")
    page.get_by_role("button", name="Start training").click()

    seen: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        n = chart_points(page)
        if not seen or seen[-1] != n:
            seen.append(n)
        if n >= 6:
            break
        page.wait_for_timeout(100)
    assert seen[-1] == 6, seen
    assert 3 in seen, f"the chart never showed epoch 1 alone: {seen}"
    assert seen == sorted(seen)  # points are only ever added
    expect(page.get_by_text("2 of 2 epochs recorded")).to_be_visible(timeout=30_000)
    job = backend.list_training_jobs()[0]
    assert [e["epoch"] for e in job.epochs] == [1, 2]
    assert job.hyperparameters["num_training_samples"] == str(N_TRAIN)
