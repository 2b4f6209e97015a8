"""AWS backend tests: moto only, never the network (no real credentials, no instance metadata)."""
from __future__ import annotations

import socket

import pytest
from moto import mock_aws

FAKE = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_CONFIG_FILE": "/nonexistent"}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/aws/" in str(item.fspath):
            item.add_marker(pytest.mark.aws)


@pytest.fixture
def aws_env(monkeypatch, home):
    for k in ("AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    for k, v in FAKE.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SCONES_BACKEND", "aws")
    return home


@pytest.fixture
def aws(aws_env):
    with mock_aws():
        yield


@pytest.fixture
def moto_server(aws_env, monkeypatch):
    """A real moto server on loopback, for worker processes that cannot share an in-process mock."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    yield url
    server.stop()


SAGEMAKER_ROLE = "arn:aws:iam::123456789012:role/scones-sagemaker"


@pytest.fixture
def aws_staged(aws, monkeypatch, small_archive):
    """The AWS backend on moto with a SageMaker role set and the small archive staged."""
    from backend import get_backend
    from backend.settings import load_settings

    monkeypatch.setenv("SCONES_SAGEMAKER_ROLE_ARN", SAGEMAKER_ROLE)
    b = get_backend(load_settings())
    b.stage_data(small_archive)
    return b
