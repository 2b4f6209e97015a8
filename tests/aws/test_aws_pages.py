"""Every page and the workflow CLI on the AWS backend (moto): no exception, and a step that cannot
run yet (or an AWS that cannot be reached) says so in one sentence."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from backend import get_backend
from backend.api import ResourceNotFound
from backend.settings import load_settings
from tests.apptest import app_page
from tests.aws.conftest import SAGEMAKER_ROLE

PAGES = ["home", "stage", "train", "deploy", "workflow", "monitor", "cleanup"]


@pytest.fixture
def aws_pages(aws, small_archive):
    from ui.state import backend

    backend.clear()
    get_backend(load_settings()).stage_data(small_archive)
    yield
    backend.clear()


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_on_the_aws_backend(aws_pages, page):
    at = app_page(page).run()
    assert not at.exception, at.exception


def page_without_aws_config(page: str, tmp_path, monkeypatch, region: str | None):
    """The page run with no AWS credentials anywhere (no keys, empty config files, no instance metadata)."""
    from ui.state import backend

    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    (tmp_path / "empty").write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    if region:
        monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    backend.clear()
    try:
        return app_page(page).run()
    finally:
        backend.clear()


@pytest.mark.parametrize("page", PAGES)
def test_every_page_without_aws_credentials_says_so_in_one_sentence(aws_env, tmp_path, monkeypatch, page):
    """No credentials anywhere: an error, no traceback."""
    at = page_without_aws_config(page, tmp_path, monkeypatch, "us-east-1")
    assert not at.exception, at.exception
    assert any("No AWS credentials were found" in e.value for e in at.error)
    messages = [e.value for e in at.error]
    assert len(messages) == len(set(messages)), messages  # the same sentence once, not once per read


def test_workflow_before_any_endpoint_says_what_to_do_first(aws):
    b = get_backend(load_settings())
    with pytest.raises(ResourceNotFound, match="No endpoint is InService: deploy a model first"):
        b.deploy_workflow()
    assert b.list_workflow_executions() == [] and b.list_state_machines() == []
    assert b.validate_definition('{"StartAt": "A", "States": {"A": {"Type": "Succeed"}}}') == []


def test_cli_workflow_on_an_unreachable_aws_exits_2_with_one_sentence(aws_env):
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    r = subprocess.run([sys.executable, "-m", "backend.cli", "workflow", "deploy", "--backend", "aws"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "could not be reached" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "testing-secret-value" not in r.stderr


def test_an_aws_that_accepts_but_never_answers_fails_in_bounded_time(aws_env, monkeypatch):
    # A stalled network (a proxy that accepts and says nothing): botocore waits 60 s per attempt by
    # default, five attempts. The backend's own timeouts bound it and the error says what happened.
    import socket
    import threading
    import time

    import backend.aws.backend as aws_backend
    from backend.api import SconesError

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []
    threading.Thread(target=lambda: [held.append(listener.accept()) for _ in range(16)], daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setattr(aws_backend, "READ_TIMEOUT", 0.3)
    assert aws_backend.client_config("sts").read_timeout == 0.3
    assert aws_backend.client_config("sagemaker-runtime").read_timeout == aws_backend.RUNTIME_READ_TIMEOUT >= 60
    b = get_backend(load_settings())
    started = time.monotonic()
    with pytest.raises(SconesError, match="AWS did not answer in time for .*; check the network"):
        b.list_state_machines()
    assert time.monotonic() - started < 20  # five short attempts and their backoff, not five minutes
    listener.close()


def test_cleanup_page_leaves_another_workspaces_resources_unticked(aws_pages, tmp_path, monkeypatch):
    from ui.state import backend

    monkeypatch.setenv("SCONES_SAGEMAKER_ROLE_ARN", SAGEMAKER_ROLE)
    creator = get_backend(load_settings())
    job = creator.create_training_job(creator.default_training_hyperparameters("sagemaker"))
    creator.deploy(creator.create_model(job).model_name, "scones-endpoint")
    creator_home = os.environ["SCONES_HOME"]
    monkeypatch.setenv("SCONES_HOME", str(tmp_path / "other-workspace"))
    backend.clear()
    at = app_page("cleanup").run()
    assert not at.exception, at.exception
    assert any("not created by this workspace" in w.value and "start unticked" in w.value for w in at.warning)
    # endpoint, config, model and training job are the creator's: none starts ticked, so nothing can go
    assert at.button(key="cleanup_go").label == "Delete 0 selected" and at.button(key="cleanup_go").disabled

    monkeypatch.setenv("SCONES_HOME", creator_home)  # the creator's own workspace ticks them all
    backend.clear()
    at = app_page("cleanup").run()
    assert not at.exception and not any("not created by this workspace" in w.value for w in at.warning)
    assert at.button(key="cleanup_go").label == "Delete 4 selected"


def test_the_train_page_on_aws_starts_from_the_notebooks_values_as_the_cli_does(aws_pages):
    at = app_page("train").run()
    assert not at.exception
    assert (at.session_state["hp_num_layers"], at.session_state["hp_epochs"]) == ("152", "30")


def test_the_train_page_on_aws_has_no_local_only_field(aws_pages):
    at = app_page("train").run()
    assert not at.exception, at.exception
    keys = {w.key for w in at.text_input}
    assert "hp_epochs" in keys and "hp_cutmix" not in keys and "hp_test_time_flip" not in keys and "hp_int8_serving" not in keys
    assert any("as a SageMaker training job" in c.value for c in at.caption)


def test_the_train_page_on_aws_knows_the_model_made_from_a_job(aws_pages, monkeypatch):
    monkeypatch.setenv("SCONES_SAGEMAKER_ROLE_ARN", SAGEMAKER_ROLE)
    b = get_backend(load_settings())
    job = b.create_training_job(b.default_training_hyperparameters("sagemaker"))
    model = b.create_model(job)
    assert model.model_name != job  # AWS names it <job>-model
    at = app_page("train").run()
    assert not at.exception, at.exception
    assert any(f"Model `{model.model_name}` exists" in c.value for c in at.caption)
    assert "train_create_model" not in {bt.key for bt in at.button}
    assert any("runs only in SageMaker's container" in c.value for c in at.caption)


def test_the_train_page_without_a_region_says_so_once(aws_env, tmp_path, monkeypatch):
    at = page_without_aws_config("train", tmp_path, monkeypatch, None)
    assert not at.exception
    assert [e.value.split(":")[0] for e in at.error] == ["No AWS region is set"]  # once, not once per read
