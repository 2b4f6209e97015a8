"""Deployment on SageMaker through the AWS backend: moto for the control plane, botocore's
Stubber for InvokeEndpoint (moto cannot take binary bodies)."""
from __future__ import annotations

import io
import json
from types import SimpleNamespace

import boto3
import pytest
from botocore.stub import Stubber

from backend import get_backend
from backend.api import ResourceInUse, ResourceNotFound, ValidationError
from backend.settings import load_settings

ROLE = "arn:aws:iam::123456789012:role/scones-sagemaker"


@pytest.fixture
def model(aws, monkeypatch):
    monkeypatch.setenv("SCONES_SAGEMAKER_ROLE_ARN", ROLE)
    b = get_backend(load_settings())
    b.stage_data("sample")
    job = b.create_training_job(b.default_training_hyperparameters("sagemaker"))
    return b, b.create_model(job)


def test_deploy_with_data_capture_then_update(model):
    b, m = model
    endpoint = b.deploy(m.model_name, "scones-endpoint", capture_percent=50)
    assert endpoint.endpoint_name == "scones-endpoint" and endpoint.model_name == m.model_name
    assert endpoint.backend == "aws"
    sm = boto3.client("sagemaker", region_name="us-east-1")
    cfg = sm.describe_endpoint_config(EndpointConfigName=endpoint.config_name)
    assert cfg["ProductionVariants"][0]["VariantName"] == "AllTraffic"
    assert cfg["ProductionVariants"][0]["InstanceType"] == "ml.m5.xlarge"
    dcc = cfg["DataCaptureConfig"]
    assert dcc["EnableCapture"] is True and dcc["InitialSamplingPercentage"] == 50
    assert dcc["DestinationS3Uri"] == f"s3://{b.objects.bucket}/data_capture"
    assert {o["CaptureMode"] for o in dcc["CaptureOptions"]} == {"Input", "Output"}
    assert endpoint.capture.sampling_percent == 50
    assert [e.endpoint_name for e in b.list_endpoints()] == ["scones-endpoint"]
    assert b.step_statuses()["deploy"].state in ("done", "in_progress")

    # moto has no UpdateEndpoint: record that one call and apply it as SageMaker would (new config).
    real = b.client("sagemaker")
    updates: list[dict] = []

    class WithUpdate:
        def __getattr__(self, name):
            return getattr(real, name)

        def update_endpoint(self, **kwargs):
            updates.append(kwargs)
            real.delete_endpoint(EndpointName=kwargs["EndpointName"])
            return real.create_endpoint(**kwargs)

    b.client = lambda service: WithUpdate() if service == "sagemaker" else type(b).client(b, service)
    updated = b.deploy(m.model_name, "scones-endpoint", capture_percent=100, capture_output=False)
    assert [u["EndpointName"] for u in updates] == ["scones-endpoint"]
    assert updated.config_name == updates[0]["EndpointConfigName"] != endpoint.config_name
    assert updated.capture.sampling_percent == 100 and updated.capture.capture_output is False
    assert len(b.list_endpoint_configs()) == 2

    b.delete_endpoint("scones-endpoint")
    assert b.list_endpoints() == []
    with pytest.raises(ResourceNotFound):
        b.describe_endpoint("scones-endpoint")


