"""The workflow end to end: the real handler files on the local Lambda runtime, the ASL engine,
the loopback gateway and a real local endpoint."""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from backend import get_backend
from backend.api import THRESHOLD_ERROR, ResourceNotFound, ValidationError
from backend.settings import load_settings
from tests.workspaces import workflow_of_its_own

REPO = Path(__file__).resolve().parents[2]
TASK_EVENTS = ["TaskStateEntered", "TaskScheduled", "TaskStarted", "TaskSucceeded", "TaskStateExited"]


def test_a_batch_succeeds_with_labels_and_aws_history(wf):
    arns = wf.start_workflow_batch(5, threshold=0.0)
    done = wf.wait_workflow_executions(arns, timeout=60)
    assert [e.status for e in done] == ["SUCCEEDED"] * 5
    for e in done:
        assert e.label in ("bicycle", "motorcycle") and 0.5 <= e.confidence <= 1.0
        assert e.s3_key.startswith("test/") and e.seconds > 0
        assert e.output["body"]["inferences"] and e.output["statusCode"] == 200
    events = wf.workflow_execution_history(done[0].name)
    assert [ev["type"] for ev in events] == ["ExecutionStarted", *TASK_EVENTS * 3, "ExecutionSucceeded"]
    assert [ev["id"] for ev in events] == list(range(1, len(events) + 1))
    # as AWS numbers them: the first state's entry points back to 0, not to ExecutionStarted
    assert [ev["previousEventId"] for ev in events] == [0, 0, *range(2, len(events))]
    scheduled = [ev["taskScheduledEventDetails"] for ev in events if ev["type"] == "TaskScheduled"]
    assert {(s["resourceType"], s["resource"]) for s in scheduled} == {("lambda", "invoke")}
    runs = {r.name: r.status for r in wf.workflow_execution_states(done[0].name)}
    assert runs == {"serializeImageData": "succeeded", "classifyImage": "succeeded", "filterInferences": "succeeded",
                    "ThresholdConfidenceNotMet": "not_run"}


def test_threshold_override_applies_to_its_executions_only(wf):
    strict = wf.start_workflow_batch(3, threshold=1.0)
    lenient = wf.start_workflow_batch(3, threshold=0.0)
    default = wf.start_workflow_batch(2)
    strict_done = wf.wait_workflow_executions(strict, timeout=60)
    lenient_done = wf.wait_workflow_executions(lenient, timeout=60)
    assert {e.status for e in strict_done} == {"FAILED"}
    assert {e.error for e in strict_done} == {THRESHOLD_ERROR}
    for e in strict_done:
        assert "below the threshold 1" in json.loads(e.cause)["errorMessage"]
        assert e.label in ("bicycle", "motorcycle") and e.confidence is not None  # known on failure too
        best = ("bicycle", "motorcycle").index(e.label)  # the cause names the class (CLASS_NAMES)
        assert f"(class {best}: {e.label}) is below" in json.loads(e.cause)["errorMessage"]
        runs = {r.name: r.status for r in wf.workflow_execution_states(e.name)}
        assert runs["filterInferences"] == "caught" and runs["ThresholdConfidenceNotMet"] == "failed"
    assert {e.status for e in lenient_done} == {"SUCCEEDED"}
    for e in wf.wait_workflow_executions(default, timeout=60):  # the machine's own threshold, 0.5
        assert (e.status == "SUCCEEDED") == (e.confidence >= 0.5)


