"""The AWS guardrails on the pages (AppTest, AWS backend under moto): the roles shown before they are
created, a confirmation naming the price before Train or Deploy starts anything, and endpoints left
idle named on the home page. On the local backend none of them is in the way."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3
import pytest

from backend.aws.costs import AwsCostMixin
from backend.aws.iam import ROLE_NAMES
from tests.apptest import app_page
from tests.aws import conftest as aws_conftest

pytestmark = pytest.mark.aws
aws_env, aws = aws_conftest.aws_env, aws_conftest.aws  # the moto fixtures of tests/aws (its conftest stops there)
ROLE = aws_conftest.SAGEMAKER_ROLE


@pytest.fixture(autouse=True)
def fresh_backend_cache(home):
    from ui.state import backend

    backend.clear()
    yield
    backend.clear()


aws_staged = aws_conftest.aws_staged


@pytest.fixture
def staged(aws_staged):
    return aws_staged


def test_home_shows_the_roles_and_creates_them_only_once_confirmed(aws):
    at = app_page("home").run()
    assert not at.exception
    assert [e.label for e in at.expander] == ["Provision roles"]
    shown = " ".join(m.value for m in at.markdown)
    assert all(f"**{name}**" in shown for name in ROLE_NAMES.values())
    assert len(at.json) == 3 and "sagemaker:InvokeEndpoint" in at.json[1].value
    assert at.button(key="roles_create").disabled
    iam = boto3.client("iam", region_name="us-east-1")
    assert iam.list_roles()["Roles"] == []

    at.checkbox(key="roles_confirm").check().run()
    assert not at.button(key="roles_create").disabled
    at.button(key="roles_create").click().run()
    assert not at.exception
    assert any("Roles ready" in s.value for s in at.success)
    assert sum("exists (`arn:aws:iam::123456789012:role/scones-" in m.value for m in at.markdown) == 3
    assert sorted(r["RoleName"] for r in iam.list_roles()["Roles"]) == sorted(ROLE_NAMES.values())


def test_home_warns_about_an_endpoint_idle_for_an_hour(staged, monkeypatch):
    b = staged
    job = b.create_training_job(b.default_training_hyperparameters("sagemaker"))
    b.deploy(b.create_model(job).model_name, "scones-endpoint")
    at = app_page("home").run()
    assert not at.exception and not at.warning  # just created: no warning

    later = datetime.now(timezone.utc) + timedelta(hours=3)
    real = AwsCostMixin.idle_endpoints
    monkeypatch.setattr(AwsCostMixin, "idle_endpoints", lambda self, now=None: real(self, now=later))
    at = app_page("home").run()
    assert not at.exception
    assert len(at.warning) == 1
    text = at.warning[0].value
    assert "**scones-endpoint**" in text and "no invocations for 3 h" in text and "about $0.69 so far" in text
    assert "Clean up page" in text


def test_train_starts_only_after_the_price_is_acknowledged(staged):
    at = app_page("train").run()
    assert not at.exception
    confirm = at.checkbox(key="train_confirm")
    assert confirm.label.startswith("I understand this starts ml.p3.2xlarge at about $3.825/h (prices of ")
    assert at.button(key="train_start").disabled
    sm = boto3.client("sagemaker", region_name="us-east-1")
    confirm.check().run()
    assert not at.button(key="train_start").disabled
    assert sm.list_training_jobs()["TrainingJobSummaries"] == []
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    assert len(sm.list_training_jobs()["TrainingJobSummaries"]) == 1


def test_deploy_starts_only_after_the_price_of_the_chosen_type_is_acknowledged(staged):
    b = staged
    b.create_model(b.create_training_job(b.default_training_hyperparameters("sagemaker")))
    at = app_page("deploy").run()
    assert not at.exception
    assert at.button(key="deploy_go").disabled
    at.selectbox(key="deploy_instance").select("ml.m5.large").run()
    confirm = at.checkbox(key="deploy_confirm_ml.m5.large")
    assert confirm.label.startswith("I understand this starts ml.m5.large at about $0.115/h")
    confirm.check().run()
    assert not at.button(key="deploy_go").disabled
    at.button(key="deploy_go").click().run()
    assert not at.exception, at.exception
    sm = boto3.client("sagemaker", region_name="us-east-1")
    [endpoint] = sm.list_endpoints()["Endpoints"]
    config = sm.describe_endpoint_config(EndpointConfigName=sm.describe_endpoint(
        EndpointName=endpoint["EndpointName"])["EndpointConfigName"])
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.m5.large"


def test_on_the_local_backend_nothing_asks_for_confirmation_or_roles(home):
    at = app_page("home").run()
    assert not at.exception and not at.expander and not at.warning
    at = app_page("train").run()
    assert not at.exception and not at.checkbox and not at.button(key="train_start").disabled
