"""Differential tests: the same definitions run on this engine and on moto's Step Functions
interpreter (LocalStack's, inside moto 5), compared on status, output and error name, and for
definitions whose Parallel and Map states run in order on their histories' ids, previousEventIds and types.

Only definitions without Task states take part (moto cannot run our resolver). Cases marked
`moto_differs` are where AWS's documented behaviour and moto disagree: the engine follows AWS
(test_cases.py asserts the AWS behaviour), and the case is left out of this comparison.
"""
from __future__ import annotations

import json
import time

import boto3
import pytest
from moto import mock_aws

from backend.local.states import FakeClock, StatesEngine

from .support import has_task, lambda_resolver, load_cases, machine_name

CASES = [c for c in load_cases() if not has_task(c["definition"]) and "moto_differs" not in c]
ROLE = "arn:aws:iam::123456789012:role/states"


def test_enough_definitions_are_compared():
    assert len(CASES) >= 40


@pytest.fixture(scope="module")
def moto_results():
    """Start every case on moto at once (moto runs them on threads), then collect the outcomes."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        client = boto3.client("stepfunctions", region_name="us-east-1")
        arns = {}
        for case in CASES:
            sm = client.create_state_machine(name=machine_name(case), definition=json.dumps(case["definition"]),
                                             roleArn=ROLE)["stateMachineArn"]
            arns[case["name"]] = client.start_execution(stateMachineArn=sm, name="exec",
                                                        input=json.dumps(case["input"]))["executionArn"]
        results = {}
        deadline = time.monotonic() + 30
        pending = dict(arns)
        while pending and time.monotonic() < deadline:
            for name, arn in list(pending.items()):
                d = client.describe_execution(executionArn=arn)
                if d["status"] != "RUNNING":
                    events = client.get_execution_history(executionArn=arn, maxResults=1000)["events"]
                    results[name] = {**d, "events": [(e["id"], e["previousEventId"], e["type"]) for e in events]}
                    del pending[name]
            time.sleep(0.02)
        assert not pending, f"moto did not finish: {sorted(pending)}"
        yield results


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_same_as_moto(case, moto_results, shared_db):
    engine = StatesEngine(shared_db, lambda_resolver, clock=FakeClock())
    try:
        mine = engine.run_execution(case["definition"], json.dumps(case["input"]), name="exec",
                                    state_machine_name="diff-" + machine_name(case)[:70])
    finally:
        engine.close()
    theirs = moto_results[case["name"]]
    their_output = _moto_output(theirs.get("output"))
    assert mine.status == theirs["status"], (mine.error, mine.cause, theirs.get("error"), theirs.get("cause"))
    if mine.status == "SUCCEEDED":
        if "match" in case["expect"]:  # random or time-dependent values: compare the keys only
            assert set(mine.output_value) == set(their_output)
        else:
            assert mine.output_value == their_output
    else:
        assert mine.error == theirs.get("error")


def _interleaves(definition) -> bool:
    """Parallel states of two or more branches and Map states that may run iterations side by side: moto runs
    them concurrently, so their events interleave by chance. One branch, or MaxConcurrency 1, runs in order."""
    if isinstance(definition, dict):
        if definition.get("Type") == "Parallel" and len(definition.get("Branches", ())) > 1:
            return True
        if definition.get("Type") == "Map" and definition.get("MaxConcurrency") != 1:
            return True
        return any(_interleaves(v) for v in definition.values())
    if isinstance(definition, list):
        return any(_interleaves(v) for v in definition)
    return False


SEQUENTIAL = [c for c in CASES if not _interleaves(c["definition"])]


def test_enough_histories_are_compared():
    assert len(SEQUENTIAL) >= 100
    # Parallel and Map take part too where they run in order: Exited after Succeeded, MapStateFailed after
    # MapIterationFailed, and each sequential iteration after the one before have AWS's previousEventIds
    assert sum('"Parallel"' in json.dumps(c["definition"]) for c in SEQUENTIAL) >= 2
    assert sum('"Map"' in json.dumps(c["definition"]) for c in SEQUENTIAL) >= 3


@pytest.mark.parametrize("case", SEQUENTIAL, ids=[c["name"] for c in SEQUENTIAL])
def test_same_history_as_moto(case, moto_results, shared_db):
    """Event by event: AWS's first state entry points back to 0, not to ExecutionStarted (AWS's own history
    example, and moto's interpreter, whose expectations are recorded against AWS)."""
    _, events = run_with_history(case, shared_db, "hist-")
    assert events == moto_results[case["name"]]["events"]


