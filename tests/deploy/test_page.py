"""views/deploy.py headless with AppTest, against a real local backend with the deployment service."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.deploy.conftest import DeployBackend
from tests.deploy.images import jpeg_bytes

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "deploy.py")


@pytest.fixture
def page_backend(deploy_backend: DeployBackend, monkeypatch):
    """The page's `ui.state.backend()` answers this backend (after integration, the real one does)."""
    import ui.state

    monkeypatch.setattr(ui.state, "backend", lambda: deploy_backend)
    return deploy_backend


def run_page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=60).run()


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_empty_workspace_says_what_to_do_first(page_backend):
    page_backend.fake_models.models.clear()
    at = run_page()
    assert not at.exception
    infos = " ".join(texts(at.info))
    assert "No model yet" in infos and "No endpoint: choose a model" in infos and "No endpoint is InService: deploy" in infos
    assert not at.button  # nothing to deploy, nothing to classify


def test_a_completed_job_without_a_model_gets_its_model_made_here(page_backend, artifact_a, monkeypatch):
    # A user who trained and came straight here must not meet a dead end (no model until "Create
    # model" on the Train page): the page offers the completed job and makes its model.
    from types import SimpleNamespace

    page_backend.fake_models.models.clear()
    jobs = [SimpleNamespace(job_name="job-done", status="Completed"),
            SimpleNamespace(job_name="job-running", status="InProgress")]
    made = []

    def create_model(job: str):
        made.append(job)
        model = replace(page_backend.fake_models.add(f"model-of-{job}", artifact_a), job_name=job)
        page_backend.fake_models.models[model.model_name] = model
        return model

    monkeypatch.setattr(page_backend, "list_training_jobs", lambda: jobs)
    monkeypatch.setattr(page_backend, "create_model", create_model)
    at = run_page()
    assert not at.exception
    assert any("create one from a completed training job" in i for i in texts(at.info))
    assert at.selectbox(key="deploy_job").options == ["job-done"]  # not the one still running
    at.button(key="deploy_create_model").click().run()
    assert not at.exception and made == ["job-done"]
    assert at.selectbox(key="deploy_model").value == "model-of-job-done"
    assert not [e for e in at.selectbox if e.key == "deploy_job"]  # every completed job has its model now

    jobs.append(SimpleNamespace(job_name="job-later", status="Completed"))  # with a model shown, from the expander
    at.run()
    assert at.selectbox(key="deploy_job").options == ["job-later"]
    at.button(key="deploy_create_model").click().run()
    assert not at.exception and made == ["job-done", "job-later"]
    assert at.selectbox(key="deploy_model").value == "model-of-job-later"  # the new one is the one deployed


def test_jobs_that_cannot_be_listed_leave_the_page_serving(page_backend, monkeypatch):
    from backend.api import Throttling

    def throttled():
        raise Throttling("Rate exceeded for DescribeTrainingJob.")

    monkeypatch.setattr(page_backend, "list_training_jobs", throttled)
    at = run_page()
    assert not at.exception
    assert at.selectbox(key="deploy_model").value == "model-a" and at.button(key="deploy_go")
    assert any("Training jobs could not be listed" in c for c in texts(at.caption))


