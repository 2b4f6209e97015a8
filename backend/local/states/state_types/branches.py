"""Running branches side by side: Parallel's branches and Map's iterations.

Each job runs in its own Scope on a worker thread (at most `limit` at a time; a single job runs on
the calling thread). The first failure stops the siblings unless failures are tolerated. The
caller wakes when every job is done, when a job fails, or when the whole execution is stopped.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from .. import errors
from ..runtime import Scope

MAX_THREADS = 40  # an inline Map runs up to 40 iterations at once on AWS
STRAGGLER_GRACE = 2.0  # seconds to let stopped siblings wind down before moving on


class Outcome:
    __slots__ = ("ok", "value", "failure", "last")

    def __init__(self) -> None:
        self.ok = False
        self.value: Any = None
        self.failure: errors.StatesFailure | None = None
        self.last = 0


def run_jobs(parent: Scope, count: int, job: Callable[[int, Scope], Any], limit: int = 0,
             tolerate_failures: bool = False, separate_history: Callable[[], Any] | None = None) -> list[Outcome]:
    """Run job(i, scope) for i in range(count); raises the first failure unless tolerated."""
    group = parent.stopper.child()
    outcomes = [Outcome() for _ in range(count)]
    cond = threading.Condition()
    state = {"next": 0, "running_workers": 0, "failure": None}
    workers = min(count, limit if limit > 0 else count, MAX_THREADS)

    def worker() -> None:
        after = 0  # the last event of this worker's previous job: the next job it takes starts from there
        try:
            while True:
                with cond:
                    if group.is_set() or state["next"] >= count:
                        return
                    i = state["next"]
                    state["next"] += 1
                child = parent.fork(group, separate_history() if separate_history else None)
                if limit == 1 and after and child.history is parent.history:
                    child.last = after  # one at a time (MaxConcurrency 1): AWS's history chains the iterations
                outcome = outcomes[i]
                try:
                    outcome.value = job(i, child)
                    outcome.ok = True
                except errors.StatesFailure as failure:
                    outcome.failure = failure
                    if not tolerate_failures:
                        with cond:
                            if state["failure"] is None:
                                state["failure"] = failure
                        group.set()
                except errors.ExecutionHalted:
                    pass
                finally:
                    shared = child.history is parent.history  # a DISTRIBUTED Map's child keeps its own history
                    outcome.last = child.last if shared else 0
                    after = (child.follow or child.last) if shared else 0
        finally:
            with cond:
                state["running_workers"] -= 1
                cond.notify_all()

    def wake() -> None:
        with cond:
            cond.notify_all()

    parent.stopper.on_set(wake)
    group.on_set(wake)
    state["running_workers"] = workers
    threads = [threading.Thread(target=worker, daemon=True, name="states-branch") for _ in range(workers - 1)]
    for t in threads:
        t.start()
    if workers:
        worker()
    with cond:
        while state["running_workers"] > 0 and not parent.stopper.is_set():
            if state["failure"] is not None:
                cond.wait_for(lambda: state["running_workers"] == 0, timeout=STRAGGLER_GRACE)
                break
            cond.wait()
    parent.check()
    last_ids = [o.last for o in outcomes if o.last]
    if last_ids:
        parent.last = max(parent.last, max(last_ids))
    if state["failure"] is not None:
        raise state["failure"]
    return outcomes
