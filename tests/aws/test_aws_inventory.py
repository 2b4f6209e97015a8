"""Inventory with hourly prices and a cleanup that leaves nothing of the workspace on AWS (moto)."""
from __future__ import annotations

import json
import re

import boto3
import pytest

from backend import cli, get_backend
from backend.api import ResourceInUse
from backend.aws import pricing
from backend.settings import load_settings

@pytest.fixture
def deployed(aws_staged):
    b = aws_staged
    job = b.create_training_job(b.default_training_hyperparameters("sagemaker"))
    b.objects.put_many({f"output/{job}/output/model.tar.gz": b"artifact bytes"})
    model = b.create_model(job)
    b.deploy(model.model_name, "scones-endpoint", capture_percent=100)
    b.objects.put_many({"data_capture/scones-endpoint/AllTraffic/2026/11/27/09/00-00-000-x.jsonl": b"{}\n"})
    return b, job, model


def test_inventory_shows_what_bills_and_cleanup_removes_it_in_order(deployed):
    b, job, model = deployed
    inv = {(r.kind, r.name): r for r in b.inventory()}
    endpoint = inv[("endpoint", "scones-endpoint")]
    assert endpoint.hourly_usd == pricing.HOSTING_USD_PER_HOUR["ml.m5.xlarge"]
    assert "since" in endpoint.detail and pricing.PRICES_AS_OF in endpoint.detail
    assert inv[("training-job", job)].hourly_usd is None  # moto completes jobs at once: nothing bills
    assert inv[("training-job", job)].size_bytes == len(b"artifact bytes") + len(  # and the classes it learned
        b.get_object(f"output/{job}/scones-classes.json"))
    assert ("model", model.model_name) in inv and ("data", "staged-images") in inv and ("data", "capture") in inv
    assert sum(k == "endpoint-config" for k, _ in inv) == 1

    kept = b.cleanup(None, include_data=False)
    assert kept.left == ()
    kinds = [k for k, _ in kept.deleted]
    assert kinds == ["endpoint", "endpoint-config", "model", "training-job"]
    sm = boto3.client("sagemaker", region_name="us-east-1")
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert all(r.is_data for r in b.inventory())
    assert b.list_objects(f"output/{job}/") == []

    everything = b.cleanup(None, include_data=True)
    assert {n for _, n in everything.deleted} == {"staged-images", "capture"}
    assert b.inventory() == [] and b.list_objects() == []
    assert {s.state for n, s in b.step_statuses().items() if n in ("stage", "train", "deploy")} == {"not_started"}
    assert b.cleanup(None, include_data=True).deleted == ()  # twice is harmless


def test_in_the_shared_default_bucket_the_data_counted_and_cleaned_up_is_this_workspaces_only(deployed):
    """sagemaker-<region>-<account> is the account's: another project's images, capture and uploads stay."""
    b, _, _ = deployed
    ours_upload = b.upload_workflow_image("photo.png", b.get_object(next(o.key for o in b.list_objects("test/"))))
    theirs = {"train/other-project/img1.jpg": b"x", "test/theirs.png": b"x", "uploads/their-photo.png": b"x",
              "data_capture/their-endpoint/AllTraffic/2026/11/27/09/00-00-000-y.jsonl": b"{}\n",
              "train.lst.bak": b"x"}
    b.objects.put_many(theirs)
    b.delete_endpoint("scones-endpoint")  # gone, but its capture folder is still this workspace's
    data = {r.name: r for r in b.inventory() if r.is_data}
    staged = sum(sum(c.values()) for c in b.latest_stage_report().counts.values())
    assert data["staged-images"].status == f"{staged + 4} file(s)"  # the images, two lists, manifest, key record
    assert data["capture"].status == "1 file(s)" and data["workflow-uploads"].status == "1 file(s)"
    b.cleanup(None, include_data=True)
    left = {o.key for o in b.list_objects()}
    assert set(theirs) <= left and ours_upload not in left
    assert not [k for k in left if k.startswith("output/")] and left == set(theirs)


def test_an_inventory_describes_each_endpoint_config_and_job_once(deployed):
    b, job, _ = deployed
    calls: list[str] = []
    b.client("sagemaker").meta.events.register("before-call.sagemaker.*",
                                               lambda model, **kw: calls.append(model.name))
    b.inventory()
    assert calls.count("DescribeEndpoint") == 1 and calls.count("DescribeEndpointConfig") == 1
    assert calls.count("DescribeTrainingJob") == 1
    calls.clear()
    b.describe_endpoint("scones-endpoint")
    b.describe_endpoint("scones-endpoint")  # outside an inventory nothing is remembered: statuses move
    assert calls.count("DescribeEndpoint") == 2