def test_deploy_from_the_page_then_try_it_on_uploads(page_backend, sample_pngs):
    at = run_page()
    assert not at.exception
    assert at.selectbox(key="deploy_model").value == "model-a"
    assert [(m.label, m.value) for m in at.metric] == [("validation accuracy", "0.870"), ("train accuracy", "0.910"),
                                                         ("Classes", "2")]
    assert at.text_input(key="deploy_destination").value == "s3://scones-unlimited/data_capture"
    assert any("A local endpoint is one process on this machine" in c for c in texts(at.caption))
    assert at.text_input(key="deploy_endpoint_name").value == "scones-endpoint"  # the CLI's default too
    at.text_input(key="deploy_endpoint_name").set_value("page-ep")
    at.slider(key="deploy_percent").set_value(50)
    at.button(key="deploy_go").click().run()
    assert not at.exception
    endpoint = page_backend.describe_endpoint("page-ep")
    assert endpoint.model_name == "model-a" and endpoint.capture.sampling_percent == 50
    assert any("Deploying model-a to endpoint page-ep" in s for s in texts(at.success))
    assert any("page-ep" in m and ("Creating" in m or "InService" in m) for m in texts(at.markdown))

    assert page_backend.wait_endpoint("page-ep", timeout=30).status == "InService"
    at.run()
    assert any("**page-ep** :green-badge[InService]" == m for m in texts(at.markdown))
    assert at.selectbox(key="try_endpoint").value == "page-ep"
    files = [(p.name, p.read_bytes(), "image/png") for p in sample_pngs[:2]]
    files.append(("big-photo.jpg", jpeg_bytes(1200, 800, seed=9), "image/jpeg"))
    files.append(("notes.png", b"plain text, not an image", "image/png"))
    at.file_uploader(key="try_upload").set_value(files).run()
    at.button(key="try_go").click().run()
    assert not at.exception
    verdicts = [m for m in texts(at.markdown) if " · confidence " in m]
    assert len(verdicts) == 3 and all(v.startswith(("**bicycle**", "**motorcycle**")) for v in verdicts)
    assert len(at.get("vega_lite_chart")) == 3  # one probability chart per image answered
    assert [e for e in texts(at.error) if "Received client error (400) from endpoint page-ep" in e]
    table = at.dataframe[0].value
    assert list(table["image"]) == [sample_pngs[0].name, sample_pngs[1].name, "big-photo.jpg"]


def test_updating_an_endpoint_starts_from_its_own_capture_settings(page_backend):
    """Deploying again with the form's defaults silently moved an endpoint's capture back to the defaults."""
    page_backend.deploy("model-a", "scones-endpoint", 30, capture_output=False,
                        destination="s3://scones-unlimited/elsewhere", instance_type="ml.c5.large")
    at = run_page()
    assert at.text_input(key="deploy_endpoint_name").value == "scones-endpoint"
    assert at.selectbox(key="deploy_instance").value == "ml.c5.large"  # not the form's first choice
    assert at.slider(key="deploy_percent").value == 30
    assert at.multiselect(key="deploy_options").value == ["Input"]
    assert at.text_input(key="deploy_destination").value == "s3://scones-unlimited/elsewhere"
    # A new name starts from the defaults, and says so: it took this endpoint's settings without a word (audit)
    at.text_input(key="deploy_endpoint_name").set_value("fresh-ep").run()
    assert at.slider(key="deploy_percent").value == 100 and at.multiselect(key="deploy_options").value == ["Input", "Output"]
    assert at.selectbox(key="deploy_instance").value != "ml.c5.large"
    assert not at.exception


def test_try_it_on_staged_test_images(page_backend):
    page_backend.stage_data("sample")
    page_backend.deploy("model-a", "ep", 100)
    assert page_backend.wait_endpoint("ep", timeout=30).status == "InService"
    at = run_page()
    at.segmented_control(key="try_source").set_value("Staged test images").run()
    picked = at.multiselect(key="try_staged")
    assert len(picked.options) == 8 and len(picked.value) == 2
    at.button(key="try_go").click().run()
    assert not at.exception
    assert len([m for m in texts(at.markdown) if " · confidence " in m]) == 2
    table = at.dataframe[0].value
    assert len(table) == 2
    # each staged image's own class beside the answer, and whether it was right (browser audit: not shown)
    truth = {s.key.rsplit("/", 1)[-1]: s.label for s in page_backend.staged_samples("test", per_class=4)}
    assert list(table["true class"]) == [truth[n] for n in table["image"]]
    assert list(table["right"]) == ["✓" if p == t else "✗" for p, t in zip(table["predicted"], table["true class"])]
    # another selection: the answers above were not its answers, so they go until Classify (audit)
    at.multiselect(key="try_staged").set_value(picked.options[4:6]).run()
    assert not [m for m in texts(at.markdown) if " · confidence " in m] and not at.dataframe
    assert any("The images changed since the last Classify" in c for c in texts(at.caption))
    at.button(key="try_go").click().run()
    assert list(at.dataframe[0].value["image"]) == picked.options[4:6]