def test_a_failed_endpoint_is_recreated_once_sagemaker_has_deleted_it(model):
    """DeleteEndpoint is all SageMaker allows on a Failed endpoint, and it refuses to create that name while
    the old one shows Deleting (moto deletes at once: Failed and Deleting are played here)."""
    b, m = model
    first = b.deploy(m.model_name, "scones-endpoint")
    assert b.start_endpoint("scones-endpoint").status == "InService"  # nothing to start: as locally, no error
    failed, deleting = {"scones-endpoint"}, set()

    def accept_delete(params, **_):
        deleting.add(json.loads(params["body"])["EndpointName"])
        failed.discard(json.loads(params["body"])["EndpointName"])
        return SimpleNamespace(status_code=200, headers={}), {}

    def play(parsed, **_):
        name = parsed.get("EndpointName")
        if name in failed:
            parsed["EndpointStatus"], parsed["FailureReason"] = "Failed", "The primary container did not pass ping."
        elif name in deleting:
            parsed["EndpointStatus"] = "Deleting"

    events = b.client("sagemaker").meta.events
    events.register("before-call.sagemaker.DeleteEndpoint", accept_delete)
    events.register("after-call.sagemaker.DescribeEndpoint", play)
    b.recreate_wait_seconds = 0.0
    with pytest.raises(ResourceInUse, match="had Failed and SageMaker is deleting it \\(Deleting, which takes a few "
                                            "minutes\\); deploy it again once it is no longer listed"):
        b.start_endpoint("scones-endpoint")
    assert deleting == {"scones-endpoint"}
    # once SageMaker has deleted it, starting it again creates it from its config
    events.unregister("before-call.sagemaker.DeleteEndpoint", accept_delete)
    events.register("before-call.sagemaker.DeleteEndpoint", lambda **_: failed.clear())  # moto deletes it at once
    deleting.clear()
    failed.add("scones-endpoint")
    again = b.start_endpoint("scones-endpoint")
    assert again.status == "InService" and again.config_name == first.config_name


def test_invoke_endpoint_through_sagemaker_runtime(model):
    b, _ = model
    runtime = b.client("sagemaker-runtime")
    b.client = lambda service: runtime if service == "sagemaker-runtime" else type(b).client(b, service)
    png = b.get_object("test/bicycle_s_000030.png")
    with Stubber(runtime) as stub:
        stub.add_response("invoke_endpoint", {"Body": io.BytesIO(json.dumps([0.97, 0.03]).encode()),
                                              "ContentType": "application/json"},
                          {"EndpointName": "ep", "ContentType": "image/png", "Accept": "application/json", "Body": png})
        p = b.invoke_endpoint("ep", png, "image/png")
        stub.add_client_error("invoke_endpoint", service_error_code="ValidationError",
                              service_message="Endpoint ep2 of account 123456789012 not found.")
        with pytest.raises(ResourceNotFound, match="not found"):
            b.invoke_endpoint("ep2", png, "image/png")
    assert p.probabilities == (0.97, 0.03) and p.label == "bicycle" and p.confidence == 0.97
    with pytest.raises(ValidationError, match="body is empty"):
        b.invoke_endpoint("ep", b"", "image/png")
    # an endpoint's labels are its model's classes, whatever was staged since
    b.deploy(_.model_name, "scones-endpoint")
    b.stage_data(b.latest_stage_report().source, ["motorcycle", "bicycle"])
    with Stubber(runtime) as stub:
        stub.add_response("invoke_endpoint", {"Body": io.BytesIO(json.dumps([0.97, 0.03]).encode()),
                                              "ContentType": "application/json"})
        assert b.invoke_endpoint("scones-endpoint", png, "image/png").label == _.classes[0] == "bicycle"


def test_bad_settings_are_named_errors(model):
    b, m = model
    with pytest.raises(ValidationError, match="Sampling percentage 101"):
        b.deploy(m.model_name, "ep", capture_percent=101)
    with pytest.raises(ValidationError, match="Endpoint name 'bad_name!'"):
        b.deploy(m.model_name, "bad_name!")
    with pytest.raises(ValidationError, match="cannot be paused"):
        b.stop_endpoint("ep")


def test_the_log_of_an_endpoint_not_there_is_resource_not_found_as_locally(model):
    """A log read for a name that is no endpoint names the problem; an endpoint with no log yet reads empty."""
    b, m = model
    with pytest.raises(ResourceNotFound, match="nosuch"):
        b.endpoint_log("nosuch")
    b.deploy(m.model_name, "scones-endpoint")
    assert b.endpoint_log("scones-endpoint") == ""