def test_each_execution_keeps_the_threshold_it_was_judged_against(wf):
    """After the workflow's threshold changes, earlier executions still say the one they ran with (a FAILED 0.51
    under a workflow now at 0.50 is not a contradiction): their own, else the workflow's when they started."""
    machine = wf.describe_state_machine()
    try:
        wf.deploy_workflow(machine.endpoint_name, 0.999999)
        strict = wf.wait_workflow_executions(wf.start_workflow_batch(2), timeout=60)
        wf.deploy_workflow(machine.endpoint_name, 0.25)
        lenient = wf.wait_workflow_executions(wf.start_workflow_batch(2), timeout=60)
        own = wf.wait_workflow_executions(wf.start_workflow_batch(1, threshold=0.6), timeout=60)
    finally:
        wf.deploy_workflow(machine.endpoint_name, machine.threshold)
    assert {e.threshold for e in strict} == {0.999999} and {e.threshold for e in lenient} == {0.25}
    assert own[0].threshold == 0.6
    assert any(e.error == THRESHOLD_ERROR and "below the threshold 0.999999" in e.cause for e in strict)
    listed = {e.name: e.threshold for e in wf.list_workflow_executions()}
    assert [listed[e.name] for e in [*strict, *lenient, *own]] == [0.999999] * 2 + [0.25] * 2 + [0.6]
    fresh = get_backend(replace(load_settings({}), home=wf.settings.home))  # another process reads the notes
    assert fresh.describe_workflow_execution(strict[0].name).threshold == 0.999999


@pytest.mark.parametrize("event, error, words", [
    ({"s3_bucket": "scones-unlimited"}, "InvalidEvent", "s3_key"),
    ({"s3_bucket": "scones-unlimited", "s3_key": "test/no-such-image.png"}, "ImageNotFound", "No object"),
    ({"s3_bucket": "scones-unlimited", "s3_key": "notes/readme.txt"}, "NotAnImage", "not a PNG or JPEG"),
    ({"s3_bucket": "scones-unlimited", "s3_key": "big/large.png"}, "PayloadTooLarge", "256"),
])
def test_bad_inputs_fail_with_named_errors(wf, event, error, words):
    wf.objects.put_many({"notes/readme.txt": b"just text\n" * 10,
                         "big/large.png": b"\x89PNG\r\n\x1a\n" + os.urandom(300 * 1024)})
    arn = wf.start_workflow_execution(event)
    e = wf.wait_workflow_executions([arn], timeout=60)[0]
    assert e.status == "FAILED" and e.error == error
    assert words in json.loads(e.cause)["errorMessage"]


def test_an_uploaded_image_of_any_size_flows_by_key(wf):
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 30, 30)).save(buf, format="JPEG")
    key = wf.upload_workflow_image("My photo!.jpg", buf.getvalue())
    # the operator's own file name stays in the key, so a failed execution names the image they chose
    assert re.fullmatch(r"uploads/[0-9a-f]{12}-My_photo\.png", key), key
    assert wf.upload_workflow_image("../../etc/x.png", buf.getvalue()).rsplit("-", 1)[1] == "x.png"
    stored = Image.open(io.BytesIO(wf.get_object(key)))
    assert stored.format == "PNG" and stored.size == (32, 32)
    e = wf.wait_workflow_executions(wf.start_workflow_batch(1, key, threshold=0.0), timeout=60)[0]
    assert e.status == "SUCCEEDED" and e.s3_key == key
    with pytest.raises(ValidationError, match="not an image"):
        wf.upload_workflow_image("notes.png", b"hello")
    with pytest.raises(ValidationError, match="is empty"):
        wf.upload_workflow_image("empty.png", b"")


CONSOLE_EXPORT = {
    "Comment": "Exported from the Step Functions console",
    "StartAt": "Serialize image",
    "States": {
        "Serialize image": {
            "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "OutputPath": "$.Payload",
            "Parameters": {"FunctionName": "arn:aws:lambda:us-east-1:111122223333:function:serializeImageData:$LATEST",
                           "Payload.$": "$"},
            "Retry": [{"ErrorEquals": ["Lambda.ServiceException", "Lambda.AWSLambdaException",
                                       "Lambda.SdkClientException", "Lambda.TooManyRequestsException"],
                       "IntervalSeconds": 2, "MaxAttempts": 6, "BackoffRate": 2}],
            "Credentials": {"RoleArn": "arn:aws:iam::111122223333:role/sfn"}, "TimeoutSeconds": 30,
            "Next": "Classify"},
        "Classify": {
            "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "OutputPath": "$.Payload",
            "Parameters": {"FunctionName": "my-classifier", "Payload.$": "$.body"}, "Next": "Filter"},
        "Filter": {
            "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "OutputPath": "$.Payload",
            "Parameters": {"FunctionName": "arn:aws:lambda:us-east-1:111122223333:function:filterInferences",
                           "Payload.$": "$.body"}, "End": True},
    },
}