def test_a_tie_is_shown_as_undecided_and_never_marked_right(page_backend, monkeypatch):
    """An answer of [0.5, 0.5] read 'bicycle · confidence 50.0%' with a tick under right (audit)."""
    from backend.api import Prediction

    page_backend.stage_data("sample")
    page_backend.deploy("model-a", "ep", 100)
    assert page_backend.wait_endpoint("ep", timeout=30).status == "InService"
    monkeypatch.setattr(type(page_backend), "invoke_endpoint",
                        lambda self, name, data, content_type: Prediction((0.5, 0.5), ("bicycle", "motorcycle")))
    at = run_page()
    at.segmented_control(key="try_source").set_value("Staged test images").run()
    at.button(key="try_go").click().run()
    assert not at.exception
    assert [m for m in texts(at.markdown) if "Undecided" in m] == [
        "**Undecided**: bicycle and motorcycle tie at 50.0% each"] * 2
    table = at.dataframe[0].value
    assert list(table["predicted"]) == ["tie: bicycle, motorcycle"] * 2 and list(table["right"]) == ["", ""]
    assert Prediction((0.2, 0.8), ("a", "b")).tied == () and Prediction((0.4, 0.4, 0.2), ("a", "b", "c")).tied == ("a", "b")


def test_delete_and_start_from_the_list(page_backend):
    page_backend.deploy("model-a", "ep", 100)
    assert page_backend.wait_endpoint("ep", timeout=30).status == "InService"
    page_backend.stop_endpoint("ep")
    at = run_page()
    assert any(m == "**ep** :gray-badge[OutOfService]" for m in texts(at.markdown))
    at.button(key="start_ep").click().run()
    assert not at.exception
    assert page_backend.describe_endpoint("ep").status in ("Creating", "InService")
    at.button(key="delete_ep").click().run()  # it serves: asked first, even with no workflow calling it (audit)
    assert not at.exception and page_backend.describe_endpoint("ep").status in ("Creating", "InService")
    assert any("No state machine calls ep now. Delete it?" in i for i in texts(at.info))
    at.button(key="delete_confirm_ep").click().run()
    assert not at.exception
    assert page_backend.list_endpoints() == []
    assert any("No endpoint: choose a model" in i for i in texts(at.info))
    assert [t.value for t in at.toast] == ["Deleted endpoint ep."]


def test_a_refused_delete_says_why_and_no_deleted_toast_follows(page_backend, monkeypatch):
    from backend.api import AccessDenied

    page_backend.deploy("model-a", "ep", 100)
    assert page_backend.wait_endpoint("ep", timeout=30).status == "InService"

    def refused(name):
        raise AccessDenied("AccessDeniedException: not allowed to delete endpoints.")

    monkeypatch.setattr(page_backend, "delete_endpoint", refused)
    at = run_page()
    at.button(key="delete_ep").click().run()
    at.button(key="delete_confirm_ep").click().run()
    assert any("not allowed to delete endpoints" in e for e in texts(at.error))
    at.run()  # a later redraw: the failed delete is not announced as done
    assert not at.exception and not at.toast
    assert page_backend.describe_endpoint("ep").status == "InService"


def test_a_new_endpoint_name_starts_from_the_default_settings_not_the_endpoint_shown_first(page_backend):
    """The form showed another endpoint's 50% capture; typing a new name deployed with it, unsaid (audit)."""
    page_backend.deploy("model-a", "cli-endpoint", 50)
    assert page_backend.wait_endpoint("cli-endpoint", timeout=30).status == "InService"
    at = run_page()
    assert at.text_input(key="deploy_endpoint_name").value == "cli-endpoint" and at.slider(key="deploy_percent").value == 50
    assert "Updates cli-endpoint: it starts from its own instance type and capture settings." in texts(at.caption)
    at.text_input(key="deploy_endpoint_name").set_value("fresh-endpoint").run()
    assert at.slider(key="deploy_percent").value == 100
    assert "A new endpoint fresh-endpoint: it starts from the default settings (kept as you edit them)." in texts(at.caption)
    at.slider(key="deploy_percent").set_value(30).run()  # typed for the new name: kept when the name is edited
    at.text_input(key="deploy_endpoint_name").set_value("fresh-endpoint-2").run()
    assert at.slider(key="deploy_percent").value == 30
    at.text_input(key="deploy_endpoint_name").set_value("cli-endpoint").run()
    assert at.slider(key="deploy_percent").value == 50


