"""Hostile definitions and payloads end with a clear error, never a hang."""
from __future__ import annotations


import pytest

from backend.local.states import DefinitionInvalid, InvalidExecutionInput

from .support import INVOKE


def _chain(n: int) -> dict:
    states = {f"S{i}": {"Type": "Pass", "Next": f"S{i + 1}"} for i in range(n - 1)}
    states[f"S{n - 1}"] = {"Type": "Pass", "End": True}
    return {"StartAt": "S0", "States": states}


@pytest.mark.parametrize("loop", [
    {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Pass", "Next": "A"}}},
    {"StartAt": "C", "States": {"C": {"Type": "Choice", "Choices": [{"Variable": "$.never", "IsPresent": True, "Next": "Out"}], "Default": "C"},
                                "Out": {"Type": "Succeed"}}},
    {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 1, "Next": "W"}}},
], ids=["pass-cycle", "choice-self-loop", "wait-loop"])
def test_a_cycle_with_no_exit_ends_at_the_history_quota(engine, loop):
    record = engine.run_execution(loop)
    assert (record.status, record.error) == ("FAILED", "States.Runtime")
    assert "25,000" in record.cause
    history = engine.get_execution_history(record.arn)
    assert len(history) == 25000
    assert history[-1]["type"] == "ExecutionFailed"


def test_ten_thousand_states_run(engine):
    record = engine.run_execution(_chain(10000), {"n": 1})
    assert record.status == "SUCCEEDED" and record.output_value == {"n": 1}
    assert len(engine.get_execution_history(record.arn)) == 20002


def test_a_chain_longer_than_the_history_quota_fails_cleanly(engine):
    record = engine.run_execution(_chain(13000))
    assert record.error == "States.Runtime"
    assert len(engine.get_execution_history(record.arn)) == 25000


def test_nested_parallel_runs_up_to_the_nesting_limit_and_is_refused_beyond(engine):
    def nest(depth: int) -> dict:
        inner = {"StartAt": "Leaf", "States": {"Leaf": {"Type": "Pass", "Result": "leaf", "End": True}}}
        for d in range(depth):
            inner = {"StartAt": f"P{d}", "States": {f"P{d}": {"Type": "Parallel", "End": True, "Branches": [inner]}}}
        return inner

    record = engine.run_execution(nest(40))
    expected = "leaf"
    for _ in range(40):
        expected = [expected]
    assert record.output_value == expected
    with pytest.raises(DefinitionInvalid) as info:
        engine.start_execution(nest(200))
    assert "nest more than 40 levels" in str(info.value)
    opening = '{"StartAt":"P","States":{"P":{"Type":"Parallel","End":true,"Branches":['
    leaf = '{"StartAt":"L","States":{"L":{"Type":"Pass","End":true}}}'
    too_deep_text = opening * 400 + leaf + "]}}}" * 400  # deeper than Python's JSON parser goes
    with pytest.raises(DefinitionInvalid) as info:
        engine.start_execution(too_deep_text)
    assert "nested too deeply" in str(info.value)


def test_wide_parallel_and_huge_map_do_not_hang(engine):
    wide = {"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": True, "Branches": [
        {"StartAt": f"B{i}", "States": {f"B{i}": {"Type": "Pass", "Result": i, "End": True}}} for i in range(200)]}}}
    assert engine.run_execution(wide).output_value == list(range(200))
    huge_map = {"StartAt": "M", "States": {"M": {"Type": "Map", "End": True, "ItemProcessor": {
        "StartAt": "I", "States": {"I": {"Type": "Pass", "End": True}}}}}}
    record = engine.run_execution(huge_map, list(range(20000)))
    assert (record.status, record.error) == ("FAILED", "States.Runtime")


def test_huge_payloads(engine):
    with pytest.raises(InvalidExecutionInput):
        engine.start_execution(_chain(1), {"blob": "x" * 300_000})
    doubling = {"StartAt": "D", "States": {"D": {"Type": "Pass", "Parameters": {"a.$": "$", "b.$": "$"}, "Next": "D"}}}
    record = engine.run_execution(doubling, {"seed": "y" * 1000})
    assert record.error == "States.DataLimitExceeded"
    assert len(engine.get_execution_history(record.arn)) < 40


def test_deeply_nested_input_is_refused(engine):
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(InvalidExecutionInput):
        engine.start_execution(_chain(1), deep)


def test_intrinsics_cannot_build_huge_values(engine):
    definition = {"StartAt": "A", "States": {"A": {"Type": "Pass", "Parameters": {"r.$": "States.ArrayRange(1, 100000000, 1)"}, "End": True}}}
    record = engine.run_execution(definition)
    assert record.error == "States.IntrinsicFailure" and "the limit is" in record.cause  # refused, not built


def test_a_task_that_returns_garbage_fails_the_task(engine):
    engine.resolver = lambda resource, parameters, ctx: {"not": {"json"}}
    record = engine.run_execution({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": INVOKE, "End": True}}})
    assert record.error == "States.Runtime" and "not JSON" in record.cause
