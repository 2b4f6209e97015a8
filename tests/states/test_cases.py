"""The table-driven suite: every case file under cases/ run through the engine.

Each case is a definition, an input and what must come out (status, output, error, cause, the
history's event types, the waits the execution asked for). Waits and retry intervals run on a fake
clock, so the whole table takes seconds.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest

from backend.local.states import FakeClock, StatesEngine

from .support import check_outcome, lambda_resolver, load_cases, machine_name

CASES = load_cases()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case, shared_db):
    clock = FakeClock()
    engine = StatesEngine(shared_db, lambda_resolver, clock=clock)
    try:
        record = engine.run_execution(case["definition"], json.dumps(case["input"]), name="exec",
                                      state_machine_name=machine_name(case))
        history = engine.get_execution_history(record.arn)
    finally:
        engine.close()
    expect = case["expect"]
    check_outcome(expect, record.status, record.output_value, record.error, record.cause)
    types = [e["type"] for e in history]
    if "history" in expect:
        assert types == expect["history"]
    counts = Counter(types)
    for etype, n in expect.get("history_counts", {}).items():
        assert counts[etype] == n, (etype, counts)
    for etype in expect.get("history_contains", []):
        assert etype in counts, (etype, types)
    for etype, details in expect.get("events", {}).items():
        event = next(e for e in history if e["type"] == etype)
        for key, value in details.items():
            assert event[key] == value
    if "sleeps" in expect:
        assert clock.sleeps == expect["sleeps"]
    if "sleeps_at_most" in expect:
        assert len(clock.sleeps) == len(expect["sleeps_at_most"])
        assert all(0 <= s <= top for s, top in zip(clock.sleeps, expect["sleeps_at_most"]))
    _check_history_shape(history, record)


def _check_history_shape(history: list[dict], record) -> None:
    """Ids count up from 1, each previousEventId points back, the last event ends the execution."""
    assert [e["id"] for e in history] == list(range(1, len(history) + 1))
    assert history[0]["type"] == "ExecutionStarted" and history[0]["previousEventId"] == 0
    assert all(0 <= e["previousEventId"] < e["id"] for e in history)
    final = {"SUCCEEDED": "ExecutionSucceeded", "FAILED": "ExecutionFailed", "TIMED_OUT": "ExecutionTimedOut",
             "ABORTED": "ExecutionAborted"}[record.status]
    assert history[-1]["type"] == final
    if record.status == "FAILED" and record.error is not None:
        assert history[-1]["executionFailedEventDetails"]["error"] == record.error
