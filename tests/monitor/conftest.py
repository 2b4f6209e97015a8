"""Fixtures for monitoring: the local backend with the monitoring methods attached (as the
integration attaches them), hand-made capture files in the real format, and one real workspace
(the staged mirror, a one-epoch model, an InService endpoint with capture 100%, the workflow
deployed) shared by the tests that need an endpoint that really writes capture.

Every endpoint process is stopped at teardown.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from backend.local.backend import LocalBackend
from backend.local.jobs import process_alive
from backend.monitoring import MonitoringBackendMixin
from backend.settings import load_settings

# LocalBackend inherits the mixin once integrated; until then the tests add it themselves.
_BASES = (LocalBackend,) if issubclass(LocalBackend, MonitoringBackendMixin) else (MonitoringBackendMixin, LocalBackend)


class MonitorBackend(*_BASES):
    """LocalBackend as the integration makes it: the monitoring methods, `self.monitoring`."""


def monitor_backend(home: Path) -> MonitorBackend:
    return MonitorBackend(replace(load_settings({}), home=home))


@pytest.fixture
def mb(home) -> MonitorBackend:
    """An empty workspace (no endpoint): capture written by hand shows as a deleted endpoint's."""
    return monitor_backend(home)


def train_and_deploy(b, endpoint: str = "scones-endpoint"):
    b.stage_data("sample")
    name = b.create_training_job({**b.default_training_hyperparameters(), "epochs": "1", "mini_batch_size": "128"})
    deadline = time.monotonic() + 240
    while b.describe_training_job(name).status == "InProgress" and time.monotonic() < deadline:
        time.sleep(0.3)
    job = b.describe_training_job(name)
    assert job.status == "Completed", job.failure_reason
    model = b.create_model(name)
    b.deploy(model.model_name, endpoint, capture_percent=100)
    assert b.wait_endpoint(endpoint, timeout=60).status == "InService"
    return model


def stop_all(b) -> None:
    if "workflow" in vars(b):
        b.workflow.close()
    for e in b.list_endpoints():
        b.delete_endpoint(e.endpoint_name)
    for row in b.db.query("SELECT pid, pid_start, pending_pid, pending_pid_start FROM endpoints"):
        for pid, start in ((row["pid"], row["pid_start"]), (row["pending_pid"], row["pending_pid_start"])):
            if process_alive(pid, start):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="package")
def wf_home(tmp_path_factory):
    return tmp_path_factory.mktemp("monitor") / "workspace"


@pytest.fixture(scope="package")
def wf(wf_home):
    """The real workspace's backend (with monitoring), the workflow deployed at threshold 0.5."""
    b = monitor_backend(wf_home)
    try:
        train_and_deploy(b)
        b.deploy_workflow(threshold=0.5)
        yield b
    finally:
        stop_all(b)
