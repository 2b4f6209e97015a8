"""Home's and `scones status`'s train and deploy steps never hide a failure behind 'done' (browser audit)."""
from __future__ import annotations

from types import SimpleNamespace

from backend.api import stopped_or_failed


def job(name: str, status: str, reason: str = "") -> SimpleNamespace:
    return SimpleNamespace(job_name=name, status=status, failure_reason=reason)


def test_a_newer_job_that_failed_leaves_the_step_done_when_a_model_exists_and_names_the_failure():
    earlier = job("j1", "Completed")
    failed = job("j2", "Failed", "The worker process exited unexpectedly (signal 9).")
    step = stopped_or_failed(failed, lambda: earlier)
    assert step.state == "done"
    assert step.detail == "j1 completed; the newer job j2 failed: The worker process exited unexpectedly (signal 9)."
    assert stopped_or_failed(job("j3", "Stopped"), lambda: earlier).detail == "j1 completed; the newer job j3 was stopped."
    alone = stopped_or_failed(failed, lambda: None)
    assert (alone.state, alone.detail) == ("failed", "j2 failed: The worker process exited unexpectedly (signal 9).")


def endpoint(name: str, status: str, model: str = "m", reason: str = "") -> SimpleNamespace:
    return SimpleNamespace(endpoint_name=name, status=status, model_name=model, failure_reason=reason, created="")


def test_a_deploy_step_done_or_busy_still_names_endpoints_that_failed():
    from backend.aws.deployment import AwsDeploymentMixin
    from backend.local.serving.service import DeploymentService

    endpoints = [endpoint("scones-endpoint", "InService", "model-a"), endpoint("cli-endpoint", "Failed", reason="killed")]
    local = DeploymentService.step_status(SimpleNamespace(list_endpoints=lambda: endpoints))
    assert (local.state, local.detail) == ("done", "Endpoint scones-endpoint is InService (model-a). cli-endpoint is Failed.")
    aws = AwsDeploymentMixin.deployment_step_status(SimpleNamespace(list_endpoints=lambda: endpoints))
    assert (aws.state, aws.detail) == ("done", "scones-endpoint is InService on SageMaker. cli-endpoint is Failed.")
    more = [endpoint("new", "Creating"), endpoint("a", "Failed"), endpoint("b", "Failed")]
    busy = DeploymentService.step_status(SimpleNamespace(list_endpoints=lambda: more))
    assert (busy.state, busy.detail) == ("in_progress", "Endpoint new is Creating. 2 endpoints are Failed: a, b.")
    only = DeploymentService.step_status(SimpleNamespace(list_endpoints=lambda: [endpoint("scones-endpoint", "InService")]))
    assert only.detail == "Endpoint scones-endpoint is InService (m)."
