"""Inventory and cleanup leave nothing behind: processes, rows, files. Runs last in this package
(its own workspace, so the shared one stays usable for the other tests)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend import get_backend
from backend.local.jobs import process_alive
from backend.settings import load_settings
from tests.workspaces import seed_trained_workspace, stop_all, train_and_deploy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def full(tmp_path):
    """A workspace that went through every step: staged, trained, deployed, workflow run."""
    home = tmp_path / "workspace"
    seed_trained_workspace(home)
    b = get_backend(replace(load_settings({}), home=home))
    try:
        train_and_deploy(b)
        b.deploy_workflow(threshold=0.5)
        b.wait_workflow_executions(b.start_workflow_batch(3), timeout=60)
        yield home, b
    finally:
        stop_all(b)


def endpoint_pids(b) -> list[int]:
    rows = b.db.query("SELECT pid, pid_start FROM endpoints")
    return [r["pid"] for r in rows if process_alive(r["pid"], r["pid_start"])]


def scones(home, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCONES_")}
    env["SCONES_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "backend.cli", *args], capture_output=True, text=True, env=env,
                          timeout=180)


def test_cli_inventory_then_cleanup_all_leaves_nothing(full):
    home, b = full
    pids = endpoint_pids(b)
    assert pids
    doc = json.loads(scones(home, "inventory", "--json").stdout)
    kinds = {r["kind"] for r in doc["resources"]}
    assert kinds >= {"endpoint", "endpoint-config", "model", "training-job", "executions", "state-machine", "data"}
    assert all(set(r) >= {"kind", "name", "status", "size_bytes", "hourly_usd"} for r in doc["resources"])
    job = next(r for r in doc["resources"] if r["kind"] == "training-job")
    assert job["size_bytes"] > 0
    endpoint = next(r for r in doc["resources"] if r["kind"] == "endpoint")  # a port, not a URL a page would link
    port = b.list_endpoints()[0].url.rsplit(":", 1)[-1]
    assert endpoint["detail"].endswith(f"; local process on port {port}") and "http" not in endpoint["detail"]

    dry = scones(home, "cleanup", "--all", "--json")
    assert dry.returncode == 2 and "nothing was deleted" in dry.stderr
    assert json.loads(scones(home, "inventory", "--json").stdout) == doc

    r = scones(home, "cleanup", "--all", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["left"] == []
    order = [d["kind"] for d in report["deleted"]]
    assert order.index("endpoint") < order.index("model") < order.index("training-job") < order.index("data")
    assert json.loads(scones(home, "inventory", "--json").stdout) == {"resources": []}
    assert not any(process_alive(pid, None) for pid in pids)
    fresh = get_backend(replace(load_settings({}), home=home))
    steps = fresh.step_statuses()
    assert {s.state for n, s in steps.items() if n != "cleanup"} == {"not_started"}
    assert steps["cleanup"].state == "done"
    assert steps["cleanup"].detail.endswith(f"UTC: deleted {len(report['deleted'])} resources.")
    assert fresh.list_objects() == []
    assert fresh.db.query("SELECT * FROM sf_executions") == []
    from ui.state import backend as page_backend

    page_backend.clear()
    old = os.environ.get("SCONES_HOME")
    os.environ["SCONES_HOME"] = str(home)
    try:  # the home page shows every step as not started, but the clean up as done
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
        assert not at.exception
        assert sum("not started" in m.value for m in at.markdown) == 5
        assert any(c.value.startswith("Last clean up") for c in at.caption)
    finally:
        page_backend.clear()
        if old is None:
            os.environ.pop("SCONES_HOME")
        else:
            os.environ["SCONES_HOME"] = old
    # deleting twice is harmless
    again = scones(home, "cleanup", "--all", "--yes", "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == {"deleted": [], "left": []}


def test_cleanup_named_items_in_order_and_keep_data(full):
    home, b = full
    ep = b.list_endpoints()[0]
    model = ep.model_name
    job = b.describe_model(model).job_name
    going, left = b.cleanup_plan([("model", model), ("training-job", job)])  # the dry run says what --yes will do
    assert going == [] and [(k, n) for k, n, _ in left] == [("model", model), ("training-job", job)]
    assert f"Endpoint {ep.endpoint_name} serves model" in left[0][2] and "delete the model first" in left[1][2]
    going, left = b.cleanup_plan([("training-job", job), ("model", model), ("endpoint", ep.endpoint_name)])
    assert going == [("endpoint", ep.endpoint_name), ("model", model), ("training-job", job)] and left == []
    report = b.cleanup([("model", model)])
    assert report.deleted == () and "delete the endpoint first" in report.left[0][2]
    at_, last = b.last_cleanup()  # kept for the Home page and for a later visit to the Clean up page
    cleanup_step = b.step_statuses()["cleanup"]  # refused throughout: nothing was cleaned up
    assert last == report and cleanup_step.state == "not_started"
    assert cleanup_step.detail.endswith("deleted nothing: 1 left, with the reason on the Clean up page.")
    from ui.state import backend as page_backend

    page_backend.clear()
    old_home = os.environ.get("SCONES_HOME")
    os.environ["SCONES_HOME"] = str(home)
    try:
        page = AppTest.from_file(str(REPO / "views" / "cleanup.py"), default_timeout=60).run()
        assert not page.exception
        assert any(e.label.startswith("Last clean up") and e.label.endswith("0 deleted, 1 left") for e in page.expander)
        assert any("delete the endpoint first" in m.value for m in page.markdown)
    finally:
        page_backend.clear()
        os.environ.pop("SCONES_HOME") if old_home is None else os.environ.__setitem__("SCONES_HOME", old_home)
    # The CLI: a refused deletion did not do what was asked, so a script sees exit 2 and the error object.
    r = scones(home, "cleanup", f"model:{model}", "--yes", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["deleted"] == [] and doc["error"]["code"] == "CleanupIncomplete"
    assert r.stderr.startswith(f"scones: model:{model} was not deleted: Endpoint {ep.endpoint_name} serves model")
    report = b.cleanup([("model", model), ("endpoint", ep.endpoint_name)])
    assert report.deleted == (("endpoint", ep.endpoint_name), ("model", model))
    recorded = b.last_cleanup()
    assert b.cleanup([("endpoint", "ghost")]).left[0][:2] == ("endpoint", "ghost")
    r = scones(home, "cleanup", "endpoint:ghost", "--yes", "--json")  # deleting twice (or a typo) is harmless
    assert r.returncode == 0 and json.loads(r.stdout)["left"][0]["reason"].startswith("not found")
    assert b.last_cleanup() == recorded  # ... and nothing to do: not a cleanup the Home page reports
    report = b.cleanup(None, include_data=False)
    assert report.left == ()
    left = b.inventory()
    assert left and all(r.is_data for r in left)
    assert b.step_statuses()["stage"].state == "done"  # the staged data was kept
    r = scones(home, "cleanup", "--keep-data")
    assert r.returncode == 2 and "--keep-data goes with --all" in r.stderr
    # What --keep-data kept is said in 'left' (it was left out), and is no refusal: exit 0
    r = scones(home, "cleanup", "--all", "--keep-data", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["deleted"] == [] and {"kind": "data", "name": "staged-images", "reason": "kept: --keep-data"} in doc["left"]
    assert {x["kind"] for x in doc["left"]} == {"data"} and "error" not in doc


@pytest.fixture
def cleanup_page(full, monkeypatch):
    """The Clean up page (AppTest, through app.py) on the `full` workspace, and the page's backend."""
    from ui.state import backend

    monkeypatch.setenv("SCONES_HOME", str(full[0]))
    backend.clear()
    try:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
        at.switch_page("views/cleanup.py")
        at.run()
        assert not at.exception
        yield at, backend
    finally:
        if "workflow" in vars(backend()):
            backend().workflow.close()
        backend.clear()


