"""The workflow on AWS under moto: the three functions packaged from lambdas/, the state machine from
asl/ with the ARNs substituted, executions started, described, listed, stopped and read back,
an imported console definition, inventory and cleanup. Finished executions (moto cannot run our
Lambda tasks without Docker) are answered in AWS's shapes through botocore's Stubber."""
from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import Stubber

from backend import get_backend
from backend.api import CredentialsError, ResourceInUse, ResourceNotFound, ValidationError
from backend.aws.s3 import PROJECT_TAG
from backend.aws.workflow import code_sha256, lambda_package
from backend.settings import load_settings
from backend.workflow_defs import SEED_HANDLERS, WORKFLOW_FILE

REGION, ACCOUNT = "us-east-1", "123456789012"
TRUST = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                  "Principal": {"Service": "lambda.amazonaws.com"}}]}


def _role(name: str, service: str) -> str:
    trust = json.loads(json.dumps(TRUST))
    trust["Statement"][0]["Principal"]["Service"] = service
    return boto3.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


@pytest.fixture
def roles(aws, monkeypatch):
    arns = {"sagemaker": _role("scones-sm", "sagemaker.amazonaws.com"),
            "lambda": _role("scones-lambda", "lambda.amazonaws.com"),
            "states": _role("scones-states", "states.amazonaws.com")}
    monkeypatch.setenv("SCONES_SAGEMAKER_ROLE_ARN", arns["sagemaker"])
    monkeypatch.setenv("SCONES_LAMBDA_ROLE_ARN", arns["lambda"])
    monkeypatch.setenv("SCONES_STATES_ROLE_ARN", arns["states"])
    return arns


@pytest.fixture
def endpoint(roles, small_archive):
    b = get_backend(load_settings())
    b.stage_data(small_archive)
    job = b.create_training_job(b.default_training_hyperparameters("sagemaker"))
    model = b.create_model(job)
    b.deploy(model.model_name, "scones-endpoint", capture_percent=100)
    return b


@pytest.fixture
def deployed(endpoint):
    return endpoint, endpoint.deploy_workflow(threshold=0.9)