def test_a_running_training_job_shows_its_price_and_cost_so_far(deployed):
    from datetime import datetime, timedelta, timezone

    b, job, _ = deployed
    real = b.client("sagemaker")
    started = datetime.now(timezone.utc) - timedelta(hours=1)

    class StillTraining:  # moto completes jobs at once: this one is an hour into training
        def __getattr__(self, name):
            return getattr(real, name)

        def describe_training_job(self, **kwargs):
            d = dict(real.describe_training_job(**kwargs))
            d.update(TrainingJobStatus="InProgress", SecondaryStatus="Training", TrainingStartTime=started)
            d.pop("TrainingEndTime", None)
            return d

    b.client = lambda service: StillTraining() if service == "sagemaker" else type(b).client(b, service)
    row = next(r for r in b.inventory() if r.kind == "training-job")
    price = pricing.TRAINING_USD_PER_HOUR["ml.p3.2xlarge"]
    assert row.status == "InProgress" and row.hourly_usd == price
    m = re.search(r"about \$([0-9.]+) for (\d+) s so far", row.detail)
    assert m and 3600 <= int(m.group(2)) < 3660 and abs(float(m.group(1)) - price) < 0.05
    stopped: list[str] = []
    StillTraining.stop_training_job = lambda self, **kw: stopped.append(kw["TrainingJobName"])
    with pytest.raises(ResourceInUse, match="clean up again once it shows Stopped"):  # it may still write artifacts
        b.delete_training_job(job)
    assert stopped == [job] and ("training-job", job) in {(r.kind, r.name) for r in b.inventory()}


def test_what_another_workspace_created_is_listed_but_left_by_cleanup_everything(deployed, tmp_path, monkeypatch,
                                                                                 capsys):
    b, _, model = deployed
    monkeypatch.setenv("SCONES_HOME", str(tmp_path / "other-workspace"))  # a colleague's (or a lost) workspace
    other = get_backend(load_settings())
    assert other.objects.bucket == b.objects.bucket  # same account and region: the same project bucket
    inv = {(r.kind, r.name): r for r in other.inventory()}
    endpoint = inv[("endpoint", "scones-endpoint")]
    assert not endpoint.created_here and "not created by this workspace" in endpoint.detail
    assert not inv[("model", model.model_name)].created_here
    assert inv[("data", "staged-images")].created_here  # the bucket's data is the project's

    capsys.readouterr()
    assert cli.main(["cleanup", "--all", "--keep-data", "--json"]) == 2  # without --yes: what would go, and stay
    captured = capsys.readouterr()
    listed = json.loads(captured.out)
    reason = "found by the project tag, not created by this workspace: name it to delete it (endpoint:scones-endpoint)"
    assert listed["would_delete"] == [] and {"kind": "endpoint", "name": "scones-endpoint", "reason": reason} in listed["left"]
    assert "nothing would be deleted" in captured.err
    assert cli.main(["inventory", "--json"]) == 0
    docs = {(d["kind"], d["name"]): d for d in json.loads(capsys.readouterr().out)["resources"]}
    assert docs[("endpoint", "scones-endpoint")]["created_here"] is False

    report = other.cleanup(None, include_data=False)  # "everything" from the other workspace
    assert report.deleted == ()
    assert ("endpoint", "scones-endpoint", reason) in report.left
    assert boto3.client("sagemaker", region_name="us-east-1").list_endpoints()["Endpoints"] != []

    assert all(r.created_here for r in b.inventory())  # the workspace that created them owns them
    named = other.cleanup([("endpoint", "scones-endpoint")])  # named: deleted, as asked
    assert named.deleted == (("endpoint", "scones-endpoint"),)
    assert boto3.client("sagemaker", region_name="us-east-1").list_endpoints()["Endpoints"] == []


def test_deploying_onto_another_workspaces_endpoint_makes_it_this_workspaces(deployed, tmp_path, monkeypatch):
    b, _, model = deployed
    monkeypatch.setenv("SCONES_HOME", str(tmp_path / "other-workspace"))
    other = get_backend(load_settings())
    assert not {r.name: r for r in other.inventory()}["scones-endpoint"].created_here
    sm = other.client("sagemaker")
    real = sm.update_endpoint
    sm.update_endpoint = lambda **kw: {"EndpointArn": "arn"}  # moto has no UpdateEndpoint; AWS answers just this
    try:
        other.deploy(model.model_name, "scones-endpoint")  # serves this workspace's choice from now on
    finally:
        sm.update_endpoint = real
    assert {r.name: r for r in other.inventory() if r.kind == "endpoint"}["scones-endpoint"].created_here


