"""backend/workflow_defs.py: the console's per-state view of Map and Parallel states (run on the local engine),
an upload over the pixel limit refused from its header, and the invalid-JSON sentence."""
from __future__ import annotations

import io
import itertools
import warnings
from typing import Any

import pytest
from PIL import Image, ImageFile

from backend.api import ValidationError
from backend.local.db import Database
from backend.local.states import FakeClock, StatesEngine, TaskError, validate_definition
from backend.workflow_defs import MAX_UPLOAD_PIXELS, encode_upload, parse_definition, state_runs
from tests.states.support import INVOKE, lambda_resolver


@pytest.fixture
def engine(tmp_path):
    eng = StatesEngine(Database(tmp_path / "scones.db"), lambda_resolver, clock=FakeClock())
    yield eng
    eng.close()


def task(function: str, **fields: Any) -> dict:
    return {"Type": "Task", "Resource": INVOKE, "Parameters": {"FunctionName": function, "Payload.$": "$"},
            "OutputPath": "$.Payload", **fields}


def runs_of(engine: StatesEngine, definition: dict, input: Any) -> tuple[str, dict[str, Any]]:
    record = engine.run_execution(definition, input)
    runs = state_runs(definition, engine.get_execution_history(record.arn))
    assert [r.name for r in runs] == list(definition["States"])  # top-level states only, inner ones never
    return record.status, {r.name: r for r in runs}


FAIL_ITERATOR = {"StartAt": "Bad", "States": {"Bad": {"Type": "Fail", "Error": "Boom", "Cause": "bad item"}}}


def test_a_map_whose_iteration_fails_is_the_failed_state(engine):
    definition = {"StartAt": "Prepare", "States": {
        "Prepare": {"Type": "Pass", "Next": "Each"},
        "Each": {"Type": "Map", "ItemsPath": "$.items", "Iterator": FAIL_ITERATOR, "Next": "After"},
        "After": {"Type": "Pass", "End": True}}}
    status, runs = runs_of(engine, definition, {"items": [1, 2]})
    assert status == "FAILED"
    assert runs["Prepare"].status == "succeeded"
    each = runs["Each"]
    assert (each.status, each.error, each.cause) == ("failed", "Boom", "bad item")
    assert each.input == {"items": [1, 2]} and each.output is None
    assert runs["After"].status == "not_run"


def test_a_parallel_with_a_failing_branch_is_the_failed_state(engine):
    definition = {"StartAt": "Both", "States": {"Both": {"Type": "Parallel", "End": True, "Branches": [
        {"StartAt": "Fine", "States": {"Fine": {"Type": "Pass", "End": True}}},
        {"StartAt": "Call", "States": {"Call": task("fail", End=True)}}]}}}
    status, runs = runs_of(engine, definition, {"error": "Branch.Broke", "cause": "branch two"})
    assert status == "FAILED"
    both = runs["Both"]
    assert (both.status, both.error, both.cause) == ("failed", "Branch.Broke", "branch two")


def test_a_caught_map_failure_is_caught_with_its_error(engine):
    definition = {"StartAt": "Each", "States": {
        "Each": {"Type": "Map", "ItemsPath": "$.items", "Iterator": FAIL_ITERATOR,
                 "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.problem", "Next": "Recover"}],
                 "Next": "Recover"},
        "Recover": {"Type": "Pass", "End": True}}}
    status, runs = runs_of(engine, definition, {"items": [1]})
    assert status == "SUCCEEDED"
    each = runs["Each"]
    assert (each.status, each.error, each.cause) == ("caught", "Boom", "bad item")
    assert each.output == {"items": [1], "problem": {"Error": "Boom", "Cause": "bad item"}}
    assert runs["Recover"].status == "succeeded"


