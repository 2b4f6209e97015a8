"""The Workflow page's cards add up, and an execution AWS has not described yet is counted apart."""
from __future__ import annotations

from backend.api import THRESHOLD_ERROR, Execution
from ui.cards import execution_cards


def run(status: str, error: str | None = None, pending: bool = False) -> Execution:
    return Execution(name="e", arn="arn", state_machine="m", status=status, start="", stop=None, seconds=None,
                     error=error, cause=None, s3_key=None, label=None, confidence=None, details_pending=pending)


def test_cards_add_up_and_unread_executions_are_not_guessed():
    executions = ([run("SUCCEEDED")] * 3 + [run("SUCCEEDED", pending=True)] * 75 + [run("RUNNING")] * 2
                  + [run("FAILED", THRESHOLD_ERROR)] * 4 + [run("FAILED", "States.TaskFailed"), run("TIMED_OUT")]
                  + [run("FAILED", pending=True)] * 6)
    cards = execution_cards(executions)
    assert cards == {"executions": 92, "succeeded": 78, "below_threshold": 4, "failed_otherwise": 2, "running": 2,
                     "unread": 81, "unread_failed": 6}
    shown = cards["succeeded"] + cards["below_threshold"] + cards["failed_otherwise"] + cards["running"]
    assert shown + cards["unread_failed"] == cards["executions"]