def test_import_a_console_definition_and_run_it(wf):
    text = json.dumps(CONSOLE_EXPORT)
    with pytest.raises(ValidationError, match="calls function 'my-classifier', which has no handler file"):
        wf.import_workflow(text, name="console-flow")
    with pytest.raises(ValidationError, match="no handler file lambdas/nope.py"):
        wf.import_workflow(text, {"my-classifier": "nope"}, name="console-flow")
    sm = wf.import_workflow(text, {"my-classifier": "classify_image"}, name="console-flow")
    assert sm.imported and wf.workflow_mapping("console-flow") == {
        "serializeImageData": "serialize_image_data", "my-classifier": "classify_image",
        "filterInferences": "filter_inferences"}
    arn = wf.start_workflow_batch(1, threshold=0.0, state_machine="console-flow")[0]
    e = wf.wait_workflow_executions([arn], timeout=60)[0]
    assert e.status == "SUCCEEDED" and e.state_machine == "console-flow" and e.label is not None
    broken = json.loads(text)
    broken["States"]["Filter"]["Next"] = "Nowhere"
    with pytest.raises(ValidationError, match="invalid"):
        wf.import_workflow(json.dumps(broken), {"my-classifier": "classify_image"}, name="broken")


def test_functions_are_shared_by_name_as_on_aws(wf):
    """An import calling the deployed workflow's functions takes its endpoint and threshold (it said the
    defaults and ran the shared functions with its own), one asking for others is refused, and deploying the
    workflow again retargets every machine that calls its functions."""
    from backend.api import ResourceInUse

    deployed = wf.describe_state_machine()
    text = json.dumps(CONSOLE_EXPORT)  # calls serializeImageData and filterInferences too
    with pytest.raises(ResourceInUse, match=f"which state machine \\S+ uses too \\(endpoint "
                                            f"{deployed.endpoint_name}, threshold 0.5\\)"):
        wf.import_workflow(text, {"my-classifier": "classify_image"}, name="sharing", threshold=0.9)
    with pytest.raises(ResourceInUse, match="mapping it to serialize_image_data would change that machine too"):
        wf.import_workflow(text, {"my-classifier": "classify_image", "filterInferences": "serialize_image_data"},
                           name="sharing")
    assert "sharing" not in {m.name for m in wf.list_state_machines()}  # refused before anything changed
    sm = wf.import_workflow(text, {"my-classifier": "classify_image"}, name="sharing")
    assert (sm.endpoint_name, sm.threshold) == (deployed.endpoint_name, 0.5)
    try:
        wf.deploy_workflow(deployed.endpoint_name, 0.7)
        assert wf.describe_state_machine("sharing").threshold == 0.7  # the shared filterInferences changed
        arn = wf.start_workflow_batch(1, state_machine="sharing")[0]
        e = wf.wait_workflow_executions([arn], timeout=60)[0]
        assert e.status == "SUCCEEDED" or (e.error == THRESHOLD_ERROR and "0.7" in e.cause)
    finally:
        wf.deploy_workflow(deployed.endpoint_name, 0.5)
        wf.delete_state_machine("sharing")
    assert wf.describe_state_machine().threshold == 0.5


def test_endpoint_killed_mid_batch_fails_those_executions_with_the_lambda_error(wf_home, wf):
    b = get_backend(replace(load_settings({}), home=wf_home))
    try:
        model = b.describe_endpoint("scones-endpoint").model_name
        b.deploy(model, "doomed", capture_percent=0)
        assert b.wait_endpoint("doomed", timeout=60).status == "InService"
        workflow_of_its_own(b, "doomed-flow", "doomed", 0.0)
        ok = b.wait_workflow_executions(b.start_workflow_batch(2, state_machine="doomed-flow"), timeout=60)
        assert {e.status for e in ok} == {"SUCCEEDED"}
        row = b.db.query_one("SELECT pid FROM endpoints WHERE endpoint_name='doomed'")
        os.kill(row["pid"], signal.SIGKILL)
        others = wf.start_workflow_batch(3, threshold=0.0)
        failed = b.wait_workflow_executions(b.start_workflow_batch(3, state_machine="doomed-flow"), timeout=60)
        assert {e.status for e in failed} == {"FAILED"}
        assert {e.error for e in failed} <= {"EndpointNotFound", "InferenceFailed"}
        assert all("doomed" in json.loads(e.cause)["errorMessage"] for e in failed)
        assert {e.status for e in wf.wait_workflow_executions(others, timeout=60)} == {"SUCCEEDED"}
        assert b.describe_endpoint("doomed").status == "Failed"
    finally:
        b.workflow.close()
        b.delete_endpoint("doomed")


