"""serializeImageData alone, with a real boto3 S3 client against moto."""
from __future__ import annotations

import base64
import json

import boto3
import pytest
from moto import mock_aws

BUCKET = "scones-test"
KEY = "test/bicycle_s_000017.png"


@pytest.fixture
def s3(aws_env, png, jpeg):
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key=KEY, Body=png)
        client.put_object(Bucket=BUCKET, Key="test/photo.jpg", Body=jpeg)
        client.put_object(Bucket=BUCKET, Key="test/notes.txt", Body=b"bicycle, motorcycle\n")
        client.put_object(Bucket=BUCKET, Key="test/empty.png", Body=b"")
        client.put_object(Bucket=BUCKET, Key="test/huge.png", Body=png[:8] + b"\0" * 300_000)
        yield client


def body_of(answer):
    assert answer["statusCode"] == 200
    assert isinstance(answer["body"], dict)
    return answer["body"]


@pytest.mark.parametrize("wrap", [
    lambda b: b,
    lambda b: {"statusCode": 200, "body": b},
    lambda b: {"statusCode": 200, "body": json.dumps(b)},
], ids=["bare", "wrapped-dict", "wrapped-json-string"])
def test_serializes_the_image_in_every_event_shape(handlers, s3, png, lambda_context, wrap):
    answer = handlers.serialize.lambda_handler(wrap({"s3_bucket": BUCKET, "s3_key": KEY}), lambda_context)
    body = body_of(answer)
    assert base64.b64decode(body["image_data"]) == png
    assert (body["s3_bucket"], body["s3_key"], body["inferences"]) == (BUCKET, KEY, [])


def test_other_input_fields_such_as_threshold_travel_on(handlers, s3, lambda_context):
    body = body_of(handlers.serialize.lambda_handler(
        {"s3_bucket": BUCKET, "s3_key": KEY, "threshold": 0.7}, lambda_context))
    assert body["threshold"] == 0.7


def test_jpeg_is_an_image_too(handlers, s3, jpeg, lambda_context):
    body = body_of(handlers.serialize.lambda_handler({"s3_bucket": BUCKET, "s3_key": "test/photo.jpg"}, lambda_context))
    assert base64.b64decode(body["image_data"]) == jpeg


def test_bucket_comes_from_configuration_when_the_event_names_none(handlers, s3, lambda_context, monkeypatch):
    with pytest.raises(handlers.event_shapes.ConfigurationError, match="S3_BUCKET"):
        handlers.serialize.lambda_handler({"s3_key": KEY}, lambda_context)
    monkeypatch.setenv("S3_BUCKET", BUCKET)
    assert body_of(handlers.serialize.lambda_handler({"s3_key": KEY}, lambda_context))["s3_bucket"] == BUCKET


def test_input_without_s3_key_fails_with_invalid_event(handlers, s3, lambda_context):
    with pytest.raises(handlers.event_shapes.InvalidEvent, match="no 's3_key'.*s3_bucket.*s3_key"):
        handlers.serialize.lambda_handler({"s3_bucket": BUCKET}, lambda_context)


def test_missing_key_fails_with_image_not_found(handlers, s3, lambda_context):
    with pytest.raises(handlers.serialize.ImageNotFound, match=f"No object at s3://{BUCKET}/test/nope.png"):
        handlers.serialize.lambda_handler({"s3_bucket": BUCKET, "s3_key": "test/nope.png"}, lambda_context)


def test_missing_bucket_fails_with_image_not_found(handlers, s3, lambda_context):
    with pytest.raises(handlers.serialize.ImageNotFound, match="No bucket named 'no-such-bucket'"):
        handlers.serialize.lambda_handler({"s3_bucket": "no-such-bucket", "s3_key": KEY}, lambda_context)


@pytest.mark.parametrize("key", ["test/notes.txt", "test/empty.png"])
def test_an_object_that_is_not_an_image_fails_with_not_an_image(handlers, s3, lambda_context, key):
    with pytest.raises(handlers.serialize.NotAnImage, match="not a PNG or JPEG image"):
        handlers.serialize.lambda_handler({"s3_bucket": BUCKET, "s3_key": key}, lambda_context)


def test_a_300_kb_object_fails_with_payload_too_large(handlers, s3, lambda_context):
    with pytest.raises(handlers.serialize.PayloadTooLarge, match=r"300,008 bytes; the limit is 150,000 bytes"):
        handlers.serialize.lambda_handler({"s3_bucket": BUCKET, "s3_key": "test/huge.png"}, lambda_context)


def test_the_largest_accepted_image_still_fits_a_step_functions_state(handlers, s3, png, lambda_context):
    limit = handlers.serialize.DEFAULT_MAX_IMAGE_BYTES
    s3.put_object(Bucket=BUCKET, Key="test/limit.png", Body=png[:8] + b"\0" * (limit - 8))
    answer = handlers.serialize.lambda_handler({"s3_bucket": BUCKET, "s3_key": "test/limit.png"}, lambda_context)
    assert len(json.dumps(answer).encode()) < 256 * 1024 * 0.8


def test_max_image_bytes_is_configuration(handlers, s3, png, lambda_context, monkeypatch):
    monkeypatch.setenv("MAX_IMAGE_BYTES", str(len(png) - 1))
    with pytest.raises(handlers.serialize.PayloadTooLarge):
        handlers.serialize.lambda_handler({"s3_bucket": BUCKET, "s3_key": KEY}, lambda_context)
    monkeypatch.setenv("MAX_IMAGE_BYTES", "lots")
    with pytest.raises(handlers.event_shapes.ConfigurationError, match="MAX_IMAGE_BYTES='lots'"):
        handlers.serialize.lambda_handler({"s3_bucket": BUCKET, "s3_key": KEY}, lambda_context)