def test_try_it_names_a_failed_endpoint_and_how_to_start_it(page_backend):
    import os
    import signal

    page_backend.deploy("model-a", "ep", 100)
    assert page_backend.wait_endpoint("ep", timeout=30).status == "InService"
    from tests.deploy.test_lifecycle import process_of, wait_dead

    pid, start = process_of(page_backend, "ep")
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid, start)
    assert page_backend.describe_endpoint("ep").status == "Failed"
    at = run_page()
    assert "ep is Failed: press Start on its card above, then try it here." in texts(at.info)


def test_deleting_an_endpoint_the_workflow_calls_asks_first(page_backend, monkeypatch):
    """One click deleted it, the workflow failing at its classify step from then on without a word (audit)."""
    from backend.api import SconesError, StateMachine

    page_backend.deploy("model-a", "ep", 100)
    assert page_backend.wait_endpoint("ep", timeout=30).status == "InService"
    # the workflow as list_state_machines gives it (deploying one needs a trained model; these models are fakes)
    machine = StateMachine("scones-workflow", "arn:aws:states:us-east-1:123456789012:stateMachine:scones-workflow",
                           "ep", 0.5, {"classifyImage": "arn:aws:lambda:us-east-1:123456789012:function:classifyImage"},
                           {}, "", "")
    monkeypatch.setattr(page_backend, "list_state_machines", lambda: [machine])
    at = run_page()
    at.button(key="delete_ep").click().run()
    assert not at.exception
    assert page_backend.describe_endpoint("ep").status == "InService"  # nothing deleted yet
    warning = " ".join(texts(at.warning))
    assert "scones-workflow calls ep: once it is deleted, its executions fail" in warning
    at.button(key="delete_keep_ep").click().run()
    assert not at.warning and page_backend.describe_endpoint("ep").status == "InService"
    # The question stays a question: a rerun that finds the machines gone, or unreadable, deletes nothing
    at.button(key="delete_ep").click().run()
    monkeypatch.setattr(page_backend, "list_state_machines", lambda: [])
    at.run()
    assert page_backend.describe_endpoint("ep").status == "InService"
    assert any("No state machine calls ep now. Delete it?" in i for i in texts(at.info))

    def unreadable():
        raise SconesError("ThrottlingException: Rate exceeded.")

    monkeypatch.setattr(page_backend, "list_state_machines", unreadable)
    at.run()
    assert page_backend.describe_endpoint("ep").status == "InService"
    assert any("could not be read (ThrottlingException: Rate exceeded.)" in w for w in texts(at.warning))
    at.button(key="delete_keep_ep").click().run()
    at.button(key="delete_ep").click().run()  # unreadable: asked, not deleted at once
    assert page_backend.describe_endpoint("ep").status == "InService"
    at.button(key="delete_confirm_ep").click().run()
    assert not at.exception
    assert page_backend.list_endpoints() == []


def test_bad_settings_show_one_sentence_and_deploy_nothing(page_backend):
    at = run_page()
    at.multiselect(key="deploy_options").set_value([]).run()
    at.button(key="deploy_go").click().run()
    assert any("Choose Input, Output or both" in e for e in texts(at.error))
    at.multiselect(key="deploy_options").set_value(["Output"])
    at.text_input(key="deploy_endpoint_name").set_value("bad name!")
    at.button(key="deploy_go").click().run()
    assert any("Endpoint name 'bad name!' is not valid" in e for e in texts(at.error))
    at.text_input(key="deploy_endpoint_name").set_value("ok-name")
    at.text_input(key="deploy_destination").set_value("ftp://nowhere")
    at.button(key="deploy_go").click().run()
    assert any("is not an S3 URI" in e for e in texts(at.error))
    assert not at.exception
    assert page_backend.list_endpoints() == [] and page_backend.list_endpoint_configs() == []