def test_capture_expires_on_s3_by_a_lifecycle_rule_beside_the_buckets_own_rules(model, monkeypatch):
    b, m = model
    s3 = boto3.client("s3", region_name="us-east-1")
    own = {"ID": "keep-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 400}}
    s3.put_bucket_lifecycle_configuration(Bucket=b.objects.bucket, LifecycleConfiguration={"Rules": [own]})
    monkeypatch.setenv("SCONES_CAPTURE_RETENTION_DAYS", "7.5")
    first = b.deploy(m.model_name, "scones-endpoint", capture_percent=50)
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=b.objects.bucket)["Rules"]}
    assert rules["keep-logs"]["Expiration"] == {"Days": 400}  # the bucket's own rule stays
    ours = rules["scones-capture-retention:data_capture"]
    assert ours["Filter"] == {"Prefix": "data_capture/"} and ours["Expiration"] == {"Days": 8}  # whole days, up
    assert b.capture_retention_note(first) == ""

    monkeypatch.setenv("SCONES_CAPTURE_RETENTION_DAYS", "30")
    second = b.deploy(m.model_name, "second-endpoint", capture_percent=50,
                      destination=f"s3://{b.objects.bucket}/data_capture/team-b")
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=b.objects.bucket)["Rules"]}
    assert set(rules) == {"keep-logs", "scones-capture-retention:data_capture",
                          "scones-capture-retention:data_capture/team-b"}
    assert rules["scones-capture-retention:data_capture/team-b"]["Expiration"] == {"Days": 30}
    assert b.capture_retention_note(second) == "" and b.capture_retention_note(first) == ""

    for name, destination, words in (
            ("third-endpoint", "s3://someone-elses-bucket/capture", "not in this workspace's bucket"),
            ("fourth-endpoint", f"s3://{b.objects.bucket}", "is not under data_capture/"),
            ("fifth-endpoint", f"s3://{b.objects.bucket}/output", "could expire other data there"),
            ("sixth-endpoint", f"s3://{b.objects.bucket}/data_capture_old", "is not under data_capture/")):
        endpoint = b.deploy(m.model_name, name, capture_percent=50, destination=destination)
        assert words in b.capture_retention_note(endpoint)
    for bad in ("soon", "inf", "nan"):
        monkeypatch.setenv("SCONES_CAPTURE_RETENTION_DAYS", bad)
        endpoint = b.deploy(m.model_name, f"bad-{bad}", capture_percent=50)  # deploys; the note names the setting
        assert f"SCONES_CAPTURE_RETENTION_DAYS='{bad}'" in b.capture_retention_note(endpoint)
    rules = {r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=b.objects.bucket)["Rules"]}
    assert rules == {"keep-logs", "scones-capture-retention:data_capture", "scones-capture-retention:data_capture/team-b"}


def test_a_bucket_with_rules_in_the_older_prefix_form_gets_ours_in_that_form(model):
    b, m = model
    s3 = boto3.client("s3", region_name="us-east-1")
    old = {"ID": "old-style", "Status": "Enabled", "Prefix": "logs/", "Expiration": {"Days": 90}}
    s3.put_bucket_lifecycle_configuration(Bucket=b.objects.bucket, LifecycleConfiguration={"Rules": [old]})
    endpoint = b.deploy(m.model_name, "scones-endpoint", capture_percent=50)
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=b.objects.bucket)["Rules"]}
    assert rules["scones-capture-retention:data_capture"]["Prefix"] == "data_capture/"
    assert "Filter" not in rules["scones-capture-retention:data_capture"] and rules["old-style"]["Prefix"] == "logs/"
    assert b.capture_retention_note(endpoint) == "" 


def test_a_role_that_may_not_set_lifecycle_rules_still_deploys_and_says_so(model):
    b, m = model
    real = b.client("s3")

    class Refusing:
        exceptions = real.exceptions

        def __getattr__(self, name):
            return getattr(real, name)

        def put_bucket_lifecycle_configuration(self, **kwargs):
            raise real.exceptions.ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "not allowed: s3:PutLifecycleConfiguration"}},
                "PutBucketLifecycleConfiguration")

    original = b.client
    b.client = lambda service: Refusing() if service == "s3" else original(service)
    try:
        endpoint = b.deploy(m.model_name, "scones-endpoint", capture_percent=50)
    finally:
        b.client = original
    assert endpoint.endpoint_name == "scones-endpoint"
    note = b.capture_retention_note(endpoint)
    assert "has no lifecycle rule" in note and "Monitor page trims it" in note