def test_waiting_on_executions_a_cleanup_deleted_says_so(wf_home, wf):
    """A cleanup in another process deleted a running batch's executions: the waiter said only 'does not exist'."""
    from backend.api import ResourceNotFound

    b = get_backend(replace(load_settings({}), home=wf_home))
    try:
        machine = workflow_of_its_own(b, "doomed-batch", threshold=0.0).name
        arns = b.start_workflow_batch(5, state_machine=machine)
        b.wait_workflow_executions(arns[:1], timeout=60)
        get_backend(replace(load_settings({}), home=wf_home)).cleanup([("executions", machine)])
        with pytest.raises(ResourceNotFound, match="a cleanup may have removed the executions of doomed-batch"):
            b.wait_workflow_executions(arns, timeout=60)
        b.cleanup([("state-machine", machine)])
    finally:
        b.workflow.close()


def test_a_gateway_that_died_is_replaced_before_the_next_executions(wf_home, wf):
    """kill -9 of the loopback gateway: every execution failed with EndpointConnectionError until a restart."""
    b = get_backend(replace(load_settings({}), home=wf_home))
    try:
        first = b.wait_workflow_executions(b.start_workflow_batch(2, threshold=0.0), timeout=60)
        assert {e.status for e in first} == {"SUCCEEDED"}
        gateway = b.workflow._gateway.proc
        old_workers = {pid for f in b.workflow.runtime.functions() for pid in b.workflow.runtime.worker_pids(f.name)}
        gateway.kill()
        gateway.wait(10)
        after = b.wait_workflow_executions(b.start_workflow_batch(3, threshold=0.0), timeout=60)
        assert {e.status for e in after} == {"SUCCEEDED"}, [(e.error, e.cause) for e in after]
        assert b.workflow._gateway.proc.pid != gateway.pid and b.workflow._gateway.proc.poll() is None
        assert not old_workers & {pid for f in b.workflow.runtime.functions()
                                  for pid in b.workflow.runtime.worker_pids(f.name)}
        second = b.workflow._gateway.proc  # 'asl run' in the same process is covered as well
        second.kill()
        second.wait(10)
        record, _ = b.run_definition((REPO / "asl" / "scones_workflow.asl.json").read_text(),
                                     {**b.generate_test_case(), "threshold": 0.0})
        assert record.status == "SUCCEEDED", (record.error, record.cause)
        assert b.workflow._gateway.proc.pid != second.pid
    finally:
        b.workflow.close()


def test_a_restart_during_a_batch_leaves_no_execution_running(wf_home, wf):
    env = {**os.environ, "SCONES_HOME": str(wf_home)}
    proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "workflow", "run", "--count", "200", "--json"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b = get_backend(replace(load_settings({}), home=wf_home))
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(e.status == "RUNNING" for e in b.list_workflow_executions(limit=50)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fresh = get_backend(replace(load_settings({}), home=wf_home))  # as the restarted dashboard
    statuses = [e.status for e in fresh.list_workflow_executions(limit=1000)]
    assert statuses and "RUNNING" not in statuses
    lost = [e for e in fresh.list_workflow_executions(limit=1000) if e.error == "States.Runtime"]
    assert all("runner" in (e.cause or "").lower() for e in lost)


def test_an_unknown_state_machine_is_named_with_those_there_are(wf):
    """A mistyped imported name was told to 'deploy the workflow first', which only makes scones-workflow (audit)."""
    with pytest.raises(ResourceNotFound, match=r"No state machine named 'nope': choose one of .*scones-workflow.*, "
                                                r"or import it"):
        wf.start_workflow_batch(1, state_machine="nope")
