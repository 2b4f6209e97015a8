from __future__ import annotations

from typing import Any

from .. import errors
from ..runtime import Scope
from .base import ExecState, run_block
from .branches import run_jobs


class ParallelState(ExecState):
    """Runs every branch on a copy of its input; the result is the array of branch outputs."""

    type_name = "Parallel"

    def __init__(self, name, spec, compiler):
        super().__init__(name, spec, compiler)
        self.branches = [compiler.block(b, f"{name}.Branches[{i}]") for i, b in enumerate(spec["Branches"])]

    def attempt(self, scope: Scope, raw: Any, entered: float, retry_count: int) -> Any:
        ctx = self.context(scope, entered, retry_count)
        data = self.select_input(raw)
        branch_input = self.parameters.apply(data, ctx) if self.parameters is not None else data
        scope.emit("ParallelStateStarted")
        outcomes = run_jobs(scope, len(self.branches),
                            lambda i, child: run_block(self.branches[i], branch_input, child))
        scope.emit_sibling("ParallelStateSucceeded")
        return self.finish_result(raw, [o.value for o in outcomes], ctx)

    def attempt_failed(self, scope: Scope, failure: errors.StatesFailure) -> None:
        scope.emit("ParallelStateFailed")
