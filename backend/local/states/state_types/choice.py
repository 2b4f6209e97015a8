from __future__ import annotations

from typing import Any

from .. import errors
from ..choice_rules import compile_rule
from ..runtime import Scope
from .base import State, serialize


class ChoiceState(State):
    """Goes to the Next of the first rule that matches, else to Default, else fails."""

    type_name = "Choice"

    def __init__(self, name, spec, compiler):
        super().__init__(name, spec, compiler)
        self.rules = [(compile_rule(r, f"Choices[{i}]", True), r["Next"]) for i, r in enumerate(spec["Choices"])]
        self.default_name = spec.get("Default")
        self.targets: list[State] = []
        self.default: State | None = None

    def link(self, states):
        self.targets = [states[n] for _, n in self.rules]
        self.default = states[self.default_name] if self.default_name is not None else None

    def run(self, scope: Scope, raw: Any):
        entered = self.enter(scope, raw)
        data = self.select_input(raw)
        ctx = self.context(scope, entered)
        target = None
        for (pred, _), state in zip(self.rules, self.targets):
            if pred(data, ctx):
                target = state
                break
        if target is None:
            target = self.default
        if target is None:
            raise errors.StatesFailure(
                errors.NO_CHOICE_MATCHED,
                f"No Choice rule of state '{self.name}' matched the input, and the state has no Default.",
            )
        output = self.select_output(data)
        self.exit(scope, serialize(output, f"output of state '{self.name}'"))
        return target, output
