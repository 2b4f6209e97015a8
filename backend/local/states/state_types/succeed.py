from __future__ import annotations

from typing import Any

from ..runtime import Scope
from .base import State, serialize


class SucceedState(State):
    """Ends the execution (or the branch) successfully with its input."""

    type_name = "Succeed"

    def run(self, scope: Scope, raw: Any):
        self.enter(scope, raw)
        output = self.select_output(self.select_input(raw))
        self.exit(scope, serialize(output, f"output of state '{self.name}'"))
        return None, output
