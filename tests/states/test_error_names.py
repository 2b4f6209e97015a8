"""Error names as AWS gives them: how Retry/Catch match them, and a case for each name."""
from __future__ import annotations

import pytest

from backend.local.states.errors import error_matches

from .support import INVOKE, load_cases

REQUIRED = [
    "States.TaskFailed", "States.Timeout", "States.HeartbeatTimeout", "States.Runtime", "States.DataLimitExceeded",
    "States.IntrinsicFailure", "States.NoChoiceMatched", "States.ResultPathMatchFailure",
    "States.ExceedToleratedFailureThreshold",
]
# States.ParameterPathFailure is matched by name (a task may raise it), but a Parameters path that names
# nothing is States.Runtime, as AWS reports it (cases/paths.json).


@pytest.mark.parametrize("error_equals,error,matches", [
    (["States.ALL"], "Lambda.ServiceException", True),
    (["States.ALL"], "States.Timeout", True),
    (["States.ALL"], "States.DataLimitExceeded", False),  # terminal: only caught when named
    (["States.DataLimitExceeded"], "States.DataLimitExceeded", True),
    (["States.ALL"], "States.Runtime", False),  # never retried or caught
    (["States.Runtime"], "States.Runtime", False),
    (["States.TaskFailed"], "Custom.Error", True),
    (["States.TaskFailed"], "States.HeartbeatTimeout", True),
    (["States.TaskFailed"], "States.Timeout", False),  # the one known error TaskFailed leaves out
    (["States.Timeout"], "States.Timeout", True),
    (["A", "B"], "B", True),
    (["A", "B"], "C", False),
    (["States.BranchFailed"], "BranchError", False),
])
def test_error_matching(error_equals, error, matches):
    assert error_matches(error_equals, error) is matches


def test_every_error_name_has_a_case_that_produces_it():
    produced = {c["expect"].get("error") for c in load_cases()}
    assert set(REQUIRED) <= produced, set(REQUIRED) - produced


def test_a_failing_branch_reports_its_own_error_not_branch_failed(engine):
    # AWS (and moto) fail a Parallel state with the failing branch's error name; States.BranchFailed
    # is a name a Catch may list and a task may raise, but the engine does not substitute it.
    definition = {"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": True,
        "Catch": [{"ErrorEquals": ["States.BranchFailed"], "Next": "Wrong"}],
        "Branches": [{"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "BranchError"}}}]},
        "Wrong": {"Type": "Succeed"}}}
    record = engine.run_execution(definition)
    assert (record.status, record.error) == ("FAILED", "BranchError")


def test_branch_failed_raised_by_a_task_is_caught_by_name(engine):
    definition = {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": INVOKE, "End": True,
        "Parameters": {"FunctionName": "fail", "Payload": {"error": "States.BranchFailed", "cause": "sub-flow"}},
        "Catch": [{"ErrorEquals": ["States.BranchFailed"], "Next": "Handled"}]},
        "Handled": {"Type": "Pass", "End": True}}}
    record = engine.run_execution(definition)
    assert record.output_value == {"Error": "States.BranchFailed", "Cause": "sub-flow"}
