"""Training on SageMaker through the AWS backend, against moto (which completes jobs at once)."""
from __future__ import annotations

import time

import boto3
import pytest
from botocore.stub import Stubber

from backend import get_backend
from backend.api import CredentialsError, ResourceInUse, ResourceLimitExceeded, ResourceNotFound, ValidationError
from backend.aws.training import image_uri, parse_epoch_lines
from backend.settings import load_settings

ROLE = "arn:aws:iam::123456789012:role/scones-sagemaker"


@pytest.fixture
def staged(aws, monkeypatch):
    monkeypatch.setenv("SCONES_SAGEMAKER_ROLE_ARN", ROLE)
    b = get_backend(load_settings())
    b.stage_data("sample")
    return b


def put_algorithm_logs(job_name: str, lines: list[str]) -> None:
    logs = boto3.client("logs", region_name="us-east-1")
    group = "/aws/sagemaker/TrainingJobs"
    try:
        logs.create_log_group(logGroupName=group)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    stream = f"{job_name}/algo-1-1700000000"
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    logs.put_log_events(logGroupName=group, logStreamName=stream,
                        logEvents=[{"timestamp": int(time.time() * 1000) + i, "message": m} for i, m in enumerate(lines)])


def test_create_describe_list_and_model(staged):
    b = staged
    hps = b.default_training_hyperparameters("sagemaker")
    assert hps["num_layers"] == "152" and hps["num_training_samples"] == "1000" and hps["num_classes"] == "2"
    name = b.create_training_job({**hps, "epochs": "2"})
    d = boto3.client("sagemaker", region_name="us-east-1").describe_training_job(TrainingJobName=name)
    assert d["AlgorithmSpecification"]["TrainingImage"] == "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"
    channels = {c["ChannelName"]: c for c in d["InputDataConfig"]}
    bucket = b.objects.bucket
    assert {k: v["DataSource"]["S3DataSource"]["S3Uri"] for k, v in channels.items()} == {
        "train": f"s3://{bucket}/train/", "validation": f"s3://{bucket}/test/",
        "train_lst": f"s3://{bucket}/train.lst", "validation_lst": f"s3://{bucket}/test.lst"}
    assert all(c["ContentType"] == "application/x-image" for c in channels.values())
    assert d["ResourceConfig"]["InstanceType"] == "ml.p3.2xlarge"
    assert d["StoppingCondition"]["MaxRuntimeInSeconds"] > 0
    assert d["HyperParameters"]["epochs"] == "2" and d["HyperParameters"]["image_shape"] == "3,32,32"

    put_algorithm_logs(name, ["Epoch[0] Train-accuracy=0.612500", "Epoch[0] Validation-accuracy=0.580000",
                              "Epoch[1] Train-accuracy=0.701", "Epoch[1] Validation-accuracy=0.655", "other line"])
    job = b.describe_training_job(name)
    assert job.status == "Completed" and job.backend == "aws"
    assert job.final_metrics == {"train:accuracy": 0.701, "validation:accuracy": 0.655}
    assert "train:loss" not in job.final_metrics  # the algorithm logs no loss
    assert job.model_artifact == f"s3://{bucket}/output/{name}/output/model.tar.gz"
    assert [j.job_name for j in b.list_training_jobs()] == [name]
    assert "Epoch[1] Validation-accuracy=0.655" in b.training_log(name)
    assert b.step_statuses()["train"].state == "done"

    model = b.create_model(name)
    assert model.backend == "aws" and model.job_name == name and model.classes == ("bicycle", "motorcycle")
    assert [m.model_name for m in b.list_models()] == [model.model_name]
    b.objects.put_many({f"output/{name}/output/model.tar.gz": b"artifact"})  # moto's jobs write none
    with pytest.raises(ResourceInUse, match=f"Model {model.model_name} was made from training job {name}: delete "
                                            "the model first"):
        b.delete_training_job(name)  # as locally: the model's artifact stays
    assert b.get_object(f"output/{name}/output/model.tar.gz") == b"artifact"


