"""Fixtures for monitoring: the local backend with the monitoring methods attached (as the
integration attaches them), hand-made capture files in the real format, and one real workspace
(the staged mirror, a one-epoch model, an InService endpoint with capture 100%, the workflow
deployed) shared by the tests that need an endpoint that really writes capture.

Every endpoint process is stopped at teardown.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from backend.local.backend import LocalBackend
from backend.settings import load_settings
from tests.workspaces import seed_trained_workspace, stop_all, train_and_deploy

MonitorBackend = LocalBackend  # it carries the monitoring methods (MonitoringBackendMixin)


def monitor_backend(home: Path) -> MonitorBackend:
    return MonitorBackend(replace(load_settings({}), home=home))


@pytest.fixture
def mb(home) -> MonitorBackend:
    """An empty workspace (no endpoint): capture written by hand shows as a deleted endpoint's."""
    return monitor_backend(home)


@pytest.fixture(scope="package")
def wf_home(tmp_path_factory):
    return tmp_path_factory.mktemp("monitor") / "workspace"


@pytest.fixture(scope="package")
def wf(wf_home):
    """The real workspace's backend (with monitoring), the workflow deployed at threshold 0.5."""
    seed_trained_workspace(wf_home)
    b = monitor_backend(wf_home)
    try:
        train_and_deploy(b)
        b.deploy_workflow(threshold=0.5)
        yield b
    finally:
        stop_all(b)