def test_cleanup_page_needs_the_typed_confirmation(full, cleanup_page):
    home, b = full
    at, backend = cleanup_page
    ticks = {c.key.split(":", 1)[1]: c for c in at.checkbox if c.key.startswith("cleanup_tick:")}
    assert "endpoint:scones-endpoint" in ticks and all(c.value for c in ticks.values())
    assert not any(k.startswith("data:") for k in ticks)  # data is a separate box, off by default
    assert at.button(key="cleanup_go").disabled
    at.text_input(key="cleanup_confirm").input("delete").run()
    assert not at.button(key="cleanup_go").disabled
    at.button(key="cleanup_go").click().run()
    assert not at.exception
    assert any("Deleted" in s.value for s in at.success)
    at.run()  # a redraw (the watcher's, when the inventory changes on) keeps the report up a while
    assert any("Deleted" in s.value for s in at.success)
    at.session_state["cleanup_report"] = (time.time() - 121, at.session_state["cleanup_report"][1])
    at.run()
    assert not at.success  # then it goes
    remaining = backend().inventory()
    assert remaining and all(r.is_data for r in remaining)
    assert endpoint_pids(b) == []


def test_cleanup_page_warns_when_a_kept_state_machine_calls_an_endpoint_going(full, cleanup_page):
    """Deleting the endpoint alone said nothing of the workflow that stays and calls it (every execution then
    failed at classifyImage); the Deploy page's Delete asks, so the plan here says it too."""
    home, b = full
    at, backend = cleanup_page

    def broken() -> list[str]:
        return [w.value for w in at.warning if "which stays" in w.value]

    assert broken() == []  # everything ticked: the state machine goes too
    at.checkbox(key="cleanup_tick:state-machine:scones-workflow").uncheck().run()
    assert broken() == ["endpoint:scones-endpoint is called by scones-workflow, which stays: its executions will "
                        "fail at the classify step once it is gone. Tick it too, or point the workflow at another "
                        "endpoint first."]
    at.checkbox(key="cleanup_tick:endpoint:scones-endpoint").uncheck().run()
    assert broken() == []  # the endpoint stays: nothing breaks
    # The CLI's dry run says the same (and --yes would still delete: a warning, not a refusal)
    r = scones(home, "cleanup", "endpoint:scones-endpoint", "--json")
    doc = json.loads(r.stdout)
    assert doc["would_delete"] == [{"kind": "endpoint", "name": "scones-endpoint"}]
    assert doc["warnings"] == ["endpoint:scones-endpoint is called by scones-workflow, which stays: its executions "
                               "will fail at the classify step once it is gone. Tick it too, or point the workflow at "
                               "another endpoint first."]
    text = scones(home, "cleanup", "endpoint:scones-endpoint", "state-machine:scones-workflow").stdout
    assert "would delete endpoint:scones-endpoint" in text and "warning:" not in text  # both go: nothing breaks
    # A model going while the endpoint config that names it stays: said too (audit: nothing was)
    config = b.describe_endpoint("scones-endpoint").config_name
    model = b.list_models()[0].model_name
    b.delete_endpoint("scones-endpoint")
    doc = json.loads(scones(home, "cleanup", f"model:{model}", "--json").stdout)
    assert doc["warnings"] == [f"model:{model} is named by endpoint config {config}, which stays: an endpoint made "
                               "from it would fail without its model. Tick it too."]
    doc = json.loads(scones(home, "cleanup", f"model:{model}", f"endpoint-config:{config}", "--json").stdout)
    assert doc["warnings"] == []