def test_deploy_creates_the_three_functions_and_the_state_machine(deployed, roles):
    b, sm = deployed
    lam = boto3.client("lambda")
    functions = {f["FunctionName"]: f for f in lam.list_functions()["Functions"]}
    assert set(functions) == set(SEED_HANDLERS)
    for name, stem in SEED_HANDLERS.items():
        f = functions[name]
        assert f["Handler"] == f"{stem}.lambda_handler" and f["Runtime"] == "python3.12"
        assert f["Role"] == roles["lambda"] and f["Timeout"] == 10
        assert f["Environment"]["Variables"] == {"ENDPOINT_NAME": "scones-endpoint", "THRESHOLD": "0.9",
                                                 "S3_BUCKET": b.objects.bucket,
                                                 "CLASS_NAMES": json.dumps(list(b.latest_stage_report().classes))}
        assert f["CodeSha256"] == code_sha256(lambda_package())
        assert lam.list_tags(Resource=f["FunctionArn"])["Tags"][PROJECT_TAG["Key"]] == PROJECT_TAG["Value"]

    sfn = boto3.client("stepfunctions")
    d = sfn.describe_state_machine(stateMachineArn=sm.arn)
    assert d["roleArn"] == roles["states"] and d["type"] == "STANDARD"
    definition = json.loads(d["definition"])
    assert "${" not in d["definition"]
    template = json.loads(WORKFLOW_FILE.read_text())
    assert list(definition["States"]) == list(template["States"])
    called = {s["Parameters"]["FunctionName"] for s in definition["States"].values() if s.get("Type") == "Task"}
    assert called == {f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{n}" for n in SEED_HANDLERS}
    assert sm.endpoint_name == "scones-endpoint" and sm.threshold == 0.9 and not sm.imported and sm.backend == "aws"
    assert b.workflow_mapping(sm.name) == SEED_HANDLERS
    assert [m.name for m in b.list_state_machines()] == [sm.name]


def test_the_package_holds_every_handler_file_and_is_reproducible():
    package = lambda_package()
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        names = set(zf.namelist())
    assert {f"{stem}.py" for stem in SEED_HANDLERS.values()} | {"event_shapes.py"} <= names
    assert all("/" not in n for n in names)  # the handler module sits at the root, as Lambda imports it
    assert lambda_package() == package


def test_redeploy_updates_in_place_and_skips_unchanged_code(deployed):
    b, sm = deployed
    real = b.client("lambda")
    calls: list[str] = []

    class Recording:
        def __getattr__(self, name):
            attr = getattr(real, name)
            if name.startswith(("create_", "update_")):
                calls.append(name)
            return attr

    b.client = lambda service: Recording() if service == "lambda" else type(b).client(b, service)
    again = b.deploy_workflow(threshold=0.75)
    assert again.threshold == 0.75 and again.arn == sm.arn
    assert calls == ["update_function_configuration"] * 3  # code unchanged: no upload, no new function
    assert len(boto3.client("lambda").list_functions()["Functions"]) == 3
    assert len(boto3.client("stepfunctions").list_state_machines()["stateMachines"]) == 1


def test_missing_roles_create_nothing(endpoint, monkeypatch):
    monkeypatch.delenv("SCONES_STATES_ROLE_ARN")
    b = get_backend(load_settings())
    with pytest.raises(CredentialsError, match="SCONES_STATES_ROLE_ARN"):
        b.deploy_workflow()
    assert boto3.client("lambda").list_functions()["Functions"] == []
    monkeypatch.setenv("SCONES_STATES_ROLE_ARN", "arn:aws:iam::123456789012:role/x")
    monkeypatch.delenv("SCONES_LAMBDA_ROLE_ARN")
    with pytest.raises(CredentialsError, match="SCONES_LAMBDA_ROLE_ARN"):
        get_backend(load_settings()).deploy_workflow()
    assert boto3.client("stepfunctions").list_state_machines()["stateMachines"] == []


def test_an_unknown_endpoint_is_refused_naming_it(endpoint):
    with pytest.raises(ResourceNotFound, match="no-such-endpoint"):
        endpoint.deploy_workflow("no-such-endpoint")
    assert boto3.client("lambda").list_functions()["Functions"] == []


def test_a_function_this_project_did_not_create_is_never_overwritten(endpoint, roles):
    lam = boto3.client("lambda")
    lam.create_function(FunctionName="classifyImage", Runtime="python3.12", Role=roles["lambda"],
                        Handler="theirs.handler", Code={"ZipFile": lambda_package()})
    with pytest.raises(ResourceInUse, match="classifyImage already exists .* not created by this project"):
        endpoint.deploy_workflow()
    assert lam.get_function_configuration(FunctionName="classifyImage")["Handler"] == "theirs.handler"
    assert boto3.client("stepfunctions").list_state_machines()["stateMachines"] == []


def test_executions_start_list_describe_stop_and_history(deployed):
    b, sm = deployed
    arns = b.start_workflow_batch(3, threshold=0.8)
    assert len(arns) == 3 and all(a.startswith(f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{sm.name}:") for a in arns)
    staged = set(b.test_image_keys())
    listed = b.list_workflow_executions()
    assert {e.arn for e in listed} == set(arns)
    for e in listed:
        assert e.status == "RUNNING" and e.input["threshold"] == 0.8 and e.s3_key in staged
        assert e.input["s3_bucket"] == b.objects.bucket and e.input["image_data"] == ""
    one = b.describe_workflow_execution(listed[0].name)  # by name, as the CLI's `workflow history NAME`
    assert one.arn == listed[0].arn
    stopped = b.stop_workflow_execution(one.name)
    assert stopped.status == "ABORTED" and stopped.stop is not None
    history = b.workflow_execution_history(one.arn)
    assert history[0]["type"] == "ExecutionStarted" and all({"id", "type", "timestamp"} <= set(e) for e in history)
    states = b.workflow_execution_states(one.arn)
    assert [s.name for s in states] == list(sm.definition["States"])
    assert b.workflow_execution_definition(one.arn) == sm.definition  # DescribeStateMachineForExecution
    assert b.step_statuses()["workflow"].state == "in_progress"
    waited = b.wait_workflow_executions([a for a in arns if a != one.arn][:1], timeout=0.05, poll=0.01)
    assert waited[0].status == "RUNNING"  # moto never finishes them: the wait gives up at its timeout
    with pytest.raises(ResourceNotFound, match="No execution named 'nope'"):
        b.describe_workflow_execution("nope")


def _stubbed_sfn(b, responses):
    real = b.client("stepfunctions")
    stub = Stubber(real)
    for method, response in responses:
        stub.add_response(method, response)
    stub.activate()
    b.client = lambda service: real if service == "stepfunctions" else type(b).client(b, service)
    return stub


def test_a_finished_execution_shows_the_predicted_class_and_a_threshold_failure_too(deployed):
    b, sm = deployed
    start = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
    machine = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{sm.name}"
    ok_arn, low_arn = (f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{sm.name}:{n}" for n in ("ok", "low"))
    event = {"s3_bucket": b.objects.bucket, "s3_key": b.test_image_keys()[0], "image_data": ""}
    body = {"image_data": "…", "s3_bucket": b.objects.bucket, "s3_key": event["s3_key"], "inferences": [0.96, 0.04]}
    low_body = {**body, "inferences": [0.41, 0.59]}
    functions = b._machine_functions(sm.name)  # read (and kept) before Step Functions is stubbed
    assert b._classes(sm.name, start, functions) == ("bicycle", "motorcycle")
    cause = json.dumps({"errorMessage": "Confidence 0.59 is below the threshold 0.9",
                        "errorType": "THRESHOLD_CONFIDENCE_NOT_MET", "requestId": "r", "stackTrace": []})
    stub = _stubbed_sfn(b, [
        ("describe_execution", {"executionArn": ok_arn, "stateMachineArn": machine, "name": "ok", "status": "SUCCEEDED",
                                "startDate": start, "stopDate": start + timedelta(seconds=2.78),
                                "input": json.dumps(event), "output": json.dumps({"statusCode": 200, "body": body})}),
        ("describe_execution", {"executionArn": low_arn, "stateMachineArn": machine, "name": "low", "status": "FAILED",
                                "startDate": start, "stopDate": start + timedelta(seconds=2.5),
                                "input": json.dumps(event), "error": "THRESHOLD_CONFIDENCE_NOT_MET", "cause": cause}),
        ("get_execution_history", {"events": [
            {"timestamp": start, "type": "ExecutionStarted", "id": 1, "previousEventId": 0,
             "executionStartedEventDetails": {"input": json.dumps(event)}},
            {"timestamp": start, "type": "TaskStateExited", "id": 12, "previousEventId": 11,
             "stateExitedEventDetails": {"name": "Classify image",
                                         "output": json.dumps({"statusCode": 200, "body": low_body})}},
            {"timestamp": start, "type": "ExecutionFailed", "id": 20, "previousEventId": 19,
             "executionFailedEventDetails": {"error": "THRESHOLD_CONFIDENCE_NOT_MET", "cause": cause}}]}),
    ])
    ok = b.describe_workflow_execution(ok_arn)
    low = b.describe_workflow_execution(low_arn)
    stub.assert_no_pending_responses()
    assert (ok.status, ok.label, ok.confidence, ok.seconds) == ("SUCCEEDED", "bicycle", 0.96, 2.78)
    assert (low.status, low.error, low.label, low.confidence) == ("FAILED", "THRESHOLD_CONFIDENCE_NOT_MET", "motorcycle", 0.59)
    assert b.describe_workflow_execution(low_arn) == low  # finished: read once, then kept
    stub.deactivate()


def test_an_execution_keeps_the_class_names_its_functions_had_when_it_started(deployed, small_archive):
    """Redeploying the workflow on a model of another class order relabels nothing that ran before."""
    b, sm = deployed
    machine = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{sm.name}"
    before = datetime.now(timezone.utc)
    b.stage_data(small_archive, classes=["motorcycle", "bicycle"])
    model = b.create_model(b.create_training_job(b.default_training_hyperparameters("sagemaker")))
    assert model.classes == ("motorcycle", "bicycle")
    b.deploy(model.model_name, "scones-endpoint-c", capture_percent=0)
    b.deploy_workflow(endpoint_name="scones-endpoint-c", threshold=0.75)
    after = datetime.now(timezone.utc)

    def execution(started: datetime, inp: str = "{}"):
        return b._execution({
            "executionArn": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{sm.name}:x", "stateMachineArn": machine,
            "name": "x", "status": "SUCCEEDED", "startDate": started, "stopDate": started, "input": inp,
            "output": json.dumps({"statusCode": 200, "body": {"inferences": [0.9, 0.1]}})})

    assert (execution(before).label, execution(after).label) == ("bicycle", "motorcycle")
    # ... and the endpoint each called (Monitor credits executions there, not to the machine's endpoint now)
    assert (execution(before).endpoint, execution(after).endpoint) == (sm.endpoint_name, "scones-endpoint-c")
    # ... and the threshold each was judged against: the workflow's then, or its own
    assert (execution(before).threshold, execution(after).threshold) == (0.9, 0.75)
    assert execution(before, json.dumps({"threshold": 0.3})).threshold == 0.3
    # A fresh backend of the workspace (the CLI's) reads the same from the workspace's notes.
    assert get_backend(load_settings())._execution({
        "executionArn": "e", "stateMachineArn": machine, "name": "x", "status": "SUCCEEDED", "startDate": before,
        "stopDate": before, "output": json.dumps({"body": {"inferences": [0.9, 0.1]}})}).label == "bicycle"


def test_a_long_listing_asks_for_the_machines_functions_once_when_that_fails(deployed, monkeypatch):
    """Each listed execution needs its machine's functions (class names, endpoint called): a throttled read is
    not asked again for every execution of a long list, and is asked again a little later."""
    from backend.api import Throttling
    from backend.aws import workflow as aws_workflow

    b, sm = deployed
    calls = []

    def throttled(name):
        calls.append(name)
        raise Throttling("Rate exceeded")

    monkeypatch.setattr(b, "describe_state_machine", throttled)
    b._wf_cache["functions"].clear()
    machine = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{sm.name}"
    start = datetime.now(timezone.utc)
    after_first = None
    for i in range(50):
        e = b._execution({"executionArn": f"{machine}:{i}", "stateMachineArn": machine, "name": str(i),
                          "status": "SUCCEEDED", "startDate": start, "stopDate": start,
                          "output": json.dumps({"body": {"inferences": [0.9, 0.1]}})})
        assert e.endpoint is None  # unknown this time, never a guess
        after_first = after_first or len(calls)
    assert after_first <= 2 and len(calls) == after_first  # the functions, and the classes' fallback: once each
    monkeypatch.setattr(aws_workflow, "FUNCTIONS_RETRY_SECONDS", 0.0)
    b._execution({"executionArn": f"{machine}:x", "stateMachineArn": machine, "name": "x", "status": "RUNNING",
                  "startDate": start})
    assert len(calls) == after_first + 1


def test_import_a_console_export_maps_functions_and_rewrites_arns(endpoint):
    exported = {
        "Comment": "exported from the console of another account",
        "StartAt": "serializeImageData",
        "States": {
            "serializeImageData": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                                   "Parameters": {"FunctionName": "arn:aws:lambda:eu-west-1:999999999999:function:serializeImageData:$LATEST",
                                                  "Payload.$": "$"},
                                   "OutputPath": "$.Payload", "Next": "my-classifier"},
            "my-classifier": {"Type": "Task", "Resource": "arn:aws:lambda:eu-west-1:999999999999:function:my-classifier",
                              "End": True},
        },
    }
    with pytest.raises(ValidationError, match="calls function 'my-classifier', which has no handler file"):
        endpoint.import_workflow(json.dumps(exported))
    assert boto3.client("lambda").list_functions()["Functions"] == []  # refused before anything was created

    sm = endpoint.import_workflow(json.dumps(exported), {"my-classifier": "classify_image"}, name="from-console")
    assert sm.imported and sm.name == "from-console"
    text = boto3.client("stepfunctions").describe_state_machine(stateMachineArn=sm.arn)["definition"]
    assert "999999999999" not in text and "eu-west-1" not in text
    assert f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:serializeImageData:$LATEST" in text
    assert endpoint.workflow_mapping("from-console") == {"serializeImageData": "serialize_image_data",
                                                          "my-classifier": "classify_image"}
    config = boto3.client("lambda").get_function_configuration(FunctionName="my-classifier")
    assert config["Handler"] == "classify_image.lambda_handler"


def test_an_import_never_re_points_the_deployed_workflows_shared_functions(deployed):
    """The seed's function names are shared by name on AWS: the import keeps the deployed workflow's endpoint and
    threshold, and one that asks for others is refused before anything changes (locally too)."""
    b, sm = deployed
    export = sm.definition  # as the console exports it: the functions' ARNs
    with pytest.raises(ResourceInUse, match=f"calls classifyImage, filterInferences, serializeImageData, which state "
                                            f"machine {sm.name} uses too \\(endpoint scones-endpoint, threshold 0.9\\)"):
        b.import_workflow(json.dumps(export), name="imported", threshold=0.5)
    with pytest.raises(ResourceInUse, match=f"Function classifyImage runs lambdas/classify_image.py for state machine "
                                            f"{sm.name}; mapping it to filter_inferences would change that machine"):
        b.import_workflow(json.dumps(export), {"classifyImage": "filter_inferences"}, name="imported")
    config = boto3.client("lambda").get_function_configuration(FunctionName="filterInferences")
    assert config["Environment"]["Variables"]["THRESHOLD"] == "0.9"  # untouched
    handler = boto3.client("lambda").get_function_configuration(FunctionName="classifyImage")["Handler"]
    assert handler == "classify_image.lambda_handler"
    imported = b.import_workflow(json.dumps(export), name="imported")  # no values: the shared ones
    assert (imported.endpoint_name, imported.threshold) == ("scones-endpoint", 0.9)
    again = b.describe_state_machine(sm.name)
    assert (again.endpoint_name, again.threshold) == ("scones-endpoint", 0.9)
    boto3.client("sagemaker").delete_endpoint(EndpointName="scones-endpoint")  # the shared functions' endpoint
    with pytest.raises(ResourceNotFound, match=f"classify with endpoint scones-endpoint, which no longer exists: "
                                               f"point {sm.name} at an InService endpoint first"):
        b.import_workflow(json.dumps(export), name="after-delete")


def test_inventory_and_cleanup_leave_nothing_tagged(deployed):
    b, sm = deployed
    b.start_workflow_batch(2)
    inv = {(r.kind, r.name): r for r in b.inventory()}
    assert {n for k, n in inv if k == "lambda-function"} == set(SEED_HANDLERS)
    assert ("state-machine", sm.name) in inv
    assert inv[("executions", sm.name)].status == "2 running of 2"
    report = b.cleanup(None, include_data=True)
    assert report.left == ()
    kinds = [k for k, _ in report.deleted]
    assert kinds.index("executions") < kinds.index("state-machine") < kinds.index("lambda-function") < kinds.index("data")
    assert b.inventory() == []
    tagged = boto3.client("resourcegroupstaggingapi").get_resources(
        TagFilters=[{"Key": PROJECT_TAG["Key"], "Values": [PROJECT_TAG["Value"]]}],
        ResourceTypeFilters=["lambda", "states", "sagemaker:endpoint", "sagemaker:model"])["ResourceTagMappingList"]
    assert tagged == []
    assert b.cleanup(None, include_data=True).deleted == ()


def test_a_fresh_workspace_finds_the_project_resources_by_tag(deployed, tmp_path, monkeypatch):
    b, sm = deployed
    monkeypatch.setenv("SCONES_HOME", str(tmp_path / "another-home"))
    other = get_backend(load_settings())  # no record of what the first workspace created
    inv = {(r.kind, r.name) for r in other.inventory()}
    assert {("state-machine", sm.name), ("endpoint", "scones-endpoint")} <= inv
    assert {n for k, n in inv if k == "lambda-function"} == set(SEED_HANDLERS)
    report = other.cleanup([("state-machine", sm.name)] + [("lambda-function", n) for n in SEED_HANDLERS])
    assert report.left == ()
    assert boto3.client("stepfunctions").list_state_machines()["stateMachines"] == []


def test_the_workflow_page_on_aws_shows_the_machine_executions_graph_and_history(deployed):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from ui.state import backend

    b, sm = deployed
    arns = b.start_workflow_batch(2)
    backend.clear()
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=60)
        at.switch_page("views/workflow.py")
        at.run()
        assert not at.exception, at.exception
        text = " ".join(m.value for m in at.markdown)
        assert f"**{sm.name}** · endpoint `scones-endpoint` · threshold **0.90** · 3 functions" in text
        assert any("three Lambda functions" in c.value for c in at.caption)
        table = at.dataframe[0].value
        assert set(table["name"]) == {a.rsplit(":", 1)[-1] for a in arns} and set(table["status"]) == {"RUNNING"}
        assert at.selectbox(key="wf_pick").value in set(table["name"])
        history = at.dataframe[1].value
        assert history["type"].iloc[0] == "ExecutionStarted"
        assert at.get("graphviz_chart")  # the state machine drawn with each state's status
    finally:
        backend.clear()


def test_cli_workflow_deploy_list_and_history_on_aws(moto_server, monkeypatch, small_archive):
    import subprocess
    import sys

    iam = boto3.client("iam", endpoint_url=moto_server)
    for env, name, service in (("SCONES_SAGEMAKER_ROLE_ARN", "sm", "sagemaker"), ("SCONES_LAMBDA_ROLE_ARN", "lam", "lambda"),
                               ("SCONES_STATES_ROLE_ARN", "sfn", "states")):
        trust = json.loads(json.dumps(TRUST))
        trust["Statement"][0]["Principal"]["Service"] = f"{service}.amazonaws.com"
        monkeypatch.setenv(env, iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"])
    b = get_backend(load_settings())
    b.stage_data(small_archive)
    b.deploy(b.create_model(b.create_training_job(b.default_training_hyperparameters("sagemaker"))).model_name,
             "scones-endpoint", capture_percent=100)

    def cli(*args: str) -> dict:
        r = subprocess.run([sys.executable, "-m", "backend.cli", "--backend", "aws", "--json", *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "testing-secret-value" not in r.stdout + r.stderr
        return json.loads(r.stdout)

    doc = cli("workflow", "deploy", "--threshold", "0.85")
    assert doc["state_machine"] == "scones-workflow" and doc["endpoint_name"] == "scones-endpoint"
    assert doc["threshold"] == 0.85 and set(doc["functions"]) == set(SEED_HANDLERS)
    arns = b.start_workflow_batch(2)
    listed = cli("workflow", "list")["executions"]
    assert {e["name"] for e in listed} == {a.rsplit(":", 1)[-1] for a in arns}
    assert {e["status"] for e in listed} == {"RUNNING"} and all(e["s3_key"].startswith("test/") for e in listed)
    history = cli("workflow", "history", listed[0]["name"])
    assert history["status"] == "RUNNING" and history["events"][0]["type"] == "ExecutionStarted"


@pytest.fixture
def executing(aws_env, monkeypatch):
    """moto running the definitions it is given (it runs Pass, Choice, Fail... but not our Lambda tasks)."""
    from moto import mock_aws

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        monkeypatch.setenv("SCONES_SAGEMAKER_ROLE_ARN", _role("scones-sm", "sagemaker.amazonaws.com"))
        monkeypatch.setenv("SCONES_LAMBDA_ROLE_ARN", _role("scones-lambda", "lambda.amazonaws.com"))
        monkeypatch.setenv("SCONES_STATES_ROLE_ARN", _role("scones-states", "states.amazonaws.com"))
        yield


def test_executions_that_moto_runs_end_and_are_waited_for(executing, small_archive):
    b = get_backend(load_settings())
    b.stage_data(small_archive)
    b.deploy(b.create_model(b.create_training_job(b.default_training_hyperparameters("sagemaker"))).model_name,
             "scones-endpoint", capture_percent=100)
    definition = {"StartAt": "Classified", "States": {
        "Classified": {"Type": "Pass", "Result": {"statusCode": 200, "body": {"inferences": [0.2, 0.8]}},
                       "Next": "Confident?"},
        "Confident?": {"Type": "Choice", "Default": "Low",
                       "Choices": [{"Variable": "$.body.inferences[1]", "NumericGreaterThan": 0.5, "Next": "Done"}]},
        "Done": {"Type": "Succeed"},
        "Low": {"Type": "Fail", "Error": "THRESHOLD_CONFIDENCE_NOT_MET", "Cause": "low"}}}
    sm = b.import_workflow(json.dumps(definition), name="no-tasks")
    assert sm.functions == {} and boto3.client("lambda").list_functions()["Functions"] == []
    arns = b.start_workflow_batch(3, state_machine="no-tasks")
    done = b.wait_workflow_executions(arns, timeout=30, poll=0.05)
    assert [e.status for e in done] == ["SUCCEEDED"] * 3
    assert all(e.label == "motorcycle" and e.confidence == 0.8 and e.seconds is not None for e in done)
    states = {s.name: s.status for s in b.workflow_execution_states(arns[0])}
    assert states["Classified"] == "succeeded" and states["Low"] == "not_run"
    assert b.step_statuses()["workflow"].state == "done"


def test_the_workflow_step_tells_threshold_failures_from_other_failures_as_locally(executing, small_archive):
    b = get_backend(load_settings())
    b.stage_data(small_archive)
    b.deploy(b.create_model(b.create_training_job(b.default_training_hyperparameters("sagemaker"))).model_name,
             "scones-endpoint", capture_percent=100)

    def failing(error: str) -> str:
        return json.dumps({"StartAt": "End", "States": {"End": {"Type": "Fail", "Error": error, "Cause": "c"}}})

    b.import_workflow(failing("THRESHOLD_CONFIDENCE_NOT_MET"), name="low")
    b.import_workflow(failing("States.TaskFailed"), name="broken")
    arns = b.start_workflow_batch(2, state_machine="low") + b.start_workflow_batch(1, state_machine="broken")
    assert {e.status for e in b.wait_workflow_executions(arns, timeout=30, poll=0.05)} == {"FAILED"}
    fresh = get_backend(load_settings())  # as 'scones status' in a new process: nothing read yet
    step = fresh.step_statuses()["workflow"]
    assert step.state == "done"
    assert step.detail == "3 executions: 0 succeeded, 2 below the threshold, 1 failed otherwise.", step.detail


def test_listing_a_big_batch_spends_few_describe_calls(deployed):
    from backend.aws.workflow import NEW_DESCRIBES_PER_LIST

    b, _ = deployed
    arns = b.start_workflow_batch(NEW_DESCRIBES_PER_LIST + 15)
    real = b.client("stepfunctions")
    calls: list[str] = []

    class Counting:
        def __getattr__(self, name):
            if name == "describe_execution":
                calls.append(name)
            return getattr(real, name)

    b.client = lambda service: Counting() if service == "stepfunctions" else type(b).client(b, service)
    first = b.list_workflow_executions()
    assert len(first) == len(arns) and len(calls) == NEW_DESCRIBES_PER_LIST
    assert sum(e.s3_key is not None for e in first) == NEW_DESCRIBES_PER_LIST  # the rest show their input next time
    second = b.list_workflow_executions()
    assert len(calls) == len(arns) and all(e.s3_key for e in second)
    b.list_workflow_executions()
    assert len(calls) == len(arns)  # running ones follow ListExecutions once their input is known


def test_a_batch_throttled_part_way_says_how_many_started_and_keeps_them(deployed):
    from botocore.exceptions import ClientError

    from backend.api import BatchPartlyStarted

    b, _ = deployed
    calls = [0]

    def throttle_the_seventh(**_):
        calls[0] += 1
        if calls[0] == 7:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "StartExecution")
    b.client("stepfunctions").meta.events.register("before-call.sfn.StartExecution", throttle_the_seventh)
    with pytest.raises(BatchPartlyStarted, match="19 of 20 executions started and run; 1 was refused") as info:
        b.start_workflow_batch(20)
    assert len(info.value.started) == 19 and info.value.code == "ThrottlingException"
    assert {e.arn for e in b.list_workflow_executions()} >= set(info.value.started)


def test_finished_executions_not_read_yet_are_marked_and_the_cli_reads_them_all(endpoint, monkeypatch, capsys):
    """DescribeExecution is spent a few at a time: a fresh process (each `scones workflow list`) marks the
    finished executions it has not read, and the CLI lists again until every one carries its error."""
    from moto.core.config import default_user_config

    from backend import cli
    from backend.aws.workflow import NEW_DESCRIBES_PER_LIST

    monkeypatch.setitem(default_user_config["stepfunctions"], "execute_state_machine", True)  # moto runs them
    b = endpoint
    b.import_workflow(json.dumps({"StartAt": "Low", "States": {"Low": {
        "Type": "Fail", "Error": "THRESHOLD_CONFIDENCE_NOT_MET", "Cause": "low"}}}), name="no-tasks")
    arns = b.start_workflow_batch(NEW_DESCRIBES_PER_LIST + 10, state_machine="no-tasks")
    b.wait_workflow_executions(arns, timeout=30)
    listed = get_backend(load_settings()).list_workflow_executions()  # as a new process
    pending = [e for e in listed if e.details_pending]
    assert len(pending) == 10 and all(e.status == "FAILED" and e.error is None for e in pending)
    assert all(e.error == "THRESHOLD_CONFIDENCE_NOT_MET" for e in listed if not e.details_pending)
    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    assert cli.main(["workflow", "list", "--json"]) == 0
    docs = json.loads(capsys.readouterr().out)["executions"]
    assert len(docs) == len(arns) and {d["error"] for d in docs} == {"THRESHOLD_CONFIDENCE_NOT_MET"}


def test_home_flags_a_workflow_whose_endpoint_was_deleted(deployed):
    b, sm = deployed
    assert b.step_statuses()["workflow"].state == "not_started"  # deployed, nothing run yet, endpoint InService
    b.delete_endpoint(sm.endpoint_name)
    step = b.step_statuses()["workflow"]
    assert step.state == "failed" and f"{sm.endpoint_name} that {sm.name} calls no longer exists" in step.detail


def test_rows_of_an_override_batch_not_read_yet_do_not_claim_the_workflows_threshold(deployed):
    """A long listing reads a few executions' inputs a refresh: the others' own threshold is not known yet, so
    they showed the workflow's (0.9) for a batch run at 0.3."""
    from backend.aws.workflow import NEW_DESCRIBES_PER_LIST

    b, _ = deployed  # workflow at 0.9
    b.start_workflow_batch(NEW_DESCRIBES_PER_LIST + 5, threshold=0.3)
    first = b.list_workflow_executions()
    assert {e.threshold for e in first} == {0.3, None}, [e.threshold for e in first]  # read ones say 0.3, others blank
