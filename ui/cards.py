"""The Workflow page's metric cards, counted from Execution records, and its texts (no Streamlit here, so they
test alone)."""
from __future__ import annotations

from typing import Iterable

from backend.api import THRESHOLD_ERROR


def execution_cards(executions: Iterable) -> dict[str, int]:
    """Executions, Succeeded, Below threshold, Failed otherwise, Running, and the unread ones.

    An execution whose details are not read yet (AWS) has its status from ListExecutions, which is right,
    but no error: a FAILED one cannot be told below the threshold or not, so it stays out of both cards
    (`unread_failed`) until it is read. The five cards then add up to Executions minus `unread_failed`."""
    cards = {"executions": 0, "succeeded": 0, "below_threshold": 0, "failed_otherwise": 0, "running": 0,
             "unread": 0, "unread_failed": 0}
    for e in executions:
        cards["executions"] += 1
        cards["unread"] += bool(e.details_pending)
        if e.status == "SUCCEEDED":
            cards["succeeded"] += 1
        elif e.status == "RUNNING":
            cards["running"] += 1
        elif e.details_pending:
            cards["unread_failed"] += 1
        elif e.error == THRESHOLD_ERROR:
            cards["below_threshold"] += 1
        else:
            cards["failed_otherwise"] += 1
    return cards


def lost_endpoint_text(endpoint: str, machines: list[str], status: str | None, serving: bool) -> str:
    """The warning for state machines whose endpoint is gone or not serving, with the fix there is: another
    endpoint to choose below when one is InService, else a deployment first."""
    why = "no longer exists" if status is None else f"is {status}"
    fix = ("Choose an InService endpoint below and press *Update the workflow*, or deploy one on the Deploy page."
           if serving else "No endpoint is InService: deploy a model on the Deploy page, then come back and press "
                           "*Update the workflow* with its endpoint.")
    return (f"The endpoint {endpoint} that {', '.join(machines)} call{'s' if len(machines) == 1 else ''} {why}: "
            f"{'its' if len(machines) == 1 else 'their'} executions will fail at the step that invokes it. {fix}")