def test_a_caught_parallel_failure_that_drops_the_error_still_names_it(engine):
    # ResultPath null keeps the input: the error comes from the inner task's TaskFailed.
    definition = {"StartAt": "Both", "States": {
        "Both": {"Type": "Parallel", "Branches": [{"StartAt": "Call", "States": {"Call": task("fail", End=True)}}],
                 "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "Done"}], "Next": "Done"},
        "Done": {"Type": "Succeed"}}}
    status, runs = runs_of(engine, definition, {"error": "Inner.Failed", "cause": "why"})
    assert status == "SUCCEEDED"
    assert (runs["Both"].status, runs["Both"].error, runs["Both"].cause) == ("caught", "Inner.Failed", "why")


def test_a_map_that_succeeds_is_succeeded_even_when_an_inner_failure_was_caught_inside(engine):
    iterator = {"StartAt": "Call", "States": {
        "Call": task("fail", Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Fallback"}], End=True),
        "Fallback": {"Type": "Pass", "Result": "fell back", "End": True}}}
    definition = {"StartAt": "Each", "States": {"Each": {"Type": "Map", "Iterator": iterator, "End": True}}}
    status, runs = runs_of(engine, definition, [{"error": "Inner", "cause": "x"}, {"error": "Inner", "cause": "y"}])
    assert status == "SUCCEEDED"
    each = runs["Each"]
    assert (each.status, each.error, each.cause) == ("succeeded", None, None)
    assert each.output == ["fell back", "fell back"]


def test_a_map_retried_after_a_failure_is_succeeded_without_the_error(tmp_path):
    calls = itertools.count()

    def first_call_fails(resource, parameters, ctx):
        if next(calls) == 0:
            raise TaskError("Flaky.Once", "first call")
        return {"Payload": parameters["Payload"]}

    definition = {"StartAt": "Each", "States": {"Each": {
        "Type": "Map", "Iterator": {"StartAt": "Call", "States": {"Call": task("any", End=True)}},
        "MaxConcurrency": 1, "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 1}], "End": True}}}
    with StatesEngine(Database(tmp_path / "scones.db"), first_call_fails, clock=FakeClock()) as eng:
        status, runs = runs_of(eng, definition, [1, 2])
    assert status == "SUCCEEDED"
    assert (runs["Each"].status, runs["Each"].error, runs["Each"].output) == ("succeeded", None, [1, 2])


def test_a_nested_map_failure_is_the_top_level_state_s(engine):
    inner = {"Type": "Map", "Iterator": FAIL_ITERATOR, "End": True}
    definition = {"StartAt": "Outer", "States": {
        "Outer": {"Type": "Map", "Iterator": {"StartAt": "Inner", "States": {"Inner": inner}}, "End": True}}}
    status, runs = runs_of(engine, definition, [[1, 2], [3]])
    assert status == "FAILED"
    assert (runs["Outer"].status, runs["Outer"].error, runs["Outer"].cause) == ("failed", "Boom", "bad item")


def test_a_task_s_retry_and_catch_read_as_before(engine):
    definition = {"StartAt": "Call", "States": {
        "Call": task("fail", Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Low"}], Next="Low"),
        "Low": {"Type": "Fail", "Error": "LOW", "Cause": "low"}}}
    status, runs = runs_of(engine, definition, {"error": "THRESHOLD_CONFIDENCE_NOT_MET", "cause": "0.6"})
    assert status == "FAILED"
    assert (runs["Call"].status, runs["Call"].error) == ("caught", "THRESHOLD_CONFIDENCE_NOT_MET")
    assert (runs["Low"].status, runs["Low"].error, runs["Low"].cause) == ("failed", "LOW", "low")


# --- uploads over the pixel limit ----------------------------------------------------------------------


def png(mode: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


@pytest.mark.parametrize("size", [(7100, 7100), (10000, 10000)])
def test_an_upload_over_the_pixel_limit_is_refused_without_a_warning(size):
    data = png("1", size)
    assert size[0] * size[1] > MAX_UPLOAD_PIXELS and len(data) < 2_000_000  # small on disk, huge decoded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValidationError) as info:
            encode_upload("huge.png", data, (32, 32))
    # how big it is, and the limit (it said only 'too many pixels')
    assert str(info.value) == (f"huge.png has {size[0] * size[1]:,} pixels; the limit is {MAX_UPLOAD_PIXELS:,} "
                               "pixels: send a smaller image.")
    assert [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []


def test_an_upload_over_the_limit_is_refused_from_its_header_before_any_pixel_is_decoded(monkeypatch):
    import backend.workflow_defs as defs

    data = png("L", (32, 32))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after: encode_upload sets it
    monkeypatch.setattr(defs, "MAX_UPLOAD_PIXELS", 32 * 32 - 1)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("the pixels were decoded"))
    with pytest.raises(ValidationError) as info:
        defs.encode_upload("small.png", data, (32, 32))
    # Pillow's own check (its limit is ours) read the size from the header, so the sentence gives the count
    assert str(info.value) == "small.png has 1,024 pixels; the limit is 1,023 pixels: send a smaller image."


def test_an_upload_within_the_limit_is_stored_at_the_model_size():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stored = encode_upload("ok.png", png("L", (32, 32)), (32, 32))
    img = Image.open(io.BytesIO(stored))
    assert (img.format, img.size, img.mode) == ("PNG", (32, 32), "RGB")


# --- the invalid-JSON sentence -------------------------------------------------------------------------


def test_an_unterminated_string_reads_cleanly_on_import_and_validate():
    text = '{"a": "abc'
    with pytest.raises(ValidationError) as info:
        parse_definition(text)
    assert str(info.value) == ("The definition is not valid JSON: unterminated string starting at line 1, "
                               "column 7 (char 6).")
    [diagnostic] = validate_definition(text)
    assert diagnostic.message == ("the definition is not valid JSON: unterminated string starting at line 1, "
                                  "column 7 (char 6)")


@pytest.mark.parametrize("text, clause", [
    ("", "expecting value at line 1, column 1 (char 0)"),
    ('{"StartAt": "A",\n  "States": {},}', "expecting property name enclosed in double quotes at line 2, column 16 (char 32)"),
    ("{} {}", "extra data at line 1, column 4 (char 3)"),
])
def test_other_json_errors_name_the_place(text, clause):
    with pytest.raises(ValidationError) as info:
        parse_definition(text)
    assert str(info.value) == f"The definition is not valid JSON: {clause}."
    assert " at at " not in str(info.value)


def test_a_definition_nested_too_deeply_is_one_sentence():
    with pytest.raises(ValidationError, match="nested too deeply"):
        parse_definition("[" * 100_000)
