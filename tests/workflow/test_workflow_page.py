"""The workflow page in AppTest, against the shared workspace (a real endpoint and workflow)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from tests.workspaces import workflow_of_its_own

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def wf_page(wf_home, wf, monkeypatch):
    from ui.state import backend

    monkeypatch.setenv("SCONES_HOME", str(wf_home))
    backend.clear()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.switch_page("views/workflow.py")
    yield at
    if "workflow" in vars(backend()):
        backend().workflow.close()
    backend.clear()


def test_workflow_page_runs_a_batch_and_shows_an_execution(wf_page, wf):
    at = wf_page.run()
    assert not at.exception
    assert any("scones-workflow" in m.value and "threshold" in m.value for m in at.markdown)
    at.number_input(key="wf_count").set_value(3)
    at.checkbox(key="wf_override").check().run()
    at.slider(key="wf_threshold").set_value(0.0)
    at.button(key="wf_start").click().run()
    assert not at.exception
    from ui.state import backend

    started = backend().list_workflow_executions(limit=3)
    names = [e.name for e in started]
    backend().wait_workflow_executions([e.arn for e in started], timeout=60)
    time.sleep(0.2)
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(names) <= set(table["name"])
    assert set(table[table["name"].isin(names)]["status"]) == {"SUCCEEDED"}
    # they ran at the override, not the workflow's threshold shown above: the table says so
    assert set(table[table["name"].isin(names)]["threshold"]) == {"0.00"}
    # ... and one started without its own threshold says the workflow's it ran with
    plain = backend().wait_workflow_executions(backend().start_workflow_batch(1), timeout=60)[0]
    time.sleep(0.2)
    at.run()
    table = at.dataframe[0].value
    machine = backend().describe_state_machine()
    assert list(table[table["name"] == plain.name]["threshold"]) == [f"{machine.threshold:.2f}"]
    labels = [m.label for m in at.metric]
    assert labels == ["Executions", "Succeeded", "Below threshold", "Failed otherwise", "Running"]
    assert at.selectbox(key="wf_pick").value in set(table["name"])
    # the picker says which execution each is: status, answer or error, start (a bare name told nothing: audit)
    pick = at.selectbox(key="wf_pick")
    row = table[table["name"] == pick.value].iloc[0]
    shown = pick.format_func(pick.value)
    assert shown.startswith(f"{pick.value} · {row['status']} · ") and shown.endswith(" UTC"), shown
    assert (row["error"] or row["class"]) in shown
    assert list(table.columns[:7]) == ["name", "status", "class", "right", "confidence", "error", "threshold"]  # seen first
    # each staged test image's own class, and whether the answer was it (audit: right and wrong looked the same)
    truth = backend().test_image_labels()
    ours = table[table["name"].isin(names)]
    assert len(ours) == 3 and all(t == truth[k] for t, k in zip(ours["true class"], ours["image"]))
    assert list(ours["right"]) == ["✓" if c == t else "✗" for c, t in zip(ours["class"], ours["true class"])]
    history = at.dataframe[1].value
    assert history["type"].iloc[0] == "ExecutionStarted"
    # each event's details on one line; a long one (the base64 image) is cut and says so
    assert history["details"].str.len().max() <= 160
    assert any(d.endswith("…") and "image_data" in d for d in history["details"])
    assert any("Select an event's row to read its details in full." in c.value for c in at.caption)
    labels = [e.label for e in at.expander]
    assert any(label.startswith("serializeImageData") for label in labels), (labels, at.selectbox(key="wf_pick").value, names)


def test_the_run_threshold_follows_the_workflow_until_another_is_asked_for(wf_page, wf):
    machine = wf.describe_state_machine("scones-workflow")
    try:
        wf.deploy_workflow(machine.endpoint_name, 0.33)
        at = wf_page.run()
        assert at.slider(key="wf_threshold").value == pytest.approx(0.33)
        wf.deploy_workflow(machine.endpoint_name, 0.8)  # updated (here, or on another page or process)
        at.run()
        assert at.slider(key="wf_threshold").value == pytest.approx(0.8)  # not the 0.33 it showed
        at.checkbox(key="wf_override").check().run()
        at.slider(key="wf_threshold").set_value(0.1).run()
        wf.deploy_workflow(machine.endpoint_name, 0.6)
        at.run()
        assert at.slider(key="wf_threshold").value == pytest.approx(0.1)  # the one asked for stays
        assert any("run with threshold **0.10**, not the workflow's 0.60" in c.value for c in at.caption)  # said
        at.checkbox(key="wf_override").uncheck().run()
        assert at.slider(key="wf_threshold").value == pytest.approx(0.6)
        assert not any("not the workflow's" in c.value for c in at.caption)
    finally:
        wf.deploy_workflow(machine.endpoint_name, machine.threshold)


def test_a_one_off_threshold_ends_with_the_state_machine_it_was_set_against(wf_page, wf):
    """After a clean up and a redeploy, the ticked 'Another threshold' stayed on, and new executions ran
    against it while the page's header gave the new workflow's threshold (audit)."""
    at = wf_page.run()
    machine = wf.describe_state_machine("scones-workflow")
    at.checkbox(key="wf_override").check().run()
    at.slider(key="wf_threshold").set_value(0.25).run()
    at.switch_page("views/home.py").run()  # kept across pages
    at.switch_page("views/workflow.py").run()
    assert at.checkbox(key="wf_override").value and at.slider(key="wf_threshold").value == pytest.approx(0.25)
    wf.delete_state_machine("scones-workflow")
    try:
        wf.deploy_workflow(machine.endpoint_name, machine.threshold)  # deployed anew: created again
        at.run()
        assert not at.exception
        assert not at.checkbox(key="wf_override").value
        assert at.slider(key="wf_threshold").value == pytest.approx(machine.threshold)
    finally:
        if not wf.list_state_machines():
            wf.deploy_workflow(machine.endpoint_name, machine.threshold)


def test_workflow_page_import_names_an_unknown_function(wf_page):
    at = wf_page.run()
    assert not at.exception
    assert any(e.label.startswith("Import a definition") for e in at.expander)
    unknown = {"StartAt": "A", "States": {"A": {"Type": "Task", "End": True,
                                                "Resource": "arn:aws:lambda:us-east-1:123456789012:function:mysteryFn"}}}
    at.file_uploader(key="wf_import_file").set_value(("x.json", json.dumps(unknown).encode(), "application/json"))
    at.run()
    at.button(key="wf_import_go").click().run()
    errors = [e.value for e in at.error]
    assert any("calls function 'mysteryFn', which has no handler file in lambdas/: map it to one of" in e
               for e in errors), errors
    assert not any("--map" in e for e in errors)  # the page's words, not the CLI's


def test_an_import_shows_at_once_in_the_list_and_the_run_selector(wf_page, wf):
    passes = {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}
    try:
        at = wf_page.run()
        at.file_uploader(key="wf_import_file").set_value(("p.json", json.dumps(passes).encode(), "application/json"))
        at.text_input(key="wf_import_name").set_value("page-imported")
        at.run()
        at.button(key="wf_import_go").click().run()
        assert not at.exception
        assert [s.value for s in at.success] == ["Imported page-imported (it calls no Lambda function)."]
        assert at.selectbox(key="wf_machine").value == "page-imported"
        assert "page-imported" in at.selectbox(key="wf_machine").options
        assert any("**page-imported**" in m.value for m in at.markdown)
        assert not any("page-imported calls" in w.value for w in at.warning)  # it calls no endpoint
    finally:
        wf.delete_state_machine("page-imported")


def test_a_second_press_of_start_while_the_page_reruns_starts_nothing_more(wf_page, wf):
    at = wf_page.run()
    at.number_input(key="wf_count").set_value(2)
    at.checkbox(key="wf_override").check().run()
    at.slider(key="wf_threshold").set_value(0.0)
    before = len(wf.list_workflow_executions(limit=1000))
    at.button(key="wf_start").click().run()
    at.button(key="wf_start").click().run()  # the second click of a double-click
    assert not at.exception
    assert len(wf.list_workflow_executions(limit=1000)) == before + 2
    time.sleep(2.1)
    at.button(key="wf_start").click().run()  # a later press is a new start
    assert len(wf.list_workflow_executions(limit=1000)) == before + 4


def test_a_chosen_image_runs_once_and_a_failure_reads_as_a_sentence(wf_page, wf):
    at = wf_page.run()
    assert at.number_input(key="wf_count").value == 5  # random test images
    at.radio(key="wf_source").set_value("A chosen test image").run()
    assert not at.exception
    assert at.number_input(key="wf_count_chosen").value == 1  # not the 5 of the random ones
    at.checkbox(key="wf_override").check().run()
    at.slider(key="wf_threshold").set_value(1.0)
    before = len(wf.list_workflow_executions(limit=1000))
    at.button(key="wf_start").click().run()
    started = wf.list_workflow_executions(limit=1000)
    assert len(started) == before + 1
    wf.wait_workflow_executions([started[0].arn], timeout=60)
    at.session_state["wf_pick"] = started[0].name
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith("THRESHOLD_CONFIDENCE_NOT_MET: Highest confidence") for e in errors), errors
    assert not any("stackTrace" in e for e in errors)  # the raw cause is folded away


def test_a_workflow_whose_endpoint_is_gone_is_flagged(wf_page, wf):
    model = wf.describe_endpoint("scones-endpoint").model_name
    wf.deploy(model, "short-lived", capture_percent=0)
    assert wf.wait_endpoint("short-lived", timeout=60).status == "InService"
    workflow_of_its_own(wf, "wf-orphan", "short-lived", 0.5)
    try:
        arn = wf.start_workflow_batch(1, threshold=0.0, state_machine="wf-orphan")[0]
        wf.wait_workflow_executions([arn], timeout=60)
        wf.delete_endpoint("short-lived")
        time.sleep(2.1)  # past the service's short read cache
        assert wf.describe_workflow_execution(arn).label in ("bicycle", "motorcycle")  # not "class 0"
        at = wf_page.run()
        assert not at.exception
        warnings = [w.value for w in at.warning]
        assert any("short-lived that wf-orphan calls no longer exists" in w and "Choose an InService endpoint below" in w
                   for w in warnings), warnings  # scones-endpoint serves: the fix is to choose it
        assert not any("scones-workflow calls" in w for w in warnings)
        # said again beside Start, for the machine chosen there: Start stays, as in the console
        at.selectbox(key="wf_machine").select("wf-orphan").run()
        assert any("wf-orphan calls endpoint short-lived, which does not serve now: these executions will fail"
                   in w.value for w in at.warning)
        assert not at.button(key="wf_start").disabled
        at.selectbox(key="wf_machine").select("scones-workflow").run()
        assert not any("which does not serve now" in w.value for w in at.warning)
        step = wf.step_statuses()["workflow"]  # Home says so too, rather than 'done' from past executions
        assert step.state == "failed" and "short-lived that wf-orphan calls no longer exists" in step.detail
        # An execution started anyway fails with the handler's words (Lambda's); the page adds its own fix.
        lost = wf.wait_workflow_executions(wf.start_workflow_batch(1, threshold=0.0, state_machine="wf-orphan"),
                                           timeout=60)[0]
        assert lost.error == "EndpointNotFound"
        time.sleep(2.1)  # past the page's short read cache
        at.run()
        at.session_state["wf_pick"] = lost.name
        at.run()
        assert any(e.value.startswith("EndpointNotFound: Endpoint 'short-lived' was not found") for e in at.error)
        assert any(c.value.startswith("On this dashboard: deploy a model on the Deploy page") for c in at.caption)
    finally:
        wf.delete_state_machine("wf-orphan")
    assert "wf-orphan" not in wf.step_statuses()["workflow"].detail  # gone with its machine


def test_the_lost_endpoint_warning_offers_the_fix_there_is():
    from ui.cards import lost_endpoint_text

    gone = lost_endpoint_text("ep", ["flow"], None, serving=False)
    assert gone.startswith("The endpoint ep that flow calls no longer exists: its executions will fail")
    assert "deploy a model on the Deploy page, then come back" in gone and "below" not in gone
    other = lost_endpoint_text("ep", ["a", "b"], "Failed", serving=True)
    assert other.startswith("The endpoint ep that a, b call is Failed: their executions")
    assert "Choose an InService endpoint below" in other


def test_a_count_outside_1_to_500_is_refused_not_replaced_by_the_last_valid_one(wf_page, wf):
    at = wf_page.run()
    before = len(wf.list_workflow_executions(limit=1000))
    for bad in (0, 600):
        at.number_input(key="wf_count").set_value(bad).run()
        assert not at.exception
        assert any(f"not {bad:,}" in e.value and "1 to 500" in e.value for e in at.error), [e.value for e in at.error]
        assert at.button(key="wf_start").disabled
    at.number_input(key="wf_count").set_value(2).run()
    assert not any("1 to 500" in e.value for e in at.error) and not at.button(key="wf_start").disabled
    assert len(wf.list_workflow_executions(limit=1000)) == before  # nothing was started meanwhile


def test_the_run_settings_are_kept_across_pages(wf_page, wf):
    at = wf_page.run()
    at.radio(key="wf_source").set_value("A chosen test image").run()
    key = wf.test_image_keys()[3]
    at.selectbox(key="wf_key").set_value(key)
    at.number_input(key="wf_count_chosen").set_value(4)
    at.checkbox(key="wf_override").check().run()
    at.slider(key="wf_threshold").set_value(0.25).run()
    at.switch_page("views/home.py").run()
    assert not at.exception
    at.switch_page("views/workflow.py").run()
    assert not at.exception
    assert at.radio(key="wf_source").value == "A chosen test image"
    assert at.selectbox(key="wf_key").value == key
    assert at.number_input(key="wf_count_chosen").value == 4
    assert at.checkbox(key="wf_override").value and at.slider(key="wf_threshold").value == pytest.approx(0.25)


def test_a_machine_of_thousands_of_states_is_listed_not_drawn_and_one_without_functions_shows_no_endpoint(wf_page, wf):
    states = {f"S{i}": {"Type": "Pass", "Next": f"S{i + 1}"} for i in range(400)}
    states["S400"] = {"Type": "Succeed"}
    wf.import_workflow(json.dumps({"StartAt": "S0", "States": states}), {}, name="long-chain")
    try:
        arn = wf.start_workflow_execution({}, name=f"long-{time.time_ns()}", state_machine="long-chain")
        assert wf.wait_workflow_executions([arn], timeout=60)[0].status == "SUCCEEDED"
        at = wf_page.run()
        at.session_state["wf_pick"] = arn.rsplit(":", 1)[-1]
        at.run()
        assert not at.exception
        assert any("401 states are too many to draw" in i.value for i in at.info), [i.value for i in at.info]
        assert len(at.expander) <= 100 + 1  # the import expander besides
        assert any("The 100 states that ran last of 401" in c.value for c in at.caption)
        assert any(m.value.startswith("**long-chain** · calls no Lambda function") for m in at.markdown)
        assert not any("long-chain" in m.value and "endpoint" in m.value for m in at.markdown)
        assert "long-chain" in set(at.dataframe[0].value["machine"])
    finally:
        wf.delete_state_machine("long-chain")


def test_a_definition_over_step_functions_1_mib_is_refused_on_the_page_as_by_the_cli(wf_page, wf):
    states = {f"S{i}": {"Type": "Pass", "Result": "x" * 1000, "Next": f"S{i + 1}"} for i in range(1100)}
    states["S1100"] = {"Type": "Succeed"}
    text = json.dumps({"StartAt": "S0", "States": states}).encode()
    assert len(text) > 1024 * 1024
    at = wf_page.run()
    # the browser refuses it first (Step Functions' 1 MiB; the box said "1GB"), the page again if it gets one
    assert at.file_uploader(key="wf_import_file").proto.max_upload_size_mb == 2  # decimal MB: 1 refused 1,000,001 B
    at.file_uploader(key="wf_import_file").set_value(("huge.json", text, "application/json"))
    at.text_input(key="wf_import_name").set_value("too-big")
    at.run()
    at.button(key="wf_import_go").click().run()
    assert not at.exception
    assert any(e.value.startswith(f"huge.json is {len(text):,} bytes; Step Functions takes definitions of at most "
                                  "1,048,576 bytes") for e in at.error), [e.value for e in at.error]
    assert "too-big" not in {m.name for m in wf.list_state_machines()}
    assert any(e.label.startswith("Import a definition") and e.proto.expanded for e in at.expander)


def test_updating_the_workflow_says_what_changed_and_which_imported_machines_followed(wf_page, wf):
    """The functions are shared: an imported machine calling them changed with the update, without a word."""
    machine = wf.describe_state_machine("scones-workflow")
    shared = {"StartAt": "C", "States": {"C": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": True,
                                               "Parameters": {"FunctionName": "classifyImage", "Payload.$": "$"}}}}
    wf.import_workflow(json.dumps(shared), name="page-shared")
    try:
        at = wf_page.run()
        next(s for s in at.slider if s.label.startswith("Threshold (filterInferences")).set_value(0.77)
        next(b for b in at.button if b.label == "Update the workflow").click().run()
        assert not at.exception
        [toast] = [t.value for t in at.toast]
        said, _, followed = toast.partition("; ")  # other tests' imports on these functions may be named too
        assert said == f"Updated scones-workflow: endpoint {machine.endpoint_name}, threshold 0.77"
        assert "page-shared" in followed.split(" call")[0].split(", ")
        assert followed.endswith(" the same functions and changed too.")
        assert wf.describe_state_machine("page-shared").threshold == pytest.approx(0.77)
    finally:
        wf.delete_state_machine("page-shared")
        wf.deploy_workflow(machine.endpoint_name, machine.threshold)


def test_an_upload_that_cannot_run_is_refused_when_chosen_not_after_start(wf_page, wf):
    """The refusal came only after Start; now it shows when the file is chosen, and Start waits for a good one."""
    at = wf_page.run()
    at.radio(key="wf_source").set_value("Upload an image").run()
    at.file_uploader(key="wf_upload").set_value(("x.png", b"not an image at all", "image/png")).run()
    assert not at.exception
    assert "x.png is not an image that can be read: send a PNG or JPEG." in [e.value for e in at.error]
    assert at.button(key="wf_start").disabled
    good = wf.get_object(wf.test_image_keys()[0])
    at.file_uploader(key="wf_upload").set_value(("ok.png", good, "image/png")).run()
    assert not any("ok.png" in e.value for e in at.error) and not at.button(key="wf_start").disabled
