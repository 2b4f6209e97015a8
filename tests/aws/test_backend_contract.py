"""One backend contract, run on the local backend and on the AWS backend (moto): the same calls
and the same records from staging to cleanup. A difference between the two is a bug.

What the backends may differ in is said where it happens: moto completes training jobs at once and
cannot run the Lambda tasks (its executions stay RUNNING), and only AWS has Lambda functions to
list and delete (locally a function is a handler file run by the runtime).
"""
from __future__ import annotations

import json
import time

import boto3
import pytest

from backend import get_backend
from backend.api import RESOURCE_KINDS, CaptureConfig
from backend.settings import load_settings
from backend.workflow_defs import SEED_HANDLERS, WORKFLOW_FILE
from tests.workspaces import stop_all


def _roles(monkeypatch) -> None:
    iam = boto3.client("iam")
    for env, name, service in (("SCONES_SAGEMAKER_ROLE_ARN", "sm", "sagemaker"),
                               ("SCONES_LAMBDA_ROLE_ARN", "lam", "lambda"),
                               ("SCONES_STATES_ROLE_ARN", "sfn", "states")):
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                          "Principal": {"Service": f"{service}.amazonaws.com"}}]}
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        monkeypatch.setenv(env, arn)


@pytest.fixture(params=["local", "aws"])
def b(request, home, monkeypatch):
    if request.param == "aws":
        request.getfixturevalue("aws")  # moto, fake credentials, SCONES_BACKEND=aws
        _roles(monkeypatch)
        yield get_backend(load_settings())
        return
    backend = get_backend(load_settings())
    try:
        yield backend
    finally:
        stop_all(backend)


def _hyperparameters(b) -> dict[str, str]:
    if b.name == "aws":
        return b.default_training_hyperparameters("sagemaker")
    return {**b.default_training_hyperparameters(), "epochs": "1", "mini_batch_size": "128"}


def test_the_same_calls_give_the_same_records_from_staging_to_cleanup(b):
    # staging
    report = b.stage_data("sample")
    assert report.counts["test"] == {"bicycle": 100, "motorcycle": 100}
    assert len(b.test_image_keys()) == 200 and b.step_statuses()["stage"].state == "done"
    labels = b.test_image_labels()  # each test image's class, as test.lst gives it
    assert set(labels) == set(b.test_image_keys())
    assert {c: list(labels.values()).count(c) for c in set(labels.values())} == {"bicycle": 100, "motorcycle": 100}

    # training
    job_name = b.create_training_job(_hyperparameters(b))
    deadline = time.monotonic() + 240
    while b.describe_training_job(job_name).status == "InProgress" and time.monotonic() < deadline:
        time.sleep(0.3)
    job = b.describe_training_job(job_name)
    assert job.status == "Completed" and job.model_artifact.endswith(f"/output/{job_name}/output/model.tar.gz")
    assert [j.job_name for j in b.list_training_jobs()] == [job_name]
    model = b.create_model(job_name)
    assert model.classes == ("bicycle", "motorcycle") and model.image_shape == (3, 32, 32)

    # deployment with data capture
    b.deploy(model.model_name, "scones-endpoint", capture_percent=100)
    endpoint = b.wait_endpoint("scones-endpoint", timeout=60)
    assert endpoint.status == "InService" and endpoint.model_name == model.model_name
    assert endpoint.capture.enabled and endpoint.capture.sampling_percent == 100
    assert endpoint.capture.destination.endswith("/data_capture")
    off = b.create_endpoint_config("scones-no-capture", model.model_name,
                                   capture=CaptureConfig(enabled=False, sampling_percent=40, destination="x"))
    assert off.capture == CaptureConfig(enabled=False, sampling_percent=0)  # as a config made with no capture reads

    # the workflow: the same state machine, the same functions, executions and their history
    sm = b.deploy_workflow(threshold=0.8)
    assert (sm.name, sm.endpoint_name, sm.threshold, sm.imported) == ("scones-workflow", "scones-endpoint", 0.8, False)
    assert set(sm.functions) == set(SEED_HANDLERS) and b.workflow_mapping(sm.name) == SEED_HANDLERS
    assert list(sm.definition["States"]) == list(json.loads(WORKFLOW_FILE.read_text())["States"])
    arns = b.start_workflow_batch(2)
    if b.name == "local":
        assert {e.status for e in b.wait_workflow_executions(arns, timeout=60)} <= {"SUCCEEDED", "FAILED"}
    listed = {e.arn: e for e in b.list_workflow_executions()}
    assert set(arns) <= set(listed)
    assert all(listed[a].s3_key in b.test_image_keys() for a in arns)
    history = b.workflow_execution_history(arns[0])
    assert history[0]["type"] == "ExecutionStarted" and history[0]["id"] == 1
    states = b.workflow_execution_states(arns[0])
    assert [s.name for s in states] == list(sm.definition["States"])

    # inventory and cleanup, in dependency order, leaving nothing
    kinds = {r.kind for r in b.inventory()}
    assert {"endpoint", "endpoint-config", "model", "training-job", "state-machine", "data"} <= kinds
    assert ("lambda-function" in kinds) == (b.name == "aws")
    report = b.cleanup(None, include_data=True)
    assert report.left == ()
    order = [k for k, _ in report.deleted]
    assert order == sorted(order, key=RESOURCE_KINDS.index)
    assert b.inventory() == [] and b.list_endpoints() == [] and b.list_state_machines() == []
    assert b.cleanup(None, include_data=True).deleted == ()
