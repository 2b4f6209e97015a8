"""A real workspace for tests that need the whole chain: staged mirror, a one-epoch model, an
InService endpoint with capture; and the teardown that leaves no process behind."""
from __future__ import annotations

import os
import signal
import time

from backend.local.jobs import process_alive


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


def workflow_of_its_own(b, name: str, endpoint: str | None = None, threshold: float | None = None):
    """The workflow from asl/ as another state machine with functions of its own (`<name>-serializeImageData`,
    ...): functions are shared by name, as Lambda functions are, so deploying the seed workflow under a second
    name would retarget the first one. Imported, with the seed's handler files."""
    from backend.workflow_defs import PLACEHOLDERS, SEED_HANDLERS, WORKFLOW_FILE, fill_placeholders

    text = fill_placeholders(WORKFLOW_FILE.read_text(), {k: f"{name}-{fn}" for k, fn in PLACEHOLDERS.items()})
    mapping = {f"{name}-{fn}": stem for fn, stem in SEED_HANDLERS.items()}
    return b.import_workflow(text, mapping, name=name, endpoint_name=endpoint, threshold=threshold)
