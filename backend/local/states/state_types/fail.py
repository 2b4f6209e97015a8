from __future__ import annotations

from typing import Any

from .. import errors, intrinsics
from ..jsonpath import JsonPath, PathNotFound
from ..runtime import Scope
from ..templates import compile_dynamic_value
from .base import State


class FailState(State):
    """Stops the execution (or the branch) with an error name and cause, fixed or read from the input."""

    type_name = "Fail"
    has_io_paths = False

    def __init__(self, name, spec, compiler):
        super().__init__(name, spec, compiler)
        self.error = spec.get("Error")
        self.cause = spec.get("Cause")
        self.error_path = compile_dynamic_value(spec["ErrorPath"], "ErrorPath") if "ErrorPath" in spec else None
        self.cause_path = compile_dynamic_value(spec["CausePath"], "CausePath") if "CausePath" in spec else None

    def run(self, scope: Scope, raw: Any):
        entered = self.enter(scope, raw)
        error = self._read(self.error_path, "ErrorPath", scope, raw, entered) if self.error_path else self.error
        cause = self._read(self.cause_path, "CausePath", scope, raw, entered) if self.cause_path else self.cause
        raise errors.StatesFailure(error, cause)

    def _read(self, source, field: str, scope: Scope, raw: Any, entered: float) -> str:
        ctx = self.context(scope, entered)
        try:
            if isinstance(source, JsonPath):
                value = source.get(ctx() if source.context else raw)
            else:
                value = intrinsics.evaluate(source, raw, ctx)
        except PathNotFound as e:
            raise errors.StatesFailure(
                errors.RUNTIME, f"The JSONPath '{e.args[0]}' specified for the field '{field}' could not be found in the input"
            ) from None
        if not isinstance(value, str):
            raise errors.StatesFailure(errors.RUNTIME, f"The value of {field} must be a string, got {value!r}")
        return value