def test_a_model_of_another_backend_is_flagged(page_backend, artifact_a):
    page_backend.fake_models.models.clear()
    page_backend.fake_models.add("cloud-model", artifact_a, backend="aws")
    at = run_page()
    assert any("belongs to the aws backend" in w for w in texts(at.warning))
    at.button(key="deploy_go").click().run()
    assert any("do not cross backends" in e for e in texts(at.error))
    assert page_backend.list_endpoints() == []


def test_probability_chart_builder():
    from ui.charts_deploy import probabilities_frame, probability_chart, probability_chart_height

    df = probabilities_frame(("bicycle", "motorcycle"), (0.2, 0.8))
    assert list(df["predicted"]) == [False, True]
    spec = probability_chart(df).to_dict()
    assert spec["height"] == 56 and probability_chart_height(df) == 116
    assert spec["layer"][0]["mark"]["type"] == "bar" and spec["layer"][1]["mark"]["type"] == "text"
    assert spec["layer"][0]["encoding"]["x"]["scale"]["domain"] == [0, 1]
    assert spec["layer"][0]["encoding"]["y"]["sort"] == ["bicycle", "motorcycle"]
    with pytest.raises(ValueError):
        probabilities_frame(("a",), (0.5, 0.5))


def test_a_blank_endpoint_name_is_refused_not_named_after_the_model(page_backend):
    at = run_page()
    at.text_input(key="deploy_endpoint_name").set_value("  ").run()
    at.button(key="deploy_go").click().run()
    assert not at.exception
    assert [e for e in texts(at.error) if e.startswith("Enter an endpoint name")]
    assert page_backend.list_endpoints() == []  # not an endpoint called model-a


def test_only_a_serving_endpoint_shows_its_url_as_a_link_and_times_read_as_utc(page_backend):
    import os
    import re
    import signal
    import time

    page_backend.deploy("model-a", "ep", 100)
    assert page_backend.wait_endpoint("ep", timeout=30).status == "InService"
    url = page_backend.describe_endpoint("ep").url
    at = run_page()
    caption = next(c for c in texts(at.caption) if c.startswith("capture 100%"))
    assert f" · `{url}/invocations` · " in caption  # InService: what answers (a browser's GET / would be a 404)
    assert re.search(r" · updated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", caption), caption
    row = page_backend.db.query_one("SELECT pid FROM endpoints WHERE endpoint_name='ep'")
    os.kill(row["pid"], signal.SIGKILL)  # a killed endpoint reads Failed; its record keeps the port
    deadline = time.monotonic() + 30
    while page_backend.describe_endpoint("ep").status != "Failed" and time.monotonic() < deadline:
        time.sleep(0.1)
    at.run()
    assert any(m == "**ep** :red-badge[Failed]" for m in texts(at.markdown))
    caption = next(c for c in texts(at.caption) if c.startswith("capture 100%"))
    assert f" · `{url}` not serving · " in caption, caption  # code, not a link to a dead port


def test_uploads_over_the_endpoints_limits_are_refused_with_what_to_do(page_backend, sample_pngs, monkeypatch):
    import io

    import numpy as np
    from PIL import Image

    page_backend.deploy("model-a", "ep", 100)
    assert page_backend.wait_endpoint("ep", timeout=30).status == "InService"
    sent = []
    invoke = page_backend.invoke_endpoint

    def counted(name, body, content_type="image/png"):
        sent.append(len(body))
        return invoke(name, body, content_type)

    monkeypatch.setattr(page_backend, "invoke_endpoint", counted)
    # Pillow's own limit as on a fresh process (an endpoint model loaded in this one sets it to 40 MP)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(1024 * 1024 * 1024 // 4 // 3))
    noise = io.BytesIO()  # random pixels do not compress: about 6.5 MB
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1500, 1500, 3), dtype=np.uint8)).save(noise, "PNG")
    wide = io.BytesIO()  # 48 megapixels of one colour: a few kB
    Image.new("1", (8000, 6000)).save(wide, "PNG")
    assert len(noise.getvalue()) > 6 * 2**20
    at = run_page()
    uploader = at.get("file_uploader")[0]
    assert uploader.proto.label == "PNG or JPEG images, up to 6,291,456 bytes (6 MiB) and 40 megapixels each"
    # The browser refuses a bigger file (Streamlit said 1GB). Streamlit counts decimal megabytes: at 6 it refused
    # a 6,144,684-byte PNG that InvokeEndpoint and `scones invoke` take (browser audit); the page checks the bytes.
    assert uploader.proto.max_upload_size_mb == 7 and 6 * 1_000_000 < 6 * 2**20 <= 7 * 1_000_000
    small = (sample_pngs[0].name, sample_pngs[0].read_bytes(), "image/png")
    at.file_uploader(key="try_upload").set_value([("heavy.png", noise.getvalue(), "image/png"),
                                                  ("wide.png", wide.getvalue(), "image/png"), small]).run()
    at.button(key="try_go").click().run()
    assert not at.exception
    assert texts(at.error) == [
        f"heavy.png is {len(noise.getvalue()):,} bytes; the endpoint takes at most 6,291,456 bytes (6 MiB, "
        "SageMaker's InvokeEndpoint limit): send a smaller image.",
        "wide.png is 8000x6000 pixels; the endpoint takes at most 40 megapixels (40,000,000 pixels): "
        "send a smaller image."]
    assert sent == [sample_pngs[0].stat().st_size]  # only the image the endpoint takes was sent
    assert len([m for m in texts(at.markdown) if " · confidence " in m]) == 1