def test_validation_as_the_local_backend(staged):
    b = staged
    hps = b.default_training_hyperparameters("sagemaker")
    with pytest.raises(ValidationError, match="num_training_samples=999 does not match the train channel"):
        b.create_training_job({**hps, "num_training_samples": "999"})
    with pytest.raises(ValidationError, match="optimizer='adamw' is not valid"):
        b.create_training_job({**hps, "optimizer": "adamw"})
    with pytest.raises(ResourceNotFound, match="Could not find training job"):
        b.describe_training_job("nope")
    assert b.list_training_jobs() == []
    # the pretrained weights are SageMaker's: refused locally only, and never with the local reason here
    name = b.create_training_job({**hps, "use_pretrained_model": "1"})
    d = boto3.client("sagemaker", region_name="us-east-1").describe_training_job(TrainingJobName=name)
    assert d["HyperParameters"]["use_pretrained_model"] == "1"


def test_the_local_only_cutmix_option_never_reaches_sagemaker(staged):
    b = staged
    assert not {"cutmix", "test_time_flip", "int8_serving"} & {s["name"] for s in b.training_hyperparameter_specs()}
    assert not {"cutmix", "test_time_flip", "int8_serving"} & set(b.default_training_hyperparameters("local"))  # less its local options
    hps = b.default_training_hyperparameters("sagemaker")
    with pytest.raises(ValidationError, match="cutmix is a local training option that SageMaker's image-classification "
                                              "algorithm does not have: remove it"):
        b.create_training_job({**hps, "cutmix": "0.5"})
    assert b.list_training_jobs() == []  # nothing was created
    name = b.create_training_job({**hps, "cutmix": "0"})  # off: accepted, and not sent
    d = boto3.client("sagemaker", region_name="us-east-1").describe_training_job(TrainingJobName=name)
    assert "cutmix" not in d["HyperParameters"] and d["HyperParameters"]["num_layers"] == "152"


def test_guardrails_role_cpu_instance_and_quota(staged, monkeypatch):
    hps = staged.default_training_hyperparameters("sagemaker")
    monkeypatch.setenv("SCONES_TRAINING_INSTANCE_TYPE", "ml.m5.xlarge")
    with pytest.raises(ValidationError, match="GPU instances only"):
        get_backend(load_settings()).create_training_job(hps)
    monkeypatch.delenv("SCONES_TRAINING_INSTANCE_TYPE")
    monkeypatch.delenv("SCONES_SAGEMAKER_ROLE_ARN")
    with pytest.raises(CredentialsError, match="SCONES_SAGEMAKER_ROLE_ARN"):
        get_backend(load_settings()).create_training_job(hps)
    monkeypatch.setenv("SCONES_SAGEMAKER_ROLE_ARN", ROLE)
    b = get_backend(load_settings())
    sm = b.client("sagemaker")
    b.client = lambda service: sm if service == "sagemaker" else type(b).client(b, service)
    with Stubber(sm) as stub:
        stub.add_client_error("describe_training_job", service_error_code="ValidationException",
                              service_message="Requested resource not found.")  # the name is free
        stub.add_client_error("create_training_job", service_error_code="ResourceLimitExceeded",
                              service_message="The account-level service limit 'ml.p3.2xlarge for training job usage' is 0")
        with pytest.raises(ResourceLimitExceeded, match="quota for ml.p3.2xlarge training.*Service Quotas"):
            b.create_training_job(hps)
    assert not [o for o in b.list_objects("output/") if o.key.endswith("scones-classes.json")]  # refused: none kept


def test_stop_calls_stop_training_job(staged):
    b = staged
    name = b.create_training_job(b.default_training_hyperparameters("sagemaker"))
    sm = b.client("sagemaker")
    real_describe = sm.describe_training_job(TrainingJobName=name)
    b.client = lambda service: sm if service == "sagemaker" else type(b).client(b, service)
    with Stubber(sm) as stub:
        stub.add_response("stop_training_job", {}, {"TrainingJobName": name})
        stub.add_response("describe_training_job", {**real_describe, "TrainingJobStatus": "Stopping"})
        job = b.stop_training_job(name)
        stub.assert_no_pending_responses()
    assert job.status == "Stopping"