def run_with_history(case, db, prefix: str):
    """(the execution record, its history as (id, previousEventId, type)) of one case run on this engine."""
    engine = StatesEngine(db, lambda_resolver, clock=FakeClock())
    try:
        mine = engine.run_execution(case["definition"], json.dumps(case["input"]), name="exec",
                                    state_machine_name=prefix + machine_name(case)[:70])
        return mine, [(e["id"], e["previousEventId"], e["type"]) for e in engine.get_execution_history(mine.arn)]
    finally:
        engine.close()


def _moto_output(text: str | None):
    """moto writes a string output without JSON quotes ('yes' where AWS writes '"yes"')."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


@pytest.mark.parametrize("definition,started,first", [
    ({"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": True, "Branches": [
        {"StartAt": f"B{i}", "States": {f"B{i}": {"Type": "Pass", "End": True}}} for i in range(3)]}}},
     "ParallelStateStarted", "PassStateEntered"),
    ({"StartAt": "M", "States": {"M": {"Type": "Map", "End": True, "Iterator": {
        "StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}}}},
     "MapStateStarted", "MapIterationStarted"),
], ids=["parallel", "map"])
def test_side_by_side_branches_each_start_from_the_started_event(definition, started, first, shared_db):
    """Branches and iterations that run side by side each point back to ...StateStarted, as on moto (its order
    of events is left to chance, this is not): only MaxConcurrency 1 chains an iteration to the one before."""
    engine = StatesEngine(shared_db, lambda_resolver, clock=FakeClock())
    try:
        run = engine.run_execution(definition, json.dumps([1, 2, 3]), name="exec",
                                   state_machine_name=f"side-by-side-{started}")
        events = engine.get_execution_history(run.arn)
    finally:
        engine.close()
    start_id = next(e["id"] for e in events if e["type"] == started)
    assert [e["previousEventId"] for e in events if e["type"] == first] == [start_id] * 3


INTERLEAVED = [c for c in CASES if _interleaves(c["definition"])]


def test_enough_interleaved_histories_are_compared():
    assert len(INTERLEAVED) >= 5


@pytest.mark.parametrize("case", INTERLEAVED, ids=[c["name"] for c in INTERLEAVED])
def test_interleaved_histories_hold_the_same_events_as_motos(case, moto_results, shared_db):
    """Where branches or iterations run side by side their events interleave by chance on moto, so the order is
    not compared: the events themselves are, as a multiset of types, and each event's predecessor is one
    that exists earlier in the history (ids are 1..n, previousEventId < id)."""
    from collections import Counter

    mine, events = run_with_history(case, shared_db, "mix-")
    theirs = moto_results[case["name"]]["events"]
    if mine.status == "SUCCEEDED":
        assert Counter(t for _, _, t in events) == Counter(t for _, _, t in theirs)
    else:  # how many side-by-side iterations start, end or are aborted before the failure stops them is chance too
        assert {t for _, _, t in events if t.endswith("Failed")} == {t for _, _, t in theirs if t.endswith("Failed")}
    assert [i for i, _, _ in events] == list(range(1, len(events) + 1))
    assert all(0 <= prev < i for i, prev, _ in events)
    # this engine ends with the execution's end; moto's concurrent iterations may append events after it
    assert events[0][2] == "ExecutionStarted" and events[-1][2] == f"Execution{mine.status.title()}"
    assert events[-1][2] in {t for _, _, t in theirs}
