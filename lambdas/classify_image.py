"""classifyImage: send the image to the SageMaker endpoint and fill `inferences` (CONTRACTS.md section 4).

Event:    the serializer's answer (bare body or wrapped as {"statusCode", "body"}) with "image_data".
Answer:   {"statusCode": 200, "body": {...the same fields, "inferences": [0.97, 0.03]}}: a list of
          floats, one per class, never a string.
Settings: ENDPOINT_NAME  the endpoint to invoke (required).
Errors:   InvalidEvent, ConfigurationError, EndpointNotFound, InferenceFailed, InvalidInference.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import boto3
from botocore.exceptions import ClientError

import event_shapes
from event_shapes import InvalidEvent

sagemaker = boto3.client("sagemaker-runtime")


class EndpointNotFound(LookupError):
    """ENDPOINT_NAME names no endpoint in service."""


class InferenceFailed(RuntimeError):
    """The endpoint refused the request or its model failed."""


class InvalidInference(ValueError):
    """The endpoint answered something that is not a list of per-class probabilities."""


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = event_shapes.read_body(event)
    image = decode_image(event_shapes.require_str(body, "image_data", "run serializeImageData first and pass its body on."))
    endpoint = event_shapes.env("ENDPOINT_NAME", "set it to the name of the deployed endpoint.")
    return event_shapes.respond({**body, "inferences": classify(endpoint, image)})


def decode_image(image_data: str) -> tuple[bytes, str]:
    try:
        image = base64.b64decode(image_data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEvent("The event's 'image_data' is not valid base64; pass serializeImageData's body on unchanged.") from None
    content_type = event_shapes.image_content_type(image)
    if content_type is None:
        raise InvalidEvent("The event's 'image_data' does not hold a PNG or JPEG image.")
    return image, content_type


def classify(endpoint: str, image: tuple[bytes, str]) -> list[float]:
    data, content_type = image
    try:
        response = sagemaker.invoke_endpoint(EndpointName=endpoint, ContentType=content_type, Body=data)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", "")
        if code == "ValidationError" and "not found" in message.lower():
            raise EndpointNotFound(f"Endpoint {endpoint!r} was not found: deploy it, or set the function's "
                                   "ENDPOINT_NAME to an endpoint in service.") from None
        raise InferenceFailed(f"Endpoint {endpoint!r} failed with {code}: {message}") from None
    return parse_inferences(response["Body"].read(), endpoint)


def parse_inferences(raw: bytes, endpoint: str) -> list[float]:
    try:
        values = json.loads(raw)
    except ValueError:
        values = None
    if (
        not isinstance(values, list) or not values
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    ):
        raise InvalidInference(f"Endpoint {endpoint!r} answered {raw[:80]!r}, not a JSON list of probabilities.")
    return [float(v) for v in values]
