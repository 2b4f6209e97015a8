"""filterInferences: pass confident inferences on, fail the execution on purpose otherwise.

Event:    the classifier's answer (bare body or wrapped as {"statusCode", "body"}) with "inferences",
          and optionally "threshold", which overrides THRESHOLD for this execution only.
Answer:   {"statusCode": 200, "body": <the body unchanged>} when max(inferences) >= threshold.
Settings: THRESHOLD    confidence between 0 and 1 (required unless every event carries "threshold").
          CLASS_NAMES  the model's class names in its class order, as a JSON list (optional): the
                       failure's cause then names the best class ("class 1: motorcycle").
Errors:   THRESHOLD_CONFIDENCE_NOT_MET (the workflow's named failure), InvalidEvent, InvalidThreshold,
          ConfigurationError.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import event_shapes
from event_shapes import ConfigurationError, InvalidEvent


class ThresholdConfidenceNotMet(Exception):
    """The best class's confidence is below the threshold: the execution fails on purpose."""


# Lambda reports type(exc).__name__ as errorType and Step Functions takes it as the error name,
# which Catchers and the workflow's history expect to read THRESHOLD_CONFIDENCE_NOT_MET.
ThresholdConfidenceNotMet.__name__ = ThresholdConfidenceNotMet.__qualname__ = "THRESHOLD_CONFIDENCE_NOT_MET"


class InvalidThreshold(ValueError):
    """The threshold is not a number between 0 and 1."""


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = event_shapes.read_body(event)
    inferences = read_inferences(body)
    threshold = threshold_for(body)
    confidence = max(inferences)
    if confidence < threshold:
        where = f" for s3://{body['s3_bucket']}/{body['s3_key']}" if "s3_bucket" in body and "s3_key" in body else ""
        raise ThresholdConfidenceNotMet(
            f"Highest confidence {confidence:.6g} ({class_label(inferences.index(confidence))}) is below the "
            f"threshold {threshold:.6g}{where}."
        )
    return event_shapes.respond(body)


def read_inferences(body: dict[str, Any]) -> list[float]:
    values = body.get("inferences")
    if (
        not isinstance(values, list) or not values
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    ):
        raise InvalidEvent(
            f"The event's 'inferences' must be a non-empty list of numbers, not {values!r:.80}; run classifyImage first."
        )
    return [float(v) for v in values]


def class_label(index: int) -> str:
    """'class 1: motorcycle' when CLASS_NAMES names it, else 'class 1' (a label never fails the execution)."""
    try:
        names = json.loads(os.environ.get("CLASS_NAMES") or "[]")
    except ValueError:
        names = []
    name = names[index] if isinstance(names, list) and index < len(names) else None
    return f"class {index}: {name}" if isinstance(name, str) and name else f"class {index}"


def threshold_for(body: dict[str, Any]) -> float:
    """The event's `threshold` when present (this execution only), else THRESHOLD."""
    if body.get("threshold") is not None:
        return parse_threshold(body["threshold"], "The event's 'threshold'")
    raw = os.environ.get("THRESHOLD", "").strip()
    if not raw:
        raise ConfigurationError(
            "The environment variable THRESHOLD is not set: set it to a confidence between 0 and 1, "
            "or put 'threshold' in the execution input."
        )
    return parse_threshold(raw, "THRESHOLD")


def parse_threshold(value: Any, source: str) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not 0.0 <= number <= 1.0:  # NaN fails the comparison too
        raise InvalidThreshold(f"{source} is {value!r}; use a confidence between 0 and 1, such as 0.93.")
    return number
