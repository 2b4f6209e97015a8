"""classifyImage alone: botocore's Stubber on its sagemaker-runtime client, then the real HTTP
route through the local gateway with a fake endpoint."""
from __future__ import annotations

import base64
import io
import json

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from backend.api import ResourceNotFound
from backend.local.gateway import Gateway
from backend.local.store import LocalStore

ENDPOINT = "scones-endpoint"


@pytest.fixture
def endpoint(aws_env, monkeypatch):
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)


@pytest.fixture
def stub(handlers):
    with Stubber(handlers.classify.sagemaker) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def body_stream(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def event_for(image: bytes, **extra):
    return {"s3_bucket": "scones", "s3_key": "test/bike.png", "image_data": base64.b64encode(image).decode(),
            "inferences": [], **extra}


@pytest.mark.parametrize("wrap", [
    lambda b: b,
    lambda b: {"statusCode": 200, "body": b},
    lambda b: {"statusCode": 200, "body": json.dumps(b)},
], ids=["bare", "wrapped-dict", "wrapped-json-string"])
def test_fills_inferences_with_floats(handlers, endpoint, stub, png, lambda_context, wrap):
    stub.add_response("invoke_endpoint", {"Body": body_stream(b"[0.9971, 0.0029]"), "ContentType": "application/json"},
                      {"EndpointName": ENDPOINT, "ContentType": "image/png", "Body": png})
    answer = handlers.classify.lambda_handler(wrap(event_for(png, threshold=0.5)), lambda_context)
    assert answer["statusCode"] == 200
    assert answer["body"] == {**event_for(png, threshold=0.5), "inferences": [0.9971, 0.0029]}
    assert all(type(v) is float for v in answer["body"]["inferences"])


def test_integers_from_the_endpoint_become_floats(handlers, endpoint, stub, png, lambda_context):
    stub.add_response("invoke_endpoint", {"Body": body_stream(b"[1, 0]")})
    assert handlers.classify.lambda_handler(event_for(png), lambda_context)["body"]["inferences"] == [1.0, 0.0]


def test_a_jpeg_is_sent_as_image_jpeg(handlers, endpoint, stub, jpeg, lambda_context):
    stub.add_response("invoke_endpoint", {"Body": body_stream(b"[0.4, 0.6]")},
                      {"EndpointName": ENDPOINT, "ContentType": "image/jpeg", "Body": jpeg})
    assert handlers.classify.lambda_handler(event_for(jpeg), lambda_context)["body"]["inferences"] == [0.4, 0.6]


def test_endpoint_name_is_configuration(handlers, aws_env, stub, png, lambda_context):
    with pytest.raises(handlers.event_shapes.ConfigurationError, match="ENDPOINT_NAME is not set"):
        handlers.classify.lambda_handler(event_for(png), lambda_context)


@pytest.mark.parametrize("image_data, words", [
    (None, "no 'image_data'"),
    ("not base64!!", "not valid base64"),
    (base64.b64encode(b"plain text").decode(), "does not hold a PNG or JPEG"),
])
def test_unusable_image_data_fails_with_invalid_event(handlers, endpoint, png, lambda_context, image_data, words):
    event = {**event_for(png), "image_data": image_data}
    with pytest.raises(handlers.event_shapes.InvalidEvent, match=words):
        handlers.classify.lambda_handler(event, lambda_context)


def test_a_missing_endpoint_fails_with_endpoint_not_found(handlers, endpoint, stub, png, lambda_context):
    stub.add_client_error("invoke_endpoint", "ValidationError",
                          f"Endpoint {ENDPOINT} of account 123456789012 not found.", 400)
    with pytest.raises(handlers.classify.EndpointNotFound) as caught:
        handlers.classify.lambda_handler(event_for(png), lambda_context)
    assert str(caught.value) == (f"Endpoint {ENDPOINT!r} was not found: deploy it, or set the function's ENDPOINT_NAME "
                                 "to an endpoint in service.")  # one sentence, said once


def test_a_model_error_fails_with_inference_failed(handlers, endpoint, stub, png, lambda_context):
    stub.add_client_error("invoke_endpoint", "ModelError", "Received server error (500) from primary", 424)
    with pytest.raises(handlers.classify.InferenceFailed, match="failed with ModelError: Received server error"):
        handlers.classify.lambda_handler(event_for(png), lambda_context)


@pytest.mark.parametrize("answer", [b"not json", b'"[0.9, 0.1]"', b"[]", b'{"predictions": [0.9]}', b'["0.9"]'])
def test_an_answer_that_is_not_probabilities_fails_with_invalid_inference(handlers, endpoint, stub, png,
                                                                          lambda_context, answer):
    stub.add_response("invoke_endpoint", {"Body": body_stream(answer)})
    with pytest.raises(handlers.classify.InvalidInference, match="not a JSON list of probabilities"):
        handlers.classify.lambda_handler(event_for(png), lambda_context)


def test_through_the_local_gateway(handlers, endpoint, png, lambda_context, tmp_path, monkeypatch):
    """The real HTTP route: a client made as the handler makes it, pointed at the gateway."""
    calls = []

    def fake_endpoint(name: str, body: bytes, content_type: str) -> bytes:
        calls.append((name, body, content_type))
        if name != ENDPOINT:
            raise ResourceNotFound(f"No endpoint named {name}.")
        return b"[0.25, 0.75]"

    with Gateway(LocalStore(tmp_path), fake_endpoint) as gateway:
        for name, value in gateway.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(handlers.classify, "sagemaker", boto3.client("sagemaker-runtime"))
        answer = handlers.classify.lambda_handler(event_for(png), lambda_context)
        assert answer["body"]["inferences"] == [0.25, 0.75]
        assert calls == [(ENDPOINT, png, "image/png")]
        monkeypatch.setenv("ENDPOINT_NAME", "retired-endpoint")
        with pytest.raises(handlers.classify.EndpointNotFound, match="'retired-endpoint' was not found"):
            handlers.classify.lambda_handler(event_for(png), lambda_context)
