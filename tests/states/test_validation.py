"""Validation before running: every case in cases/validation.json names the (state, field)
pairs its diagnostics must include; valid definitions must give none."""
from __future__ import annotations

import json

import pytest

from backend.api import ValidationError
from backend.local.states import DefinitionInvalid, Diagnostic, validate_definition

from .support import CASES_DIR

CASES = json.loads((CASES_DIR / "validation.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_validation_case(case):
    diagnostics = validate_definition(case["definition"])
    assert all(isinstance(d, Diagnostic) and d.message for d in diagnostics)
    if case.get("valid"):
        assert diagnostics == []
        return
    found = {(d.state, d.field) for d in diagnostics}
    for state, field in case["diagnostics"]:
        assert (state, field) in found, (state, field, diagnostics)


@pytest.mark.parametrize("case", [c for c in CASES if not c.get("valid")][:12], ids=lambda c: c["name"])
def test_invalid_definition_is_refused_before_running(case, engine):
    with pytest.raises(DefinitionInvalid) as info:
        engine.start_execution(case["definition"], {}, name="refused")
    assert isinstance(info.value, ValidationError)
    assert info.value.diagnostics == validate_definition(case["definition"])
    assert engine.list_executions() == []


def test_definition_as_json_text_and_dict_agree():
    definition = {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Ghost"}}}
    assert validate_definition(json.dumps(definition)) == validate_definition(definition)
    assert validate_definition(json.dumps(definition)) == [Diagnostic("A", "Next", "names no state 'Ghost' in this scope")]


def test_diagnostic_is_frozen_and_readable():
    d = Diagnostic("A", "Next", "names no state 'Ghost' in this scope")
    with pytest.raises(AttributeError):
        d.state = "B"  # type: ignore[misc]
    assert str(d) == "state 'A', Next: names no state 'Ghost' in this scope"
    # a message that starts with its field says it once: not "the definition, StartAt: StartAt names ..."
    assert str(Diagnostic("", "StartAt", "StartAt names no state 'X'")) == "the definition: StartAt names no state 'X'"


def test_definition_too_large():
    states = {f"S{i}": {"Type": "Pass", "Comment": "x" * 200, "Next": f"S{i + 1}"} for i in range(6000)}
    states["S6000"] = {"Type": "Succeed"}
    text = json.dumps({"StartAt": "S0", "States": states})
    assert len(text) > 1024 * 1024
    assert [d.message for d in validate_definition(text)] == ["the definition is larger than 1,048,576 bytes"]


def test_nesting_too_deep_is_a_diagnostic_not_a_crash():
    inner = {"StartAt": "Leaf", "States": {"Leaf": {"Type": "Pass", "End": True}}}
    for depth in range(60):
        inner = {"StartAt": f"P{depth}", "States": {f"P{depth}": {"Type": "Parallel", "End": True, "Branches": [inner]}}}
    diagnostics = validate_definition(inner)
    assert any("nest more than 40 levels" in d.message for d in diagnostics)
    text = json.dumps(inner)
    assert validate_definition(text)  # JSON text of the same: refused too (by depth or by the parser)
