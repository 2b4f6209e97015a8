"""The one helper that reads events: bare, wrapped with a dict body, wrapped with a JSON-string body."""
from __future__ import annotations

import json

import pytest

BODY = {"s3_bucket": "scones", "s3_key": "test/bike.png", "inferences": []}


@pytest.mark.parametrize("event", [
    BODY,
    {"statusCode": 200, "body": BODY},
    {"statusCode": 200, "body": json.dumps(BODY)},
    {"statusCode": 200, "body": json.dumps(BODY).encode()},
    {"body": BODY},
], ids=["bare", "wrapped-dict", "wrapped-json-string", "wrapped-json-bytes", "body-only"])
def test_every_accepted_shape_reads_to_the_same_body(handlers, event):
    body = handlers.event_shapes.read_body(event)
    assert body == BODY
    body["extra"] = 1  # a copy: the caller's event is never changed
    assert "extra" not in BODY


def test_a_bare_event_that_happens_to_carry_body_is_not_unwrapped(handlers):
    event = {"s3_key": "k", "body": "a field of the input, not a wrapper"}
    assert handlers.event_shapes.read_body(event) == event


@pytest.mark.parametrize("event, words", [
    ([1, 2], "not a JSON object"),
    ("s3://bucket/key", "not a JSON object"),
    ({"statusCode": 200, "body": "{not json"}, "not JSON"),
    ({"statusCode": 200, "body": "[1, 2]"}, "not a JSON object"),
    ({"statusCode": 200, "body": None}, "not a JSON object"),
])
def test_unreadable_events_fail_with_invalid_event(handlers, event, words):
    with pytest.raises(handlers.event_shapes.InvalidEvent, match=words):
        handlers.event_shapes.read_body(event)


def test_respond_keeps_body_a_dict(handlers):
    assert handlers.event_shapes.respond({"a": 1}) == {"statusCode": 200, "body": {"a": 1}}


def test_require_str_names_the_missing_field(handlers):
    shapes = handlers.event_shapes
    assert shapes.require_str({"s3_key": "k"}, "s3_key", "hint") == "k"
    with pytest.raises(shapes.InvalidEvent, match="no 's3_key': give one"):
        shapes.require_str({}, "s3_key", "give one")
    with pytest.raises(shapes.InvalidEvent, match="non-empty string"):
        shapes.require_str({"s3_key": 5}, "s3_key", "hint")


def test_env_reads_configuration_or_says_what_to_set(handlers, monkeypatch):
    monkeypatch.setenv("SOME_SETTING", " value ")
    assert handlers.event_shapes.env("SOME_SETTING", "hint") == "value"
    monkeypatch.delenv("SOME_SETTING")
    with pytest.raises(handlers.event_shapes.ConfigurationError, match="SOME_SETTING is not set: do this"):
        handlers.event_shapes.env("SOME_SETTING", "do this")


def test_image_content_type_from_magic_bytes(handlers, png, jpeg):
    sniff = handlers.event_shapes.image_content_type
    assert (sniff(png), sniff(jpeg), sniff(b"GIF89a..."), sniff(b"")) == ("image/png", "image/jpeg", None, None)
