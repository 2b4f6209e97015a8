"""A real workspace for tests that need the whole chain: staged mirror, a one-epoch model, an
InService endpoint with capture; and the teardown that leaves no process behind."""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import sqlite3
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from backend.local.jobs import process_alive

_TRAINED: Path | None = None  # the session's trained workspace, made once, copied into each new one


def _train(b) -> None:
    b.stage_data("sample")
    name = b.create_training_job({**b.default_training_hyperparameters(), "epochs": "1", "mini_batch_size": "128"})
    deadline = time.monotonic() + 240
    while b.describe_training_job(name).status == "InProgress" and time.monotonic() < deadline:
        time.sleep(0.3)
    job = b.describe_training_job(name)
    assert job.status == "Completed", job.failure_reason
    b.create_model(name)


def seed_trained_workspace(home: Path) -> None:
    """Make `home` (not created yet) a workspace with the staged sample and a model of a completed
    one-epoch training job. The first call of the session runs that job for real; later calls copy
    its workspace (the database through SQLite's backup, the bucket folders as files), which holds no
    absolute path and no process, saving a training run per fixture."""
    global _TRAINED
    from backend.local.backend import LocalBackend
    from backend.settings import load_settings

    if _TRAINED is None:
        template = Path(tempfile.mkdtemp(prefix="scones-trained-")) / "workspace"
        atexit.register(shutil.rmtree, template.parent, True)
        _train(LocalBackend(replace(load_settings({}), home=template)))
        _TRAINED = template
    assert not home.exists(), f"{home} is not a new workspace"
    shutil.copytree(_TRAINED, home, ignore=shutil.ignore_patterns("scones.db*"))
    source, target = sqlite3.connect(_TRAINED / "scones.db"), sqlite3.connect(home / "scones.db")
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def train_and_deploy(b, endpoint: str = "scones-endpoint"):
    """Deploy a one-epoch model in `b`'s workspace, training it first unless the workspace has one
    (seeded by `seed_trained_workspace`)."""
    if not b.list_models():
        _train(b)
    model = b.list_models()[0]
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
