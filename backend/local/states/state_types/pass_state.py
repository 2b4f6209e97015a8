from __future__ import annotations

from typing import Any

from ..runtime import Scope
from ..templates import Template
from .base import NOTHING, ROOT, State, _result_path, apply_result_path, serialize


class PassState(State):
    """Passes its input on, or a fixed Result, or what Parameters builds."""

    type_name = "Pass"

    def __init__(self, name, spec, compiler):
        super().__init__(name, spec, compiler)
        self.result = spec.get("Result", NOTHING)
        self.parameters = Template(spec["Parameters"], "Parameters") if "Parameters" in spec else None
        self.result_path = _result_path(spec.get("ResultPath"), "ResultPath" in spec)
        self.identity = (self.result is NOTHING and self.parameters is None and self.input_path is ROOT
                         and self.result_path is ROOT and self.output_path is ROOT)

    def run(self, scope: Scope, raw: Any):
        entered = self.enter(scope, raw)
        if self.identity:
            output = raw
        else:
            if self.result is not NOTHING:
                result = self.result
                self.select_input(raw)
            else:
                result = self.select_input(raw)
                if self.parameters is not None:
                    result = self.parameters.apply(result, self.context(scope, entered))
            output = self.select_output(apply_result_path(self.result_path, raw, result))
        self.exit(scope, serialize(output, f"output of state '{self.name}'"))
        return self.next_state, output
