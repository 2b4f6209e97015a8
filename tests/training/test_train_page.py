"""The training page under AppTest, against a real local backend and real worker processes."""
from __future__ import annotations

import time

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.training import synthetic
from tests.training.conftest import wait_done

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_backend_cache(home):
    from ui.state import backend

    backend.clear()
    yield
    backend.clear()


def train_page() -> AppTest:
    return AppTest.from_file(str(REPO / "views" / "train.py"), default_timeout=60)


def set_fields(at: AppTest, **values: str) -> None:
    for name, value in values.items():
        at.text_input(key=f"hp_{name}").input(value)


def test_empty_workspace_shows_the_form_with_cpu_defaults(home):
    at = train_page().run()
    assert not at.exception
    assert any("No data staged yet" in i.value for i in at.info)
    assert at.selectbox(key="hp_num_layers").value == "20"
    assert at.selectbox(key="hp_optimizer").value == "nag"
    assert at.text_input(key="hp_epochs").value == "80"
    assert at.text_input(key="hp_lr_scheduler_step").value == "55,73"
    assert at.text_input(key="hp_cutmix").value == "0.5"
    assert at.selectbox(key="hp_test_time_flip").value == "1"
    assert at.selectbox(key="hp_int8_serving").value == "1"
    assert "20, 32, 44, 56, 110" in at.selectbox(key="hp_num_layers").help
    assert any("No training job yet" in i.value for i in at.info)


def test_the_sagemaker_preset_fills_in_the_notebooks_values(staged):
    at = train_page().run()
    assert at.text_input(key="hp_num_training_samples").value == "64"  # from the staged data
    at.button(key="train_preset_sagemaker").click().run()
    assert not at.exception
    assert at.selectbox(key="hp_num_layers").value == "152"
    assert at.text_input(key="hp_epochs").value == "30"
    assert at.text_input(key="hp_learning_rate").value == "0.1"
    assert at.selectbox(key="hp_optimizer").value == "sgd"
    assert any("half an hour or longer" in w.value for w in at.warning)  # said before a long CPU run starts
    at.button(key="train_preset_local").click().run()
    assert at.selectbox(key="hp_num_layers").value == "20"
    assert not at.warning
    # The caption says when the form no longer holds the preset as it was filled in ("Local CPU defaults" over a
    # 3-epoch form read as the defaults); the Data fields follow the staging and do not count.
    assert [c.value for c in at.caption if c.value.startswith("Preset: ")] == ["Preset: **Local CPU defaults**"]
    at.text_input(key="hp_epochs").input("3").run()
    at.selectbox(key="hp_optimizer").set_value("adam").run()
    assert [c.value for c in at.caption if c.value.startswith("Preset: ")] == [
        "Preset: **Local CPU defaults**; edited since: epochs, optimizer"]
    at.text_input(key="hp_epochs").input("80").run()
    at.selectbox(key="hp_optimizer").set_value("nag").run()
    assert [c.value for c in at.caption if c.value.startswith("Preset: ")] == ["Preset: **Local CPU defaults**"]


def test_a_bad_value_is_shown_as_an_error_and_starts_nothing(staged):
    at = train_page().run()
    set_fields(at, epochs="0")
    at.button(key="train_start").click().run()
    assert not at.exception
    assert any("epochs='0' is not valid: use a positive integer" in e.value for e in at.error)
    assert staged.list_training_jobs() == []


def test_start_shows_the_job_its_chart_and_its_evaluation(staged):
    at = train_page().run()
    set_fields(at, image_shape="3,16,16", epochs="2", mini_batch_size="16")
    at.selectbox(key="hp_precision_dtype").select("float32")
    at.button(key="train_start").click().run()
    assert not at.exception
    jobs = staged.list_training_jobs()
    assert len(jobs) == 1 and jobs[0].hyperparameters["num_layers"] == "20"
    assert at.selectbox(key="train_selected").value == jobs[0].job_name
    wait_done(staged, jobs[0].job_name)
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table.loc[0, "status"] == "Completed" and table.loc[0, "epochs"] == "2/2"
    assert any("2 of 2 epochs recorded" in c.value for c in at.caption)
    at.button(key="train_evaluate").click().run()
    assert not at.exception
    assert at.metric[0].label == "Test accuracy"
    per_class = next(d.value for d in at.dataframe if "images" in d.value.columns)
    assert list(per_class.index) == ["reddish", "bluish"] and per_class["images"].sum() == 32
    at.button(key="train_create_model").click().run()
    assert [m.model_name for m in staged.list_models()] == [jobs[0].job_name]


