"""The one place that reads and writes the events the three Scones handlers pass along.

A handler may be given the bare body (`{"s3_bucket": ..., "s3_key": ...}`, as `"Payload.$": "$.body"`
passes it) or the previous function's whole answer, `{"statusCode": 200, "body": ...}` (as
`"Payload.$": "$"` passes it), with `body` a dict or, from older handlers, a JSON string. Every
handler answers `{"statusCode": 200, "body": <dict>}`, so the next one never parses twice
(CONTRACTS.md section 4).

This module ships in the same zip as the handlers and is imported as a top-level module
(`import event_shapes`): on AWS Lambda the zip root is on sys.path and there is no package.
Standard library only.
"""
from __future__ import annotations

import json
import os
from typing import Any

# Keys a wrapped answer may carry besides `body` (API-Gateway-style answers add `headers`).
_WRAPPER_KEYS = frozenset({"statusCode", "body", "headers", "isBase64Encoded"})

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

EXAMPLE_INPUT = '{"s3_bucket": "<bucket>", "s3_key": "<key of a PNG or JPEG image>"}'


class InvalidEvent(ValueError):
    """The event is not one of the accepted shapes, or lacks a field the handler needs."""


class ConfigurationError(RuntimeError):
    """An environment variable the function's configuration must set is missing or unusable."""


def read_body(event: Any) -> dict[str, Any]:
    """The body of a bare or wrapped event, always as a new dict."""
    if not isinstance(event, dict):
        raise InvalidEvent(
            f"The event is a {type(event).__name__}, not a JSON object; start the execution with {EXAMPLE_INPUT}."
        )
    if "body" not in event or not set(event) <= _WRAPPER_KEYS:
        return dict(event)
    body = event["body"]
    if isinstance(body, (str, bytes)):
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise InvalidEvent(f"The event's body is a string that is not JSON ({exc}).") from None
    if not isinstance(body, dict):
        raise InvalidEvent(
            f"The event's body is a {type(body).__name__}, not a JSON object; pass the previous step's body on unchanged."
        )
    return dict(body)


def respond(body: dict[str, Any]) -> dict[str, Any]:
    """The one answer shape: status 200 and `body` as a dict, never a JSON string."""
    return {"statusCode": 200, "body": body}


def require_str(body: dict[str, Any], name: str, hint: str) -> str:
    value = body.get(name)
    if value is None:
        raise InvalidEvent(f"The event has no '{name}': {hint}")
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"The event's '{name}' must be a non-empty string, not {value!r}: {hint}")
    return value


def env(name: str, hint: str) -> str:
    """A required setting of the function's configuration (its environment variables)."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"The environment variable {name} is not set: {hint}")
    return value


def image_content_type(data: bytes) -> str | None:
    """`image/png` or `image/jpeg` from the file's first bytes; None for anything else."""
    if data.startswith(PNG_MAGIC):
        return "image/png"
    if data.startswith(JPEG_MAGIC):
        return "image/jpeg"
    return None