def test_cleanup_page_keeps_each_choice_and_asks_again_when_the_selection_changes(full, cleanup_page):
    home, b = full
    at, backend = cleanup_page
    endpoint = at.checkbox(key="cleanup_tick:endpoint:scones-endpoint")
    endpoint.uncheck().run()
    model = b.list_models()[0].model_name
    # Before anything is deleted, the page says what the selection would leave and why.
    preview = [w.value for w in at.warning if w.value.startswith("Will be left: ")]
    assert any(f"model:{model}: Endpoint scones-endpoint serves model" in w for w in preview)
    assert any("endpoint-config:" in w and "Endpoint scones-endpoint uses endpoint configuration" in w
               for w in preview)
    assert any("training-job:" in w and f"Model {model} was made from training job" in w for w in preview)
    at.text_input(key="cleanup_confirm").input("delete").run()
    go = at.button(key="cleanup_go")
    assert not go.disabled and " of " in go.label  # "Delete N of M selected": the model stays
    # The list changes under the typed confirmation (data added): the untick survives, the
    # confirmation does not.
    at.checkbox(key="cleanup_data").check().run()
    assert not at.exception
    assert at.checkbox(key="cleanup_tick:endpoint:scones-endpoint").value is False
    assert any(c.key.startswith("cleanup_tick:data:") and c.value for c in at.checkbox)  # data shown, ticked
    assert at.text_input(key="cleanup_confirm").value == ""
    assert at.button(key="cleanup_go").disabled
    assert any("selection changed" in i.value for i in at.info)
    # A data row's untick survives hiding the data rows and showing them again.
    data_key = next(c.key for c in at.checkbox if c.key.startswith("cleanup_tick:data:"))
    at.checkbox(key=data_key).uncheck().run()
    at.checkbox(key="cleanup_data").uncheck().run()
    at.checkbox(key="cleanup_data").check().run()
    assert at.checkbox(key=data_key).value is False
    at.switch_page("views/home.py").run()  # another page and back: the data box stays on, as the ticks stay
    at.switch_page("views/cleanup.py").run()
    assert at.checkbox(key="cleanup_data").value is True and at.checkbox(key=data_key).value is False
    at.checkbox(key=data_key).check().run()
    # Unticking one more row after typing also asks again.
    at.text_input(key="cleanup_confirm").input("delete").run()
    assert not at.button(key="cleanup_go").disabled
    at.button(key="cleanup_none:executions").click().run()
    assert at.button(key="cleanup_go").disabled and at.text_input(key="cleanup_confirm").value == ""
    at.text_input(key="cleanup_confirm").input("delete").run()
    at.button(key="cleanup_go").click().run()
    assert not at.exception
    # The data and the state machine went; the executions, unticked with None, stay listed though their
    # machine is gone (they were kept, unlisted and out of reach, before); what the preview said would be
    # left is what is left.
    kinds = {r.kind for r in backend().inventory()}
    assert kinds == {"endpoint", "endpoint-config", "model", "training-job", "executions"}
    assert len([w for w in at.warning if w.value.startswith("Left ")]) == 3
    assert b.describe_endpoint("scones-endpoint").status == "InService" and endpoint_pids(b)
    # Typed while the kept endpoint blocks the rest; then the CLI deletes the endpoint: the same ticks
    # would now delete the model and the training job, so the confirmation is asked for again.
    at.text_input(key="cleanup_confirm").input("delete").run()
    b.delete_endpoint("scones-endpoint")
    at.run()
    assert at.text_input(key="cleanup_confirm").value == "" and at.button(key="cleanup_go").disabled
    assert any("selection changed" in i.value for i in at.info)


