"""The Workflow page's metric cards, counted from Execution records (no Streamlit here, so they test alone)."""
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
