"""filterInferences alone: threshold from configuration or from the event, and the named failure."""
from __future__ import annotations

import json
import math

import pytest

BODY = {"s3_bucket": "scones", "s3_key": "test/bike.png", "image_data": "iVBORw0KGgo=", "inferences": [0.81, 0.19]}


@pytest.fixture
def threshold(aws_env, monkeypatch):
    monkeypatch.setenv("THRESHOLD", "0.93")


@pytest.mark.parametrize("wrap", [
    lambda b: b,
    lambda b: {"statusCode": 200, "body": b},
    lambda b: {"statusCode": 200, "body": json.dumps(b)},
], ids=["bare", "wrapped-dict", "wrapped-json-string"])
def test_confident_inferences_pass_on_unchanged(handlers, threshold, lambda_context, wrap):
    body = {**BODY, "inferences": [0.03, 0.97]}
    assert handlers.filter.lambda_handler(wrap(body), lambda_context) == {"statusCode": 200, "body": body}


def test_confidence_equal_to_the_threshold_passes(handlers, threshold, lambda_context):
    body = {**BODY, "inferences": [0.93, 0.07]}
    assert handlers.filter.lambda_handler(body, lambda_context)["body"] == body


def test_low_confidence_fails_with_the_workflow_error_name(handlers, threshold, lambda_context):
    with pytest.raises(handlers.filter.ThresholdConfidenceNotMet) as caught:
        handlers.filter.lambda_handler(BODY, lambda_context)
    # Lambda reports type(exc).__name__ as errorType; Step Functions uses it as the error name.
    assert type(caught.value).__name__ == "THRESHOLD_CONFIDENCE_NOT_MET"
    assert str(caught.value) == (
        "Highest confidence 0.81 (class 0) is below the threshold 0.93 for s3://scones/test/bike.png."
    )


def test_class_names_name_the_best_class_in_the_cause_and_never_fail_it(handlers, threshold, lambda_context,
                                                                       monkeypatch):
    for names, label in (('["bicycle", "motorcycle"]', "class 0: bicycle"), ('["bicycle"]', "class 0: bicycle"),
                         ("[]", "class 0"), ("not json", "class 0"), ('{"0": "bicycle"}', "class 0"),
                         ("[7, 8]", "class 0")):
        monkeypatch.setenv("CLASS_NAMES", names)
        with pytest.raises(handlers.filter.ThresholdConfidenceNotMet) as caught:
            handlers.filter.lambda_handler(BODY, lambda_context)
        assert str(caught.value).startswith(f"Highest confidence 0.81 ({label}) is below the threshold 0.93"), names
    monkeypatch.setenv("CLASS_NAMES", '["bicycle", "motorcycle"]')
    with pytest.raises(handlers.filter.ThresholdConfidenceNotMet, match=r"\(class 1: motorcycle\)"):
        handlers.filter.lambda_handler({**BODY, "inferences": [0.2, 0.8]}, lambda_context)


def test_the_event_threshold_overrides_configuration_for_that_event_only(handlers, threshold, lambda_context):
    assert handlers.filter.lambda_handler({**BODY, "threshold": 0.8}, lambda_context)["body"]["threshold"] == 0.8
    assert handlers.filter.lambda_handler({**BODY, "threshold": "0.5"}, lambda_context)["statusCode"] == 200
    with pytest.raises(handlers.filter.ThresholdConfidenceNotMet, match="threshold 0.93"):
        handlers.filter.lambda_handler(BODY, lambda_context)  # the next event is back on THRESHOLD
    confident = {**BODY, "inferences": [0.97, 0.03], "threshold": 0.99}
    with pytest.raises(handlers.filter.ThresholdConfidenceNotMet, match="0.97 .* threshold 0.99"):
        handlers.filter.lambda_handler(confident, lambda_context)


def test_threshold_from_configuration(handlers, aws_env, lambda_context, monkeypatch):
    monkeypatch.setenv("THRESHOLD", "0.8")
    assert handlers.filter.lambda_handler(BODY, lambda_context)["statusCode"] == 200
    monkeypatch.setenv("THRESHOLD", "0.85")
    with pytest.raises(handlers.filter.ThresholdConfidenceNotMet):
        handlers.filter.lambda_handler(BODY, lambda_context)


def test_no_threshold_anywhere_is_a_configuration_error(handlers, aws_env, lambda_context):
    with pytest.raises(handlers.event_shapes.ConfigurationError, match="THRESHOLD is not set"):
        handlers.filter.lambda_handler(BODY, lambda_context)


@pytest.mark.parametrize("bad", [1.5, -0.1, "high", True, math.nan, [0.9]])
def test_an_unusable_threshold_fails_with_invalid_threshold(handlers, threshold, lambda_context, bad):
    with pytest.raises(handlers.filter.InvalidThreshold, match="between 0 and 1"):
        handlers.filter.lambda_handler({**BODY, "threshold": bad}, lambda_context)


def test_an_unusable_configured_threshold_names_the_variable(handlers, aws_env, lambda_context, monkeypatch):
    monkeypatch.setenv("THRESHOLD", "93%")
    with pytest.raises(handlers.filter.InvalidThreshold, match="THRESHOLD is '93%'"):
        handlers.filter.lambda_handler(BODY, lambda_context)


@pytest.mark.parametrize("inferences", ["[0.9, 0.1]", [], [True, False], ["0.9"], None, [math.inf]])
def test_inferences_must_be_a_list_of_numbers(handlers, threshold, lambda_context, inferences):
    with pytest.raises(handlers.event_shapes.InvalidEvent, match="'inferences' must be a non-empty list of numbers"):
        handlers.filter.lambda_handler({**BODY, "inferences": inferences}, lambda_context)
