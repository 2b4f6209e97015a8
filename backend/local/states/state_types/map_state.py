from __future__ import annotations

import uuid
from typing import Any

from .. import errors
from ..jsonpath import PathNotFound, compile_path
from ..runtime import History, Scope
from ..values import is_integer, is_number
from .base import ExecState, run_block
from .branches import run_jobs


class MapState(ExecState):
    """Runs its ItemProcessor (or Iterator) once per item of the array at ItemsPath."""

    type_name = "Map"
    parameters_field = "ItemSelector"

    def __init__(self, name, spec, compiler):
        if "Parameters" in spec and "ItemSelector" not in spec:
            spec = {**spec, "ItemSelector": spec["Parameters"]}
        super().__init__(name, spec, compiler)
        self.items_path = compile_path(spec.get("ItemsPath", "$"))
        processor = spec.get("ItemProcessor") or spec.get("Iterator")
        config = processor.get("ProcessorConfig") or {} if "ItemProcessor" in spec else {}
        self.distributed = config.get("Mode", "INLINE") == "DISTRIBUTED"
        self.processor = compiler.block(processor, f"{name}.{'ItemProcessor' if 'ItemProcessor' in spec else 'Iterator'}")
        self.max_concurrency = spec.get("MaxConcurrency", 0)
        self.max_concurrency_path = compile_path(spec["MaxConcurrencyPath"]) if "MaxConcurrencyPath" in spec else None
        self.tolerated_count = spec.get("ToleratedFailureCount")
        self.tolerated_count_path = _opt_path(spec, "ToleratedFailureCountPath")
        self.tolerated_percentage = spec.get("ToleratedFailurePercentage")
        self.tolerated_percentage_path = _opt_path(spec, "ToleratedFailurePercentagePath")

    def attempt(self, scope: Scope, raw: Any, entered: float, retry_count: int) -> Any:
        base_ctx = self.context(scope, entered, retry_count)
        data = self.select_input(raw)
        try:
            items = self.items_path.get(data)
        except PathNotFound:
            raise errors.StatesFailure(errors.RUNTIME, f"Invalid path '{self.items_path.text}' : No results for path (ItemsPath)") from None
        if not isinstance(items, list):
            raise errors.StatesFailure(errors.RUNTIME, f"Map state input must be an array, but ItemsPath '{self.items_path.text}' gave {type(items).__name__}")
        limit = self._number(self.max_concurrency, self.max_concurrency_path, data, "MaxConcurrencyPath")
        inputs = [self._item_input(scope, data, i, item, base_ctx) for i, item in enumerate(items)]
        scope.emit("MapStateStarted", "mapStateStartedEventDetails", {"length": len(items)})
        if self.distributed:
            return self._distributed(scope, raw, data, inputs, int(limit or 0), base_ctx)
        outcomes = run_jobs(scope, len(items), lambda i, child: self._iteration(child, i, inputs[i]), int(limit or 0))
        scope.emit_sibling("MapStateSucceeded")
        return self.finish_result(raw, [o.value for o in outcomes], base_ctx)

    def attempt_failed(self, scope: Scope, failure: errors.StatesFailure) -> None:
        scope.emit("MapStateFailed")

    def _item_input(self, scope: Scope, data: Any, index: int, item: Any, base_ctx) -> Any:
        if self.parameters is None:
            return item
        cache: list = []

        def ctx():
            if not cache:
                cache.append({**base_ctx(), "Map": {"Item": {"Index": index, "Value": item}}})
            return cache[0]

        return self.parameters.apply(data, ctx)

    def _iteration(self, scope: Scope, index: int, value: Any) -> Any:
        details = {"name": self.name, "index": index}
        scope.emit("MapIterationStarted", "mapIterationStartedEventDetails", details)
        try:
            output = run_block(self.processor, value, scope)
        except errors.StatesFailure:
            scope.emit_sibling("MapIterationFailed", "mapIterationFailedEventDetails", details, force=True)
            raise
        except errors.ExecutionHalted:
            if not scope.run.stopper.is_set():
                scope.emit("MapIterationAborted", "mapIterationAbortedEventDetails", details, force=True)
            raise
        before = scope.last
        scope.emit("MapIterationSucceeded", "mapIterationSucceededEventDetails", details)
        scope.follow = before  # AWS: an iteration that waited for this one starts from its last state's event
        return output

    # --- DISTRIBUTED mode: child executions with their own history and a failure tolerance ------

    def _distributed(self, scope: Scope, raw: Any, data: Any, inputs: list, limit: int, base_ctx) -> Any:
        count_limit = self._number(self.tolerated_count, self.tolerated_count_path, data, "ToleratedFailureCountPath")
        pct_limit = self._number(self.tolerated_percentage, self.tolerated_percentage_path, data,
                                 "ToleratedFailurePercentagePath", integer=False)
        run_arn = f"{scope.run.info.arn.replace(':execution:', ':mapRun:')}/{self.name}:{uuid.uuid4()}"
        scope.emit("MapRunStarted", "mapRunStartedEventDetails", {"mapRunArn": run_arn})
        outcomes = run_jobs(scope, len(inputs), lambda i, child: run_block(self.processor, inputs[i], child),
                            limit, tolerate_failures=True, separate_history=History)
        failed = sum(1 for o in outcomes if not o.ok)
        total = len(outcomes)
        if failed:
            exceeded = count_limit is None and pct_limit is None  # no tolerance declared: none tolerated
            if count_limit is not None and failed > count_limit:
                exceeded = True
            if pct_limit is not None and failed * 100.0 / total > pct_limit:
                exceeded = True
            if exceeded:
                scope.emit("MapRunFailed")
                raise errors.StatesFailure(
                    errors.EXCEED_TOLERATED_FAILURE_THRESHOLD,
                    f"The specified tolerated failure threshold was exceeded: {failed} of {total} item(s) failed.",
                )
        scope.emit("MapRunSucceeded")
        scope.emit_sibling("MapStateSucceeded")
        return self.finish_result(raw, [o.value if o.ok else None for o in outcomes], base_ctx)

    @staticmethod
    def _number(fixed, path, data, field, integer=True):
        if path is None:
            return fixed
        try:
            value = path.get(data)
        except PathNotFound:
            raise errors.StatesFailure(errors.RUNTIME, f"Invalid path '{path.text}' : No results for path ({field})") from None
        ok = is_integer(value) if integer else is_number(value)
        if not ok or value < 0:
            raise errors.StatesFailure(errors.RUNTIME, f"{field} must reference a non-negative number, got {value!r}")
        return value


def _opt_path(spec: dict, field: str):
    return compile_path(spec[field]) if field in spec else None
