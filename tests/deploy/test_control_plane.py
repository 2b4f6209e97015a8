"""The control plane as SageMaker's: endpoint configs, endpoints, statuses, named errors."""
from __future__ import annotations

import os

import pytest

from backend.api import (
    VARIANT_NAME, CaptureConfig, Endpoint, EndpointConfig, ResourceInUse, ResourceNotFound, ValidationError,
)
from backend.local.jobs import process_alive
from backend.local.serving.service import DeploymentService, EndpointUnavailable
from tests.deploy.images import png_bytes


def pid_of(service: DeploymentService, name: str) -> tuple[int, str]:
    row = service.db.query_one("SELECT pid, pid_start FROM endpoints WHERE endpoint_name=?", (name,))
    return row["pid"], row["pid_start"]


def test_endpoint_config_records_the_variant_and_data_capture(service):
    capture = CaptureConfig(enabled=True, sampling_percent=40, capture_input=True, capture_output=False)
    config = service.create_endpoint_config("cfg-1", "model-a", "ml.m5.xlarge", capture)
    assert isinstance(config, EndpointConfig)
    assert (config.config_name, config.model_name, config.instance_type, config.variant_name) == \
        ("cfg-1", "model-a", "ml.m5.xlarge", VARIANT_NAME)
    assert config.capture == CaptureConfig(True, 40, "s3://scones-unlimited/data_capture", True, False)
    assert service.describe_endpoint_config("cfg-1") == config
    plain = service.create_endpoint_config("cfg-2", "model-a")
    assert plain.capture.enabled is False and plain.instance_type == "ml.m5.xlarge"
    assert {c.config_name for c in service.list_endpoint_configs()} == {"cfg-1", "cfg-2"}
    service.delete_endpoint_config("cfg-2")
    with pytest.raises(ResourceNotFound, match="cfg-2"):
        service.describe_endpoint_config("cfg-2")


@pytest.mark.parametrize("kwargs, error, words", [
    ({"config_name": "bad_name"}, ValidationError, "letters, digits and hyphens"),
    ({"config_name": "-x"}, ValidationError, "not valid"),
    ({"config_name": "x" * 64}, ValidationError, "1 to 63"),
    ({"instance_type": "m5.xlarge"}, ValidationError, "Instance type"),
    ({"capture": CaptureConfig(sampling_percent=101)}, ValidationError, "0 to 100"),
    ({"capture": CaptureConfig(sampling_percent=-1)}, ValidationError, "0 to 100"),
    ({"capture": CaptureConfig(sampling_percent=12.5)}, ValidationError, "whole number"),
    ({"capture": CaptureConfig(capture_input=False, capture_output=False)}, ValidationError, "Input, Output"),
    ({"capture": CaptureConfig(destination="http://example.com/x")}, ValidationError, "not an S3 URI"),
    ({"capture": CaptureConfig(destination="s3://Bad_Bucket/x")}, ValidationError, "Bucket name"),
    ({"capture": CaptureConfig(destination="s3://scones-unlimited/../up")}, ValidationError, "'..'"),
    ({"capture": CaptureConfig(destination="s3://other-bucket/cap")}, ValidationError,
     "Capture goes to the workspace bucket locally: s3://other-bucket/cap is in bucket 'other-bucket'; use "
     "s3://scones-unlimited/<prefix>"),
    ({"model_name": "no-such-model"}, ResourceNotFound, "no-such-model"),
])
def test_endpoint_config_refuses_bad_input_with_a_named_error(service, kwargs, error, words):
    args = {"config_name": "cfg", "model_name": "model-a", **kwargs}
    with pytest.raises(error, match=words):
        service.create_endpoint_config(**args)
    assert service.list_endpoint_configs() == []


def test_endpoint_config_names_are_unique(service):
    service.create_endpoint_config("cfg", "model-a")
    with pytest.raises(ResourceInUse, match="already existing endpoint configuration"):
        service.create_endpoint_config("cfg", "model-a")


def test_models_do_not_cross_backends_and_need_their_artifact(deploy_backend, service, artifact_a):
    deploy_backend.fake_models.add("aws-model", artifact_a, backend="aws")
    with pytest.raises(ValidationError, match="do not cross backends"):
        service.create_endpoint_config("cfg", "aws-model")
    model = deploy_backend.fake_models.add("gone", artifact_a)
    deploy_backend.store.delete("scones-unlimited", model.model_artifact.split("/", 3)[3])
    with pytest.raises(ValidationError, match="artifact of model gone .* is missing"):
        service.create_endpoint_config("cfg", "gone")


