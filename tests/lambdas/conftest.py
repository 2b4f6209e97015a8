"""Fixtures for the Lambda handlers, the local Lambda runtime, the gateway and the resolver."""
from __future__ import annotations

import importlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import moto  # noqa: F401  (imported before any handler client exists, so mock_aws reaches them)
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
LAMBDAS_DIR = REPO / "lambdas"
FUNCTIONS_DIR = Path(__file__).resolve().parent / "functions"

# What a test process may inherit and must not pass to boto3: real keys, profiles, endpoints.
_AWS_VARS = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_REGION", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
)
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class LambdaContext:
    """The powertools-style test context: the attributes the handlers may read."""

    function_name: str = "test-function"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 128
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id: str = "52fdfc07-2182-454f-963f-5f0f9a621d72"

    def get_remaining_time_in_millis(self) -> int:
        return 3000


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


def _fake_aws_env(mp: pytest.MonkeyPatch) -> None:
    for name in _AWS_VARS:
        mp.delenv(name, raising=False)
    for name, value in FAKE_AWS_ENV.items():
        mp.setenv(name, value)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region, no endpoint overrides, no handler settings."""
    _fake_aws_env(monkeypatch)
    for name in ("ENDPOINT_NAME", "THRESHOLD", "S3_BUCKET", "MAX_IMAGE_BYTES", "CLASS_NAMES"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def handlers() -> SimpleNamespace:
    """The handler modules, imported as Lambda imports them: top-level modules from lambdas/.

    Their module-level boto3 clients are created here, under fake credentials and no endpoint
    overrides, so moto's mock_aws (or a Stubber) answers them.
    """
    with pytest.MonkeyPatch.context() as mp:
        _fake_aws_env(mp)
        mp.syspath_prepend(str(LAMBDAS_DIR))
        return SimpleNamespace(
            event_shapes=importlib.import_module("event_shapes"),
            serialize=importlib.import_module("serialize_image_data"),
            classify=importlib.import_module("classify_image"),
            filter=importlib.import_module("filter_inferences"),
        )


def image_bytes(fmt: str = "PNG", color: tuple[int, int, int] = (200, 40, 30), size: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format=fmt)
    return out.getvalue()


@pytest.fixture(scope="session")
def png() -> bytes:
    return image_bytes("PNG")


@pytest.fixture(scope="session")
def jpeg() -> bytes:
    return image_bytes("JPEG")


def pid_gone(pid: int) -> bool:
    """True when no process has this pid, or only a zombie that nobody has reaped yet."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