def test_a_running_job_can_be_stopped_from_the_page(staged):
    name = staged.create_training_job(synthetic.hyperparameters(epochs=400))
    at = train_page().run()
    assert not at.exception
    assert at.selectbox(key="train_selected").value == name
    at.button(key="train_stop").click().run()
    assert not at.exception
    assert staged.describe_training_job(name).status == "Stopped"
    at.run()
    assert any(m.value == f"**{name}** · Stopped" for m in at.markdown)  # once, not "Stopped · Stopped"


def test_a_jobs_hyperparameters_can_be_copied_to_the_form(staged):
    name = staged.create_training_job(synthetic.hyperparameters(epochs=2, learning_rate=0.05), validation="holdout")
    wait_done(staged, name)
    at = train_page().run()
    assert at.text_input(key="hp_epochs").value == "80"  # the local preset
    assert at.radio(key="train_validation").value == "test"
    table = at.dataframe[0].value
    assert list(table["validated on"]) == ["20% hold-out"]  # what its validation accuracy was measured on
    at.button(key="train_copy").click().run()
    assert not at.exception
    assert at.text_input(key="hp_epochs").value == "2" and at.text_input(key="hp_learning_rate").value == "0.05"
    assert at.text_input(key="hp_image_shape").value == staged.describe_training_job(name).hyperparameters["image_shape"]
    assert any(c.value == f"Copied from job **{name}** (edit before starting)" for c in at.caption)
    at.text_input(key="hp_epochs").input("4").run()
    assert any(c.value == f"Copied from job **{name}** (edit before starting); edited since: epochs" for c in at.caption)
    assert at.radio(key="train_validation").value == "holdout"  # the same validation data: the same job


def test_the_job_looked_at_and_its_evaluation_are_kept_across_pages(staged):
    older = staged.create_training_job(synthetic.hyperparameters(epochs=1))
    wait_done(staged, older)
    newer = staged.create_training_job(synthetic.hyperparameters(epochs=1))
    wait_done(staged, newer)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.switch_page("views/train.py").run()
    assert at.selectbox(key="train_selected").value == newer
    at.selectbox(key="train_selected").select(older).run()
    at.button(key="train_evaluate").click().run()
    assert at.metric[0].label == "Test accuracy"
    at.switch_page("views/home.py").run()  # Streamlit forgets the selectbox's value there
    at.switch_page("views/train.py").run()
    assert not at.exception
    assert at.selectbox(key="train_selected").value == older  # not back to the newest job
    assert at.metric[0].label == "Test accuracy"  # and its evaluation is still shown