def test_try_it_keeps_its_image_source_and_drops_results_of_a_model_the_endpoint_no_longer_serves(
        page_backend, artifact_b):
    from tests.apptest import app_page

    page_backend.stage_data("sample")
    page_backend.fake_models.add("model-b", artifact_b, classes=("motorcycle", "bicycle"))
    page_backend.deploy("model-a", "ep", 100)
    assert page_backend.wait_endpoint("ep", timeout=30).status == "InService"
    at = app_page("deploy").run()
    at.segmented_control(key="try_source").set_value("Staged test images").run()
    picked = at.multiselect(key="try_staged").options[2:5]
    at.multiselect(key="try_staged").set_value(picked).run()
    at.button(key="try_go").click().run()
    assert len([m for m in texts(at.markdown) if " · confidence " in m]) == 3
    at.switch_page("views/home.py").run()  # Streamlit drops the page's widget values there
    at.switch_page("views/deploy.py").run()
    assert not at.exception
    assert at.segmented_control(key="try_source").value == "Staged test images"  # not back to Upload
    assert at.multiselect(key="try_staged").value == picked
    assert at.button(key="try_go").disabled is False
    assert len([m for m in texts(at.markdown) if " · confidence " in m]) == 3  # still model-a's: still shown
    page_backend.deploy("model-b", "ep", 100)  # elsewhere (the CLI, another tab): ep now serves model-b
    assert page_backend.wait_endpoint("ep", timeout=30).status == "InService"
    assert page_backend.describe_endpoint("ep").model_name == "model-b"
    at.run()
    assert not at.exception
    assert not [m for m in texts(at.markdown) if " · confidence " in m]
    assert any("serves model model-b now" in i for i in texts(at.info))


def test_a_model_served_as_an_8_bit_graph_is_labelled_with_that_graphs_accuracy(page_backend, artifact_a):
    page_backend.fake_models.add("model-int8", artifact_a, metrics={
        "train:accuracy": 0.91, "validation:accuracy": 0.87, "validation:accuracy_served": 0.865})
    at = run_page()
    at.selectbox(key="deploy_model").set_value("model-int8").run()
    assert not at.exception
    box = at.selectbox(key="deploy_model")
    assert box.format_func("model-int8") == "model-int8 · served accuracy 0.865 (8-bit graph)"
    assert box.format_func("model-a") == "model-a · validation accuracy 0.870"
    # plain labels, the served one first, each saying in its help which metric it is (the raw names were cut)
    assert [(m.label, m.value) for m in at.metric] == [("served accuracy", "0.865"), ("validation accuracy", "0.870"),
                                                         ("train accuracy", "0.910"), ("Classes", "2")]
    assert at.metric[0].help.startswith("validation:accuracy_served: the accuracy of the 8-bit graph the endpoint serves")
    assert at.metric[1].help == "validation:accuracy: PyTorch's at the last epoch, as the training chart shows it"
