"""An execution reads as it ran: its predicted class is the model's class at the time (not the class
names of whatever the workflow points at now), and its graph is the definition it ran (not the
state machine's definition after an update)."""
from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from backend import get_backend
from backend.settings import load_settings
from tests.workspaces import seed_trained_workspace, stop_all, train_and_deploy


@pytest.fixture
def relabelled(tmp_path):
    home = tmp_path / "workspace"
    seed_trained_workspace(home)
    b = get_backend(replace(load_settings({}), home=home))
    try:
        yield b
    finally:
        stop_all(b)


def test_earlier_executions_keep_their_class_after_the_workflow_moves_to_a_model_of_another_class_order(relabelled):
    b = relabelled
    model_b = train_and_deploy(b, "ep-b")
    assert model_b.classes == ("bicycle", "motorcycle")
    b.deploy_workflow(endpoint_name="ep-b", threshold=0.5)
    key = next(k for k in b.test_image_keys() if "motorcycle" in k)
    before = b.wait_workflow_executions(b.start_workflow_batch(2, s3_key=key, threshold=0.0), timeout=60)
    assert all(e.status == "SUCCEEDED" for e in before), [e.cause for e in before]
    said = {e.name: (e.label, e.output["body"]["inferences"]) for e in before}
    for label, inferences in said.values():
        assert label == model_b.classes[max(range(2), key=inferences.__getitem__)]
    # The low-threshold failure names the class in its cause, with the names the function had.
    failed = b.wait_workflow_executions(b.start_workflow_batch(1, s3_key=key, threshold=1.0), timeout=60)[0]
    assert failed.error == "THRESHOLD_CONFIDENCE_NOT_MET" and f": {failed.label})" in failed.cause

    # Restage in the other class order, train, and point the workflow at the new model.
    b.stage_data("sample", classes=["motorcycle", "bicycle"])
    name = b.create_training_job({**b.default_training_hyperparameters(), "epochs": "1", "mini_batch_size": "128"})
    while b.describe_training_job(name).status == "InProgress":
        time.sleep(0.2)
    model_c = b.create_model(name)
    assert model_c.classes == ("motorcycle", "bicycle")
    b.deploy(model_c.model_name, "ep-c", capture_percent=0)
    assert b.wait_endpoint("ep-c", timeout=60).status == "InService"
    b.deploy_workflow(endpoint_name="ep-c", threshold=0.5)
    after = b.wait_workflow_executions(b.start_workflow_batch(1, s3_key=key, threshold=0.0), timeout=60)[0]
    assert after.label == model_c.classes[max(range(2), key=after.output["body"]["inferences"].__getitem__)]

    def labels() -> dict[str, str | None]:
        return {e.name: e.label for e in b.list_workflow_executions()}

    now = labels()
    assert {n: now[n] for n in said} == {n: label for n, (label, _) in said.items()}
    assert now[failed.name] == failed.label and f": {now[failed.name]})" in failed.cause
    # Each execution names the endpoint it called (Monitor credits it there), not the machine's endpoint now.
    called = {e.name: e.endpoint for e in b.list_workflow_executions()}
    assert {called[n] for n in [*said, failed.name]} == {"ep-b"} and called[after.name] == "ep-c"
    # Another process (its own Lambda runtime) points the workflow back at ep-b and runs; then this one points it
    # at ep-c again: its runtime still has ep-c's configuration, yet its new execution must not read as ep-b's.
    other = get_backend(replace(load_settings({}), home=b.settings.home))
    try:
        other.deploy_workflow(endpoint_name="ep-b", threshold=0.5)
        back = other.wait_workflow_executions(other.start_workflow_batch(1, s3_key=key, threshold=0.0), timeout=60)[0]
        assert back.label == model_b.classes[max(range(2), key=back.output["body"]["inferences"].__getitem__)]
    finally:
        other.workflow.close()
    b.deploy_workflow(endpoint_name="ep-c", threshold=0.5)
    time.sleep(2.1)  # another process's notes are read within 2 s
    again = b.wait_workflow_executions(b.start_workflow_batch(1, s3_key=key, threshold=1.0), timeout=60)[0]
    assert again.error == "THRESHOLD_CONFIDENCE_NOT_MET" and f": {again.label})" in again.cause  # as the filter said
    assert b.describe_workflow_execution(back.name).label == back.label

    # The same once the first endpoint is gone (it used to fall back to the staged classes, now reversed).
    b.delete_endpoint("ep-b")
    now = labels()
    assert {n: now[n] for n in said} == {n: label for n, (label, _) in said.items()}
    # ... and from another process's backend (the CLI's), which reads the notes from the database.
    fresh = get_backend(replace(load_settings({}), home=b.settings.home))
    assert {n: fresh.describe_workflow_execution(n).label for n in said} == {n: label for n, (label, _) in said.items()}
    assert fresh.describe_workflow_execution(back.name).endpoint == "ep-b"
    assert fresh.describe_workflow_execution(again.name).endpoint == "ep-c"


CHOICE = {
    "StartAt": "Decide",
    "States": {
        "Decide": {"Type": "Choice", "Choices": [{"Variable": "$.go", "BooleanEquals": True, "Next": "Done"}]},
        "Done": {"Type": "Succeed"},
    },
}
PLAIN = {"StartAt": "Only", "States": {"Only": {"Type": "Pass", "End": True}}}


def test_an_execution_is_drawn_with_the_definition_it_ran_after_its_machine_is_replaced(wf):
    wf.import_workflow(json.dumps(CHOICE), {}, name="replaced-later")
    arn = wf.start_workflow_execution({"go": False}, name=f"no-match-{time.time_ns()}", state_machine="replaced-later")
    ran = wf.wait_workflow_executions([arn], timeout=30)[0]
    assert ran.status == "FAILED" and ran.error == "States.NoChoiceMatched"
    wf.import_workflow(json.dumps(PLAIN), {}, name="replaced-later")
    assert set(wf.describe_state_machine("replaced-later").definition["States"]) == {"Only"}

    assert wf.workflow_execution_definition(arn)["States"].keys() == {"Decide", "Done"}
    runs = {r.name: r for r in wf.workflow_execution_states(arn)}
    assert set(runs) == {"Decide", "Done"}
    assert runs["Decide"].status == "failed" and runs["Decide"].error == "States.NoChoiceMatched"
    assert runs["Done"].status == "not_run"