def test_the_form_keeps_its_values_and_edits_across_pages(staged):
    """Streamlit drops a widget's value while another page is shown: the form came back blank, its preset
    caption unchanged, and Start failed with 'num_classes is required'."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.switch_page("views/train.py").run()
    assert at.text_input(key="hp_num_classes").value == "2" and at.text_input(key="hp_epochs").value == "80"
    at.text_input(key="hp_epochs").input("40").run()
    at.selectbox(key="hp_optimizer").select("adam").run()
    at.radio(key="train_validation").set_value("holdout").run()
    at.text_input(key="train_job_name").input("my-variant").run()
    for elsewhere in ("views/deploy.py", "views/home.py"):
        at.switch_page(elsewhere).run()
        at.switch_page("views/train.py").run()
        assert not at.exception
        assert at.text_input(key="hp_epochs").value == "40"  # the edit, not the preset's 80 nor blank
        assert at.selectbox(key="hp_optimizer").value == "adam"
        assert at.selectbox(key="hp_num_layers").value == "20"  # the preset's, untouched
        assert at.text_input(key="hp_num_classes").value == "2"
        assert at.text_input(key="hp_num_training_samples").value == "64"
        assert at.radio(key="train_validation").value == "holdout"
        assert at.text_input(key="train_job_name").value == "my-variant"
        # what was edited, read before the fields are drawn again: not every field (audit)
        assert any(c.value == "Preset: **Local CPU defaults**; edited since: epochs, optimizer" for c in at.caption)
    at.button(key="train_preset_local").click().run()  # a preset still fills the form in
    assert at.text_input(key="hp_epochs").value == "80" and at.selectbox(key="hp_optimizer").value == "nag"


def test_a_double_click_on_start_is_one_start_with_the_new_job_selected(staged):
    """The second click arrives in the rerun after the start, carrying the Job selector's older value: it was
    refused as 'Training job <the new one> is still running' and left the older job selected."""
    older = staged.create_training_job(synthetic.hyperparameters(epochs=1))
    wait_done(staged, older)
    at = train_page().run()
    set_fields(at, epochs="400", mini_batch_size="16")
    at.selectbox(key="hp_precision_dtype").select("float32")
    at.button(key="train_start").click().run()
    new = next(j.job_name for j in staged.list_training_jobs() if j.job_name != older)
    try:
        assert at.selectbox(key="train_selected").value == new
        at.selectbox(key="train_selected").select(older)  # what the second click's rerun carries
        at.button(key="train_start").click().run()
        assert not at.exception
        assert not at.error, [e.value for e in at.error]
        assert len(staged.list_training_jobs()) == 2
        assert at.selectbox(key="train_selected").value == new
        assert any("second press was not taken" in t.value for t in at.toast)
        assert at.button(key="train_stop")  # the new job's panel, with its Stop
    finally:
        staged.stop_training_job(new)


def test_a_job_ended_by_early_stopping_reads_as_complete(staged):
    # tolerance 1.0: only a doubled validation accuracy counts as better, so with patience 1 the job stops
    # after epoch 2 or 3 of 40
    name = staged.create_training_job(synthetic.hyperparameters(
        epochs=40, early_stopping="True", early_stopping_min_epochs=1, early_stopping_patience=1,
        early_stopping_tolerance=1.0))
    job = wait_done(staged, name)
    assert job.status == "Completed" and len(job.epochs) < 40
    done = len(job.epochs)
    at = train_page().run()
    assert not at.exception
    bar = at.get("progress")[0]
    assert bar.proto.value == 100
    assert bar.proto.text == f"stopped early after {done} of 40 epochs (early_stopping)"
    assert at.dataframe[0].value.loc[0, "epochs"] == f"{done}/40 (stopped early)"
    assert any(m.value == f"**{name}** · Completed" for m in at.markdown)  # not "Completed · Completed"


def test_the_jobs_table_writes_seconds_with_one_decimal(staged):
    import json

    name = staged.create_training_job(synthetic.hyperparameters(epochs=1))
    wait_done(staged, name)
    at = train_page().run()
    columns = json.loads(at.dataframe[0].proto.columns)
    assert columns["seconds"]["type_config"]["format"] == "%.1f"


def test_the_data_fields_follow_a_later_staging_unless_edited(backend, tmp_path):
    """They were filled once per browser session: a restage with other counts (the CLI, another tab) left the
    form on the old ones, under a label saying they come from the staged data (browser audit)."""
    from tests.archives import fine_names, several_classes, synthetic_archive

    at = train_page().run()
    assert any("no staged data to read now" in m.value for m in at.markdown)  # not "filled in from the staged data"
    backend.stage_data("sample")
    at.run()
    assert at.text_input(key="hp_num_training_samples").value == "1000"
    assert any("filled in from the staged data" in m.value for m in at.markdown)
    names = fine_names()
    archive = synthetic_archive(tmp_path / "three.tar.gz", several_classes(7, (8, 48, 3)), several_classes(2, (8, 48, 3)))
    backend.stage_data(str(archive), [names[8], names[48], names[3]])
    at.run()
    assert not at.exception
    assert (at.text_input(key="hp_num_training_samples").value, at.text_input(key="hp_num_classes").value) == ("21", "3")
    at.text_input(key="hp_num_training_samples").input("20").run()  # the operator's own value stays
    backend.stage_data("sample")
    at.run()
    assert (at.text_input(key="hp_num_training_samples").value, at.text_input(key="hp_num_classes").value) == ("20", "2")
    assert any("the staged data has 1,000 training images of 2 classes" in m.value for m in at.markdown)


def test_the_data_fields_follow_a_staging_made_on_the_stage_page(backend, tmp_path):
    """The usual path: Train, then Stage data, restage, back to Train. Streamlit drops a page's field values
    while another page is shown, and the page took the dropped fields for the operator's edits (review)."""
    from tests.apptest import app_page
    from tests.archives import fine_names, several_classes, synthetic_archive

    backend.stage_data("sample")
    at = app_page("train").run()
    assert at.text_input(key="hp_num_training_samples").value == "1000"
    at.switch_page("views/stage.py").run()
    names = fine_names()
    archive = synthetic_archive(tmp_path / "three.tar.gz", several_classes(7, (8, 48, 3)), several_classes(2, (8, 48, 3)))
    backend.stage_data(str(archive), [names[8], names[48], names[3]])
    at.switch_page("views/train.py").run()
    assert not at.exception
    assert (at.text_input(key="hp_num_training_samples").value, at.text_input(key="hp_num_classes").value) == ("21", "3")
    assert any("filled in from the staged data" in m.value for m in at.markdown)