def test_create_returns_at_once_then_creating_becomes_in_service(service):
    service.create_endpoint_config("cfg", "model-a", capture=CaptureConfig(sampling_percent=100))
    assert service.create_endpoint("ep", "cfg") == "ep"
    first = service.describe_endpoint("ep")
    assert first.status == "Creating" and first.url == ""  # it did not wait for the process to come up
    endpoint = service.wait_endpoint("ep", timeout=30)
    assert endpoint.status == "InService", endpoint.failure_reason
    assert isinstance(endpoint, Endpoint)
    assert (endpoint.endpoint_name, endpoint.config_name, endpoint.model_name) == ("ep", "cfg", "model-a")
    assert endpoint.url.startswith("http://127.0.0.1:") and endpoint.backend == "local"
    assert endpoint.capture == service.describe_endpoint_config("cfg").capture
    assert [e.endpoint_name for e in service.list_endpoints()] == ["ep"]
    pid, _ = pid_of(service, "ep")
    assert os.getsid(pid) == pid  # its own session: it outlives the dashboard that started it
    assert service.invoke_endpoint("ep", _png()).classes == ("bicycle", "motorcycle")


def test_create_refuses_duplicates_unknown_configs_and_bad_names(service):
    service.create_endpoint_config("cfg", "model-a")
    with pytest.raises(ResourceNotFound, match="endpoint configuration 'nope'"):
        service.create_endpoint("ep", "nope")
    with pytest.raises(ValidationError, match="Endpoint name 'bad name'"):
        service.create_endpoint("bad name", "cfg")
    service.create_endpoint("ep", "cfg")
    with pytest.raises(ResourceInUse, match="already existing endpoint 'ep'"):
        service.create_endpoint("ep", "cfg")
    with pytest.raises(ValidationError, match="Cannot update endpoint ep while it is Creating"):
        service.update_endpoint("ep", "cfg")
    with pytest.raises(EndpointUnavailable, match="ep is Creating: wait until it is InService"):
        service.invoke_endpoint("ep", _png())


def test_delete_stops_the_process_and_forgets_the_endpoint(service):
    service.create_endpoint_config("cfg", "model-a")
    service.create_endpoint("ep", "cfg")
    assert service.wait_endpoint("ep", timeout=30).status == "InService"
    pid, start = pid_of(service, "ep")
    with pytest.raises(ResourceInUse, match="Endpoint ep uses endpoint configuration cfg"):
        service.delete_endpoint_config("cfg")
    service.delete_endpoint("ep")
    assert not process_alive(pid, start)
    for call in (service.describe_endpoint, service.delete_endpoint, lambda n: service.invoke_endpoint(n, _png())):
        with pytest.raises(ResourceNotFound, match="Could not find endpoint 'ep'"):
            call("ep")
    assert service.list_endpoints() == []
    service.delete_endpoint_config("cfg")  # free now


def test_stop_then_start_again_from_its_config(service):
    endpoint = service.deploy("model-a", "ep", 0)
    assert service.wait_endpoint(endpoint.endpoint_name, timeout=30).status == "InService"
    pid, start = pid_of(service, "ep")
    stopped = service.stop_endpoint("ep")
    assert stopped.status == "OutOfService" and stopped.url == ""
    assert not process_alive(pid, start)
    with pytest.raises(EndpointUnavailable, match="OutOfService: start it again"):
        service.invoke_endpoint("ep", _png())
    assert service.start_endpoint("ep").status == "Creating"
    again = service.wait_endpoint("ep", timeout=30)
    assert again.status == "InService" and again.config_name == endpoint.config_name
    assert pid_of(service, "ep")[0] != pid
    assert len(service.invoke_endpoint("ep", _png()).probabilities) == 2


def test_deploy_creates_then_updates_and_keeps_each_config(deploy_backend, service, artifact_b):
    deploy_backend.fake_models.add("model-b", artifact_b)
    first = service.deploy("model-a", "ep", 100)
    assert first.status == "Creating" and first.model_name == "model-a"
    assert service.wait_endpoint("ep", timeout=30).status == "InService"
    assert service.invoke_endpoint("ep", _png()).classes == ("bicycle", "motorcycle")
    second = service.deploy("model-b", "ep", 50)
    assert second.status == "Updating" and second.config_name == first.config_name  # old config until the switch
    with pytest.raises(ResourceInUse, match="ep is Updating: wait until it is InService"):
        service.deploy("model-a", "ep", 10)
    done = service.wait_endpoint("ep", timeout=30)
    assert done.status == "InService", done.failure_reason
    assert done.model_name == "model-b" and done.capture.sampling_percent == 50
    assert done.config_name != first.config_name
    assert {c.config_name for c in service.list_endpoint_configs()} == {first.config_name, done.config_name}
    assert service.invoke_endpoint("ep", _png()).classes == ("motorcycle", "bicycle")


def test_deploy_step_status_follows_the_endpoints(service):
    assert service.step_status().state == "not_started"
    service.deploy("model-a", "ep", 100)
    assert service.step_status().state == "in_progress"
    service.wait_endpoint("ep", timeout=30)
    status = service.step_status()
    assert (status.state, status.detail) == ("done", "Endpoint ep is InService (model-a).")


def _png() -> bytes:
    return png_bytes()
