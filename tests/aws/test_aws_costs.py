"""Cost guardrails on AWS (moto): the price named before a start, nothing started without --yes,
idle endpoints found from CloudWatch with their cost so far, and a clear endpoint-quota message."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from backend import cli, get_backend
from backend.api import ResourceLimitExceeded
from backend.aws import pricing
from backend.settings import load_settings

from tests.aws.conftest import SAGEMAKER_ROLE as ROLE
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def staged(aws_staged):
    return aws_staged


@pytest.fixture
def deployed(staged):
    b = staged
    job = b.create_training_job(b.default_training_hyperparameters("sagemaker"))
    model = b.create_model(job)
    return b, b.deploy(model.model_name, "scones-endpoint")


def sagemaker():
    return boto3.client("sagemaker", region_name="us-east-1")


def test_the_notice_names_the_instance_type_its_price_and_the_table(aws):
    b = get_backend(load_settings())
    training = b.billing_notice("training")
    assert training.instance_type == "ml.p3.2xlarge" and training.hourly_usd == 3.825
    assert training.confirmation == (f"I understand this starts ml.p3.2xlarge at about $3.825/h "
                                     f"(prices of {pricing.PRICES_AS_OF}, {pricing.PRICE_REGION})")
    assert "ml.m5.large at about $0.115/h" in b.billing_notice("endpoint", "ml.m5.large").confirmation
    assert "ml.m5.xlarge at about $0.23/h" in b.billing_notice("endpoint").confirmation
    unknown = b.billing_notice("endpoint", "ml.r5.24xlarge")
    assert unknown.hourly_usd is None and "does not list" in unknown.confirmation


def test_the_local_backend_bills_nothing_and_has_no_idle_endpoints(backend):
    assert backend.billing_notice("training") is None and backend.billing_notice("endpoint") is None
    assert backend.idle_endpoints() == []


def test_cli_train_and_deploy_on_aws_start_nothing_without_yes(staged, capsys):
    b = staged
    assert cli.main(["train", "--json"]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and json.loads(out)["error"]["message"] in err
    assert "ml.p3.2xlarge at about $3.825/h" in err and "--yes" in err
    assert sagemaker().list_training_jobs()["TrainingJobSummaries"] == [] and b.list_training_jobs() == []

    assert cli.main(["train", "--yes", "--json"]) == 0  # no --preset: the backend's own, the notebook's here
    job = json.loads(capsys.readouterr()[0])["job_name"]
    assert len(sagemaker().list_training_jobs()["TrainingJobSummaries"]) == 1
    hps = sagemaker().describe_training_job(TrainingJobName=job)["HyperParameters"]
    assert (hps["num_layers"], hps["epochs"], hps["optimizer"]) == ("152", "30", "sgd")

    assert cli.main(["deploy", "--json"]) == 2
    out, err = capsys.readouterr()
    assert "ml.m5.xlarge at about $0.23/h" in err and len(err.strip().splitlines()) == 1
    assert json.loads(out)["error"]["code"] == "UsageError"
    assert sagemaker().list_models()["Models"] == [] and sagemaker().list_endpoints()["Endpoints"] == []

    assert cli.main(["deploy", "--yes", "--json"]) == 0
    _, err = capsys.readouterr()
    assert "lifecycle rule" not in err  # the default capture prefix got its S3 lifecycle rule
    assert [e["EndpointName"] for e in sagemaker().list_endpoints()["Endpoints"]] == ["scones-endpoint"]
    os.environ["SCONES_CAPTURE_RETENTION_DAYS"] = "soon"  # no rule can be set: the deploy goes on and says why
    try:
        assert cli.main(["deploy", "--yes", "--json", "--endpoint", "elsewhere"]) == 0
    finally:
        del os.environ["SCONES_CAPTURE_RETENTION_DAYS"]
    _, err = capsys.readouterr()
    assert "scones: note: Capture in s3://" in err and "has no lifecycle rule" in err


def test_cli_train_in_a_real_process_against_a_moto_server(moto_server, monkeypatch, small_archive):
    """The CLI as scripts run it: a process of its own, AWS at a loopback moto server."""
    monkeypatch.setenv("SCONES_SAGEMAKER_ROLE_ARN", ROLE)
    get_backend(load_settings()).stage_data(small_archive)
    sm = boto3.client("sagemaker", region_name="us-east-1")
    run = [sys.executable, "-m", "backend.cli", "train", "--preset", "sagemaker", "--backend", "aws"]
    r = subprocess.run(run, capture_output=True, text=True, env=dict(os.environ), timeout=120, cwd=REPO)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.startswith("scones: Nothing was started: this starts ml.p3.2xlarge")
    assert sm.list_training_jobs()["TrainingJobSummaries"] == []
    r = subprocess.run([*run, "--yes"], capture_output=True, text=True, env=dict(os.environ), timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert len(sm.list_training_jobs()["TrainingJobSummaries"]) == 1


def test_the_local_backend_accepts_yes(home, capsys):
    assert cli.main(["deploy", "--yes", "--backend", "local"]) == 2
    err = capsys.readouterr().err
    assert "No Completed training job" in err and "unrecognized" not in err


def test_an_endpoint_idle_for_an_hour_is_named_with_its_cost(deployed):
    b, endpoint = deployed
    assert b.idle_endpoints() == []  # just created: not idle yet
    later = datetime.now(timezone.utc) + timedelta(hours=2, minutes=30)
    idle = b.idle_endpoints(now=later)
    assert [e.endpoint_name for e in idle] == ["scones-endpoint"]
    e = idle[0]
    assert e.instance_type == "ml.m5.xlarge" and e.hourly_usd == 0.23
    assert 2.4 < e.hours_running < 2.6 and 2.4 < e.hours_idle < 2.6  # idle since it was created
    assert e.cost_so_far_usd == pytest.approx(0.23 * e.hours_running)

    # another endpoint's traffic does not count; this one's does
    cw = boto3.client("cloudwatch", region_name="us-east-1")

    def invoked(name: str, at: datetime) -> None:
        cw.put_metric_data(Namespace="AWS/SageMaker", MetricData=[{
            "MetricName": "Invocations", "Timestamp": at, "Value": 3.0, "Unit": "None",
            "Dimensions": [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}]}])

    invoked("another-endpoint", later - timedelta(minutes=10))
    assert [e.endpoint_name for e in b.idle_endpoints(now=later)] == ["scones-endpoint"]
    invoked("scones-endpoint", later - timedelta(minutes=10))
    assert b.idle_endpoints(now=later) == []


def test_only_in_service_endpoints_are_reported(deployed):
    b, _ = deployed
    real = b.client("sagemaker")

    class Creating:
        def __getattr__(self, name):
            return getattr(real, name)

        def describe_endpoint(self, **kwargs):
            return {**real.describe_endpoint(**kwargs), "EndpointStatus": "Creating"}

    b.client = lambda service: Creating() if service == "sagemaker" else type(b).client(b, service)
    assert b.idle_endpoints(now=datetime.now(timezone.utc) + timedelta(hours=3)) == []


def test_an_endpoint_quota_of_0_says_which_quota_to_raise(staged):
    b = staged
    job = b.create_training_job(b.default_training_hyperparameters("sagemaker"))
    model = b.create_model(job)
    real = b.client("sagemaker")

    class NoQuota:  # what SageMaker answers on an account without ml.m5.large endpoint quota
        def __getattr__(self, name):
            return getattr(real, name)

        def create_endpoint(self, **kwargs):
            raise ClientError({"Error": {"Code": "ResourceLimitExceeded", "Message": (
                "The account-level service limit 'ml.m5.large for endpoint usage' is 0 Instances, with current "
                "utilization of 0 Instances and a request delta of 1 Instances.")}}, "CreateEndpoint")

    b.client = lambda service: NoQuota() if service == "sagemaker" else type(b).client(b, service)
    with pytest.raises(ResourceLimitExceeded) as caught:
        b.deploy(model.model_name, "scones-endpoint", instance_type="ml.m5.large")
    message = str(caught.value)
    assert message.startswith("The account's quota for ml.m5.large endpoint usage is used up or 0")
    assert "request an increase for 'ml.m5.large for endpoint usage' in Service Quotas" in message
    assert b.list_endpoints() == [] and sagemaker().list_endpoints()["Endpoints"] == []
    assert sagemaker().list_endpoint_configs()["EndpointConfigs"] == []  # the refused deploy's config went too