def test_values_that_cannot_do_what_they_seem_to_are_said_beside_start(staged):
    at = train_page().run()
    assert not [w for w in at.warning if "lr_scheduler_step" in w.value]
    set_fields(at, epochs="8")
    at.run()
    assert any(w.value.startswith("lr_scheduler_step=55,73: steps at or after epoch 8, the last, never come")
               for w in at.warning), [w.value for w in at.warning]
    at.button(key="train_start").click().run()  # said, not refused
    assert not at.exception and len(staged.list_training_jobs()) == 1
    name = staged.list_training_jobs()[0].job_name
    deadline = time.monotonic() + 60
    while "Note: lr_scheduler_step=55,73" not in staged.training_log(name) and time.monotonic() < deadline:
        time.sleep(0.1)  # the worker's log says it too
    staged.stop_training_job(name)
    assert "Note: lr_scheduler_step=55,73" in staged.training_log(name)


def test_a_job_started_elsewhere_is_announced_with_a_button_to_show_it(staged):
    older = staged.create_training_job(synthetic.hyperparameters(epochs=1))
    wait_done(staged, older)
    at = train_page().run()
    at.button(key="train_evaluate").click().run()
    assert at.selectbox(key="train_selected").value == older
    newer = staged.create_training_job(synthetic.hyperparameters(epochs=400))  # as `scones train` would
    try:
        at.run()
        assert not at.exception
        # the operator's view stays put (they may be reading the evaluation), and is told of the new job
        assert at.selectbox(key="train_selected").value == older
        assert at.metric[0].label == "Test accuracy"
        assert any(newer in i.value and "started from the CLI or another tab" in i.value for i in at.info)
        at.button(key="train_show_new").click().run()
        assert not at.exception
        assert at.selectbox(key="train_selected").value == newer
        assert not any("started from the CLI" in i.value for i in at.info)  # said once: it is shown now
        at.selectbox(key="train_selected").select(older).run()
        assert not any("started from the CLI" in i.value for i in at.info)  # seen, not announced again
    finally:
        staged.stop_training_job(newer)
    # a job that started and ended elsewhere between two looks is in the table, not announced
    quick = staged.create_training_job(synthetic.hyperparameters(epochs=1))
    wait_done(staged, quick)
    at.run()
    assert not any("started from the CLI" in i.value for i in at.info)
    assert quick in list(at.dataframe[0].value["job name"])
