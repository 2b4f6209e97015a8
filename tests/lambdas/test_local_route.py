"""The handler files, unchanged, in the local Lambda runtime: their boto3 clients reach the local
store and a fake endpoint through the gateway, and tasks chain as asl/scones_workflow.asl.json
chains them (Payload.$ "$" then "$.body", OutputPath "$.Payload")."""
from __future__ import annotations

import base64
import json
import socket
import threading

import pytest

from backend.api import ResourceNotFound
from backend.local.gateway import Gateway
from backend.local.lambda_resolver import LAMBDA_INVOKE, lambda_invoke_resolver
from backend.local.lambda_runtime import LAMBDAS_DIR, FunctionConfig, LambdaRuntime
from backend.local.states.errors import TaskError
from backend.local.store import LocalStore

from .conftest import image_bytes

BUCKET = "scones-test"
ENDPOINT = "scones-endpoint"
SURE = image_bytes("PNG", (200, 40, 30))
UNSURE = image_bytes("PNG", (30, 40, 200))
ANSWERS = {SURE: b"[0.97, 0.03]", UNSURE: b"[0.6, 0.4]"}


class FakeEndpoint:
    def __init__(self) -> None:
        self.content_types: list[str] = []

    def __call__(self, name: str, body: bytes, content_type: str) -> bytes:
        if name != ENDPOINT:
            raise ResourceNotFound(f"No endpoint named {name}: deploy a model first.")
        self.content_types.append(content_type)
        return ANSWERS[body]


@pytest.fixture(scope="module")
def endpoint():
    return FakeEndpoint()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, endpoint):
    store = LocalStore(tmp_path_factory.mktemp("buckets"))
    store.put(BUCKET, "test/sure.png", SURE)
    store.put(BUCKET, "test/unsure.png", UNSURE)
    store.put(BUCKET, "test/notes.txt", b"not an image")
    store.put(BUCKET, "test/huge.png", SURE[:8] + b"\0" * 300_000)

    with Gateway(store, endpoint) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def resolve(gateway):
    def function(name: str, module: str, **env: str) -> FunctionConfig:
        return FunctionConfig(name, f"{module}.lambda_handler", LAMBDAS_DIR, environment=env)

    with LambdaRuntime([
        function("serializeImageData", "serialize_image_data", S3_BUCKET=BUCKET),
        function("classifyImage", "classify_image", ENDPOINT_NAME=ENDPOINT),
        function("classifyRetired", "classify_image", ENDPOINT_NAME="retired-endpoint"),
        function("filterInferences", "filter_inferences", THRESHOLD="0.93"),
    ], gateway_url=gateway.url) as runtime:
        yield lambda_invoke_resolver(runtime)


def task(resolve, function: str, payload):
    return resolve(LAMBDA_INVOKE, {"FunctionName": function, "Payload": payload}, None)["Payload"]


def run_workflow(resolve, execution_input, classify: str = "classifyImage", wrapped: bool = False):
    """serialize -> classify -> filter with the definition's paths; `wrapped` passes "$" throughout."""
    out = task(resolve, "serializeImageData", execution_input)
    out = task(resolve, classify, out if wrapped else out["body"])
    return task(resolve, "filterInferences", out if wrapped else out["body"])


def failure(resolve, execution_input, **kw) -> tuple[str, dict]:
    with pytest.raises(TaskError) as caught:
        run_workflow(resolve, execution_input, **kw)
    return caught.value.error, json.loads(caught.value.cause)


@pytest.mark.parametrize("wrapped", [False, True], ids=["payload-body", "payload-whole"])
def test_a_confident_image_passes_end_to_end(resolve, endpoint, wrapped):
    out = run_workflow(resolve, {"s3_bucket": BUCKET, "s3_key": "test/sure.png"}, wrapped=wrapped)
    assert out["statusCode"] == 200
    body = out["body"]
    assert body["inferences"] == [0.97, 0.03]
    assert base64.b64decode(body["image_data"]) == SURE
    assert (body["s3_bucket"], body["s3_key"]) == (BUCKET, "test/sure.png")
    assert endpoint.content_types[-1] == "image/png"