WAIT_A_MINUTE = {"StartAt": "Hold", "States": {"Hold": {"Type": "Wait", "Seconds": 60, "End": True}}}


def test_running_executions_are_named_before_a_cleanup_and_stopped_before_the_endpoint_goes(full, cleanup_page):
    """A batch still running went on calling an endpoint the cleanup had already deleted (every one then failed
    at classifyImage), and the page, drawn before the batch started, said 0 running."""
    home, b = full
    at, backend = cleanup_page
    b.import_workflow(json.dumps(WAIT_A_MINUTE), {}, name="slow")
    arn = b.start_workflow_batch(1, state_machine="slow")[0]
    at.run()
    assert not at.exception
    said = [w.value for w in at.warning if "still running" in w.value]
    assert said == ["executions:slow: 1 execution is still running: deleting stops it first (they end ABORTED)."]
    going, _ = b.cleanup_plan(None)
    kinds = [k for k, _ in going]
    assert kinds.index("executions") < kinds.index("state-machine") < kinds.index("endpoint") < kinds.index("model")
    assert b.cleanup([("executions", "slow")]).deleted == (("executions", "slow"),)
    assert b.list_workflow_executions(state_machine="slow") == [] and arn
    at.run()
    assert not [w.value for w in at.warning if "still running" in w.value]


