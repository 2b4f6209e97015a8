"""An operator starts a 2-epoch training job from the Train page and watches the chart gain points."""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, expect

from backend import get_backend
from backend.settings import load_settings
from tests.training import synthetic

pytestmark = pytest.mark.browser

N_TRAIN = 1600  # 32x32 images in batches of 8: an epoch lasts seconds, well over the page's 1.5 s poll (640 took
# under 1.5 s on a fast hour once the trainer kept both cores, and the poll missed epoch 1 alone)


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



def go_to(page: Page, link: str, title: str) -> None:
    """Click a page link until that page shows: a click that is also the blur of an edited field can be taken
    by the rerun that edit starts (Streamlit's, on every page), and is then clicked again, as a user would."""
    for _ in range(3):
        page.get_by_role("link", name=link, exact=True).first.click()
        try:
            expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=10_000)
            return
        except AssertionError:
            continue
    raise AssertionError(f"the {title} page did not show")


def test_the_form_keeps_typed_edits_across_pages(page: Page, dashboard_url):
    """Streamlit drops a widget's value while another page is shown: the Train form came back blank (and in an
    st.form an edit not yet submitted never reached the server at all)."""
    page.goto(f"{dashboard_url}/train")
    epochs = page.get_by_label("epochs", exact=True)
    expect(epochs).to_have_value("80", timeout=30_000)
    epochs.fill("40")
    epochs.press("Tab")
    page.wait_for_timeout(1000)
    go_to(page, "Deploy", "Deploy")
    go_to(page, "Train", "Train")
    expect(page.get_by_label("epochs", exact=True)).to_have_value("40", timeout=30_000)
    expect(page.get_by_label("lr_scheduler_step", exact=True)).to_have_value("55,73")  # the preset's, not blank
    expect(page.get_by_text("Preset: Local CPU defaults")).to_be_visible()

    page.get_by_label("epochs", exact=True).fill("12")  # then straight to a page link: the click is the blur
    go_to(page, "Home", "Scones Unlimited: image-classification workflow")
    go_to(page, "Train", "Train")
    expect(page.get_by_label("epochs", exact=True)).to_have_value("12", timeout=30_000)


def test_a_field_being_typed_in_keeps_its_text_when_a_job_ends(page: Page, dashboard_url, dashboard_home):
    """A job that ends redraws the whole page (the job list, the evaluation). Streamlit takes a field's text on
    Enter or blur, so an operator typing the next job's values meanwhile has text the server has not seen: the
    redraw must not put the field's last value back over it."""
    backend = get_backend(load_settings().with_overrides(home=dashboard_home, backend="local"))
    synthetic.stage(backend, n_train=N_TRAIN, n_test=16, size=32)
    page.goto(f"{dashboard_url}/train")
    epochs = page.get_by_label("epochs", exact=True)
    expect(epochs).to_have_value("80", timeout=30_000)
    epochs.fill("2")
    epochs.press("Tab")
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text("InProgress")).to_be_visible(timeout=30_000)
    epochs.click()
    epochs.press("End")
    epochs.type("5")  # "25", not taken yet: no Enter, no blur
    assert backend.list_training_jobs()[0].status == "InProgress"  # typed before the job ended
    expect(page.get_by_role("heading", name="Evaluation on the test split")).to_be_visible(timeout=60_000)
    page.wait_for_timeout(1000)
    expect(epochs).to_have_value("25")
    expect(epochs).to_be_focused()
    epochs.press("Tab")
    page.wait_for_timeout(1000)
    expect(epochs).to_have_value("25")


def test_idle_pages_show_what_was_started_elsewhere(page: Page, dashboard_url, dashboard_home):
    """The Stage and Train pages polled only while something they had started ran: a staging or a training
    job started from the CLI (or another tab) did not show until something was clicked (browser audit)."""
    backend = get_backend(load_settings().with_overrides(home=dashboard_home, backend="local"))
    page.goto(f"{dashboard_url}/stage")
    expect(page.get_by_text("No data staged yet")).to_be_visible(timeout=30_000)
    backend.wait_job(backend.start_staging("sample"), timeout=60)
    expect(page.get_by_role("heading", name="Staged dataset")).to_be_visible(timeout=20_000)

    page.goto(f"{dashboard_url}/train")
    expect(page.get_by_text("No training job yet")).to_be_visible(timeout=30_000)
    name = backend.create_training_job({**backend.default_training_hyperparameters(), "epochs": "1"})
    expect(page.get_by_text(name).first).to_be_visible(timeout=20_000)
    backend.stop_training_job(name)
