"""One real workspace for the workflow tests: the staged mirror, a model trained for one epoch, an
InService local endpoint and the deployed workflow. Everything is stopped at teardown."""
from __future__ import annotations

from dataclasses import replace

import pytest

from backend import get_backend
from backend.settings import load_settings
from tests.workspaces import seed_trained_workspace, stop_all, train_and_deploy


@pytest.fixture(scope="package")
def wf_home(tmp_path_factory):
    return tmp_path_factory.mktemp("workflow") / "workspace"


@pytest.fixture(scope="package")
def wf(wf_home):
    """The workspace's backend with the workflow deployed at threshold 0.5."""
    seed_trained_workspace(wf_home)
    b = get_backend(replace(load_settings({}), home=wf_home))
    try:
        train_and_deploy(b)
        b.deploy_workflow(threshold=0.5)
        yield b
    finally:
        stop_all(b)