def _deny(b, operation: str) -> None:
    """The operator's role may not call `operation` (SageMaker answers AccessDeniedException)."""
    from botocore.exceptions import ClientError

    def refuse(**_):
        raise ClientError({"Error": {"Code": "AccessDeniedException",
                                     "Message": f"User is not authorized to perform: sagemaker:{operation}"}}, operation)
    b.client("sagemaker").meta.events.register(f"before-call.sagemaker.{operation}", refuse)


def test_an_endpoint_that_cannot_be_deleted_keeps_what_it_uses_and_stays_listed(deployed):
    b, job, model = deployed
    _deny(b, "DeleteEndpoint")
    report = b.cleanup(None)
    left = {(k, n): why for k, n, why in report.left}
    assert "not authorized" in left[("endpoint", "scones-endpoint")]
    config = b.describe_endpoint("scones-endpoint").config_name
    assert "endpoint scones-endpoint could not be deleted" in left[("endpoint-config", config)]
    assert "endpoint scones-endpoint could not be deleted" in left[("model", model.model_name)]
    assert f"model {model.model_name} could not be deleted" in left[("training-job", job)]
    assert [e.endpoint_name for e in b.list_endpoints()] == ["scones-endpoint"]  # still found, still billing
    assert b.describe_model(model.model_name).model_name == model.model_name


def test_an_endpoint_config_in_use_is_not_deleted_and_an_endpoint_whose_config_went_elsewhere_stays_listed(deployed):
    b, _, _ = deployed
    config = b.describe_endpoint("scones-endpoint").config_name
    with pytest.raises(ResourceInUse, match=f"Endpoint scones-endpoint uses endpoint configuration {config}"):
        b.delete_endpoint_config(config)
    b.client("sagemaker").delete_endpoint_config(EndpointConfigName=config)  # someone else, in the console
    endpoint = next(e for e in b.list_endpoints() if e.endpoint_name == "scones-endpoint")
    assert endpoint.status == "InService" and "was deleted outside this dashboard" in endpoint.failure_reason
    assert ("endpoint", "scones-endpoint") in {(r.kind, r.name) for r in b.inventory()}


def test_a_tag_search_the_credentials_may_not_make_is_said_not_hidden(deployed):
    from botocore.exceptions import ClientError

    b, _, _ = deployed
    assert b.inventory() and b.inventory_notes() == []

    def refuse(**_):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized: tag:GetResources"}},
                          "GetResources")
    b.client("resourcegroupstaggingapi").meta.events.register("before-call.resource-groups-tagging-api.GetResources",
                                                              refuse)
    b.__dict__.pop("_tagged_cache", None)
    kinds = {r.kind for r in b.inventory()}
    assert "endpoint" in kinds  # the workspace's own records still list what it created
    assert any("tag:GetResources" in n for n in b.inventory_notes())


def test_an_endpoint_still_deleting_does_not_hold_back_its_config_and_model(deployed):
    """SageMaker keeps a deleted endpoint in Deleting for minutes (moto deletes at once: played here)."""
    from types import SimpleNamespace

    b, job, model = deployed
    going: set[str] = set()

    def accept_delete(params, **_):
        going.add(json.loads(params["body"])["EndpointName"])  # accepted; the endpoint stays, Deleting
        return SimpleNamespace(status_code=200, headers={}), {}

    def show_deleting(parsed, **_):
        if parsed.get("EndpointName") in going:
            parsed["EndpointStatus"] = "Deleting"

    events = b.client("sagemaker").meta.events
    events.register("before-call.sagemaker.DeleteEndpoint", accept_delete)
    events.register("after-call.sagemaker.DescribeEndpoint", show_deleting)
    report = b.cleanup(None)
    assert report.left == ()
    assert {("endpoint", "scones-endpoint"), ("model", model.model_name), ("training-job", job)} <= set(report.deleted)
    assert going == {"scones-endpoint"}


def test_the_monitor_step_follows_this_workspaces_capture_on_aws_as_locally(aws_staged):
    b = aws_staged
    assert b.step_statuses()["monitor"].state == "not_started"
    # another project's capture in the shared default bucket is not this workspace's to monitor
    b.objects.put_many({"data_capture/their-endpoint/AllTraffic/2026/11/27/09/00-00-000-x.jsonl": b"{}\n"})
    assert get_backend(load_settings()).step_statuses()["monitor"].state == "not_started"
    assert get_backend(load_settings()).monitored_endpoints() == []
    b._record_resource("capture", "scones-endpoint")  # what deploying scones-endpoint here records
    b.objects.put_many({"data_capture/scones-endpoint/AllTraffic/2026/11/27/09/00-00-000-x.jsonl": b"{}\n"})
    fresh = get_backend(load_settings())  # a fresh look (sources are cached 3 s)
    step = fresh.step_statuses()["monitor"]
    assert step.state in ("in_progress", "done") and "scones-endpoint" in step.detail
    assert fresh.monitored_endpoints() == ["scones-endpoint"]
