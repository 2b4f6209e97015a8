"""One real workspace for the workflow tests: the staged mirror, a model trained for one epoch, an
InService local endpoint and the deployed workflow. Everything is stopped at teardown."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import pytest

from backend import get_backend
from backend.local.jobs import process_alive
from backend.settings import load_settings

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


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
    return tmp_path_factory.mktemp("workflow") / "workspace"


@pytest.fixture(scope="package")
def wf(wf_home):
    """The workspace's backend with the workflow deployed at threshold 0.5."""
    b = get_backend(replace(load_settings({}), home=wf_home))
    try:
        train_and_deploy(b)
        b.deploy_workflow(threshold=0.5)
        yield b
    finally:
        stop_all(b)