def test_the_bucket_comes_from_configuration_when_the_input_has_none(resolve):
    assert run_workflow(resolve, {"s3_key": "test/sure.png"})["body"]["s3_bucket"] == BUCKET


def test_a_low_confidence_fails_with_threshold_confidence_not_met(resolve):
    error, cause = failure(resolve, {"s3_bucket": BUCKET, "s3_key": "test/unsure.png"})
    assert error == cause["errorType"] == "THRESHOLD_CONFIDENCE_NOT_MET"
    assert cause["errorMessage"] == (
        f"Highest confidence 0.6 (class 0) is below the threshold 0.93 for s3://{BUCKET}/test/unsure.png.")
    assert any("filter_inferences.py" in line for line in cause["stackTrace"])


@pytest.mark.parametrize("execution_input, error, words", [
    ({"s3_bucket": BUCKET}, "InvalidEvent", "The event has no 's3_key'"),
    ({"s3_bucket": BUCKET, "s3_key": "test/nope.png"}, "ImageNotFound", f"No object at s3://{BUCKET}/test/nope.png"),
    ({"s3_bucket": "other-bucket", "s3_key": "test/sure.png"}, "ImageNotFound", "No bucket named 'other-bucket'"),
    ({"s3_bucket": BUCKET, "s3_key": "test/notes.txt"}, "NotAnImage", "is not a PNG or JPEG image"),
    ({"s3_bucket": BUCKET, "s3_key": "test/huge.png"}, "PayloadTooLarge", "300,008 bytes; the limit is 150,000"),
    ({"s3_bucket": BUCKET, "s3_key": "test/sure.png", "threshold": "high"}, "InvalidThreshold", "between 0 and 1"),
    ("s3://scones-test/test/sure.png", "InvalidEvent", "not a JSON object"),
])
def test_hostile_input_fails_with_a_named_error_and_a_readable_cause(resolve, execution_input, error, words):
    name, cause = failure(resolve, execution_input)
    assert name == cause["errorType"] == error
    assert words in cause["errorMessage"]


def test_a_retired_endpoint_fails_with_endpoint_not_found(resolve):
    error, cause = failure(resolve, {"s3_bucket": BUCKET, "s3_key": "test/sure.png"}, classify="classifyRetired")
    assert error == "EndpointNotFound"
    assert "'retired-endpoint' was not found" in cause["errorMessage"]


def test_thresholds_in_the_input_apply_to_their_own_execution_only(resolve):
    cases = [("test/unsure.png", 0.5, True), ("test/sure.png", 0.99, False), ("test/unsure.png", None, False),
             ("test/sure.png", None, True)] * 3
    outcomes: list[bool | None] = [None] * len(cases)

    def execute(i: int) -> None:
        key, threshold, _ = cases[i]
        execution_input = {"s3_bucket": BUCKET, "s3_key": key, **({} if threshold is None else {"threshold": threshold})}
        try:
            run_workflow(resolve, execution_input)
            outcomes[i] = True
        except TaskError as exc:
            outcomes[i] = False if exc.error == "THRESHOLD_CONFIDENCE_NOT_MET" else None

    threads = [threading.Thread(target=execute, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes == [expected for _, _, expected in cases]


def open_connections(gateway) -> dict[tuple[str, int], int]:
    """The gateway's open connections: the client's address -> TCP_NODELAY on the gateway's side."""
    server = gateway._server
    with server.connections_lock:
        return {conn.getpeername(): conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                for conn in server.connections}


def test_warm_executions_reuse_their_connections(resolve, gateway):
    """What keeps an execution at milliseconds, checked without a clock: the handlers' clients keep
    their connections alive (a new TCP connection per call, or a lost keep-alive, would show as new
    client addresses) and the gateway answers with Nagle off (a 40 ms delayed-ACK stall otherwise)."""
    execution_input = {"s3_bucket": BUCKET, "s3_key": "test/sure.png"}
    for _ in range(5):
        run_workflow(resolve, execution_input)
    warm = open_connections(gateway)
    assert warm and all(warm.values()), warm
    for _ in range(30):
        assert run_workflow(resolve, execution_input)["body"]["inferences"] == [0.97, 0.03]
    assert open_connections(gateway) == warm