def test_executions_of_a_deleted_state_machine_stay_listed_until_deleted(full):
    """Deleting the state machine alone left its executions in the database with nothing listing them, so
    no cleanup could reach them (and Monitor counted them no more beside their captured inferences)."""
    home, b = full
    report = b.cleanup([("state-machine", "scones-workflow")])
    assert report.deleted == (("state-machine", "scones-workflow"),)
    listed = {(r.kind, r.name): r for r in b.inventory()}
    assert ("state-machine", "scones-workflow") not in listed
    kept = listed[("executions", "scones-workflow")]
    assert kept.status == "3 (0 running)" and kept.detail.endswith("no state machine of that name now")
    doc = json.loads(scones(home, "cleanup", "--all", "--keep-data", "--yes", "--json").stdout)
    assert {"kind": "executions", "name": "scones-workflow"} in doc["deleted"]
    assert b.db.query("SELECT * FROM sf_executions") == [] and b.db.query("SELECT * FROM sf_events") == []
    # ... and their pages went back to the disk (the file kept its size, all free pages, after a cleanup)
    assert b.db.query("PRAGMA freelist_count")[0][0] == 0


def test_home_says_a_model_is_ready_when_its_endpoint_was_deleted(full):
    """The deploy step read 'No endpoint yet.', as on a fresh workspace, once the endpoint was deleted."""
    home, b = full
    model = b.list_models()[0].model_name
    b.cleanup([("endpoint", "scones-endpoint")])
    step = b.step_statuses()["deploy"]
    assert (step.state, step.detail) == ("not_started", f"No endpoint now; model {model} is ready to deploy.")
    machine = next(r for r in b.inventory() if r.kind == "state-machine")
    assert machine.detail == "endpoint scones-endpoint (no longer exists)"  # Clean up listed it as if it did


def test_monitor_keeps_the_functions_threshold_when_the_workflow_is_deleted_but_an_import_still_calls_them(full):
    """Monitor's threshold fell back to the configured 0.93 while an imported machine still ran at the shared 0.5."""
    home, b = full
    shared = {"StartAt": "C", "States": {"C": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": True,
                                               "Parameters": {"FunctionName": "classifyImage", "Payload.$": "$"}}}}
    b.import_workflow(json.dumps(shared), name="still-calling")
    b.cleanup([("state-machine", "scones-workflow")])
    assert b.monitor_threshold() == 0.5 != b.default_threshold()
    b.cleanup([("state-machine", "still-calling")])
    assert b.monitor_threshold() == b.default_threshold()


def test_an_import_sharing_functions_whose_endpoint_was_deleted_says_what_to_do(full):
    """The import took the endpoint of the machine it shares functions with and failed with 'Could not find
    endpoint' although the user never named one (CLI audit)."""
    home, b = full
    shared = {"StartAt": "C", "States": {"C": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": True,
                                               "Parameters": {"FunctionName": "classifyImage", "Payload.$": "$"}}}}
    endpoint = b.describe_state_machine("scones-workflow").endpoint_name
    b.cleanup([("endpoint", endpoint)])
    definition = home / "shared.json"
    definition.write_text(json.dumps(shared))
    r = scones(home, "workflow", "import", str(definition), "--name", "after-delete")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (f"state machine scones-workflow uses too, and they classify with endpoint {endpoint}, which no longer "
            "exists: point scones-workflow at an InService endpoint first ('scones workflow deploy --endpoint NAME'"
            in r.stderr)
    assert "after-delete" not in [m.name for m in b.list_state_machines()]


def test_a_resource_ticked_here_and_deleted_elsewhere_is_said_once(full, cleanup_page):
    """It vanished from the list with only 'The selection changed' to show for it (audit)."""
    home, b = full
    at, backend = cleanup_page
    runs = [r for r in backend().inventory() if r.kind == "executions"]
    assert runs, "the full workspace has executions"
    key = f"cleanup_tick:executions:{runs[0].name}"
    assert at.checkbox(key=key).value  # ticked by default
    assert scones(home, "cleanup", f"executions:{runs[0].name}", "--yes").returncode == 0  # the CLI, meanwhile
    at.run()
    assert not at.exception
    said = [i.value for i in at.info if i.value.startswith("Deleted elsewhere since ticked here")]
    assert said == [f"Deleted elsewhere since ticked here (the CLI, another tab): `executions:{runs[0].name}`."]
    at.run()
    assert not any(i.value.startswith("Deleted elsewhere") for i in at.info)  # once