def test_image_uri_table_and_epoch_parsing():
    assert image_uri("eu-west-1") == "685385470294.dkr.ecr.eu-west-1.amazonaws.com/image-classification:1"
    assert image_uri("cn-north-1") == "390948362332.dkr.ecr.cn-north-1.amazonaws.com.cn/image-classification:1"
    assert image_uri("ap-east-1").startswith("286214385809.dkr.ecr.ap-east-1.amazonaws.com/")
    with pytest.raises(ValidationError, match="not listed for region mars-1"):
        image_uri("mars-1")
    assert parse_epoch_lines(["[11/27/2026 08:00:00 INFO 1] Epoch[2] Validation-accuracy=0.5",
                              "Epoch[2] Train-accuracy=0.75"]) == ({"epoch": 3.0, "validation:accuracy": 0.5,
                                                                    "train:accuracy": 0.75},)


def test_a_log_that_may_not_be_read_leaves_the_job_listed_without_metrics(staged):
    from botocore.exceptions import ClientError

    from backend.api import AccessDenied

    b = staged
    name = b.create_training_job({**b.default_training_hyperparameters("sagemaker"), "epochs": "2"})
    put_algorithm_logs(name, ["Epoch[0] Train-accuracy=0.6", "Epoch[0] Validation-accuracy=0.5"])

    def refuse(**_):
        raise ClientError({"Error": {"Code": "AccessDeniedException",
                                     "Message": "not authorized to perform: logs:FilterLogEvents"}}, "FilterLogEvents")
    b.client("logs").meta.events.register("before-call.cloudwatch-logs.FilterLogEvents", refuse)
    job = b.describe_training_job(name)
    assert job.status == "Completed" and job.epochs == ()
    assert [j.job_name for j in b.list_training_jobs()] == [name]
    assert b.step_statuses()["train"].state == "done"
    with pytest.raises(AccessDenied, match="logs:FilterLogEvents"):
        b.training_log(name)


def test_a_throttled_log_read_keeps_the_epochs_an_earlier_read_found(staged):
    """CloudWatch Logs throttles FilterLogEvents: a look that is refused must not take the metrics away."""
    from botocore.exceptions import ClientError

    b = staged
    name = b.create_training_job({**b.default_training_hyperparameters("sagemaker"), "epochs": "2"})
    put_algorithm_logs(name, ["Epoch[0] Train-accuracy=0.6", "Epoch[0] Validation-accuracy=0.5"])
    assert b.describe_training_job(name).final_metrics == {"train:accuracy": 0.6, "validation:accuracy": 0.5}

    def throttle(**_):
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "FilterLogEvents")
    b.client("logs").meta.events.register("before-call.cloudwatch-logs.FilterLogEvents", throttle)
    assert b.describe_training_job(name).final_metrics == {"train:accuracy": 0.6, "validation:accuracy": 0.5}


def test_a_models_classes_are_the_ones_its_job_learned_not_the_latest_staging(aws_staged):
    """Restaging in another order (or other classes) must not relabel a model trained before."""
    b = aws_staged
    learned = b.latest_stage_report().classes
    name = b.create_training_job(b.default_training_hyperparameters("sagemaker"))
    model = b.create_model(name)
    assert model.classes == tuple(learned)
    b.stage_data(b.latest_stage_report().source or "sample", list(reversed(learned)))
    assert tuple(b.latest_stage_report().classes) == tuple(reversed(learned))
    again = get_backend(load_settings())  # a fresh backend: nothing remembered in memory
    assert again.describe_model(model.model_name).classes == tuple(learned)
    assert [m.classes for m in again.list_models()] == [tuple(learned)]
    # a second job under that name is refused before anything is written (its kept classes stay)
    with pytest.raises(ResourceInUse, match=f"A training job named {name} already exists"):
        again.create_training_job(again.default_training_hyperparameters("sagemaker"), job_name=name)
    assert get_backend(load_settings()).describe_model(model.model_name).classes == tuple(learned)
    # a job started before the classes were kept beside its output falls back to the staged ones
    again.objects.delete_keys([f"output/{name}/scones-classes.json"])
    assert get_backend(load_settings()).describe_model(model.model_name).classes == tuple(reversed(learned))


def test_the_log_of_a_job_not_there_is_resource_not_found_as_locally(staged):
    """A log read for a name that is no training job names the problem; a job with no log yet reads empty."""
    b = staged
    with pytest.raises(ResourceNotFound, match="nosuch"):
        b.training_log("nosuch")
    name = b.create_training_job({**b.default_training_hyperparameters("sagemaker"), "epochs": "2"})
    assert b.training_log(name) == ""
