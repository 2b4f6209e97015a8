"""The notes of what each workflow function was configured with: class names and, since schema 2, the
endpoint it calls; a workspace written before endpoints were noted keeps working."""
from __future__ import annotations

import time
from datetime import datetime, timezone

from backend import function_classes
from backend.function_classes import FunctionClasses
from backend.local.db import Database


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def test_a_workspace_from_before_endpoints_were_noted_migrates_and_is_filled_before_a_repoint(tmp_path):
    db = Database(tmp_path / "scones.db")
    db.migrate("function_classes", function_classes.MIGRATIONS[:1])  # as an older version left it
    with db.transaction() as conn:
        conn.execute("INSERT INTO function_classes(backend, function, since, classes) VALUES "
                     "('local', 'classifyImage', 100, '[\"bicycle\",\"motorcycle\"]')")
    db = Database(tmp_path / "scones.db")  # a newer version's process opens it and migrates it
    notes = FunctionClasses(db, "local")
    assert notes.at(["classifyImage"], at(150)) == ("bicycle", "motorcycle")
    assert notes.endpoint_at(["classifyImage"], at(150)) is None  # unknown: Monitor falls back to a guess
    # Before the functions are pointed elsewhere, the newest note gets the endpoint they called until now ...
    notes.fill_endpoint(["classifyImage"], "ep-a")
    assert notes.endpoint_at(["classifyImage"], at(150)) == "ep-a"
    notes.fill_endpoint(["classifyImage"], "ep-other")  # ... once: a noted endpoint is never overwritten
    assert notes.endpoint_at(["classifyImage"], at(150)) == "ep-a"
    # A new configuration is a new note from its moment on; earlier executions keep theirs.
    notes.record(["classifyImage"], ["bicycle", "motorcycle"], at=at(200), endpoint="ep-b")
    assert [notes.endpoint_at(["classifyImage"], at(t)) for t in (50, 150, 250)] == [None, "ep-a", "ep-b"]
    assert notes.at(["classifyImage"], at(250)) == ("bicycle", "motorcycle")
    # note() writes only when the names or the endpoint changed.
    rows = len(db.query("SELECT * FROM function_classes"))
    notes.note(["classifyImage"], ["bicycle", "motorcycle"], endpoint="ep-b")
    assert len(db.query("SELECT * FROM function_classes")) == rows
    notes.note(["classifyImage"], ["bicycle", "motorcycle"], endpoint="ep-c")
    assert len(db.query("SELECT * FROM function_classes")) == rows + 1


def test_the_endpoint_comes_from_the_first_function_that_noted_one(tmp_path):
    notes = FunctionClasses(Database(tmp_path / "scones.db"), "aws")
    notes.record(["serializeImageData"], ["a", "b"], at=at(100))  # a function with no ENDPOINT_NAME
    notes.record(["classifyImage"], ["a", "b"], at=at(100), endpoint="ep-a")
    assert notes.endpoint_at(["serializeImageData", "classifyImage"], at(120)) == "ep-a"
    assert notes.endpoint_at(["serializeImageData", "classifyImage"], at(90)) is None
    assert notes.endpoint_at([], at(120)) is None


def test_the_threshold_is_noted_from_schema_3_and_unknown_before(tmp_path):
    db = Database(tmp_path / "scones.db")
    db.migrate("function_classes", function_classes.MIGRATIONS[:2])  # as a version before thresholds left it
    with db.transaction() as conn:
        conn.execute("INSERT INTO function_classes(backend, function, since, classes, endpoint) VALUES "
                     "('local', 'filterInferences', 100, '[\"a\",\"b\"]', 'ep-a')")
    notes = FunctionClasses(Database(tmp_path / "scones.db"), "local")
    assert notes.threshold_at(["filterInferences"], at(150)) is None  # unknown, not a guess
    notes.note(["filterInferences"], ["a", "b"], endpoint="ep-a", threshold=0.93)  # same names and endpoint: a new note
    rows = len(db.query("SELECT * FROM function_classes"))
    notes.note(["filterInferences"], ["a", "b"], endpoint="ep-a", threshold=0.93)  # nothing changed: nothing written
    assert len(db.query("SELECT * FROM function_classes")) == rows
    notes.record(["filterInferences"], ["a", "b"], at=at(10_000_000_000), endpoint="ep-a", threshold=0.5)
    assert notes.threshold_at(["filterInferences"], at(150)) is None  # the older note in force then had none
    assert notes.threshold_at(["filterInferences"], at(time.time())) == 0.93
    assert notes.threshold_at(["filterInferences"], at(10_000_000_001)) == 0.5
    assert notes.threshold_at(["serializeImageData", "filterInferences"], at(10_000_000_001)) == 0.5


def test_an_executions_own_threshold_is_read_as_the_filter_reads_it():
    from backend.api import input_threshold

    assert input_threshold({"s3_key": "k", "threshold": 0.6}) == 0.6
    assert input_threshold({"threshold": "0.6"}) == 0.6  # the filter takes a string of a number too
    assert input_threshold({"statusCode": 200, "body": {"threshold": 0.25}}) == 0.25  # wrapped, as the console starts
    assert input_threshold({"statusCode": 200, "body": '{"threshold": 0.7}'}) == 0.7
    for none in ({}, {"threshold": None}, {"threshold": True}, {"threshold": "high"}, {"threshold": 1.5}, None, "x",
                 {"statusCode": 200, "body": "not json"}):
        assert input_threshold(none) is None, none
