from __future__ import annotations

from typing import Any

from .. import errors
from ..jsonpath import PathNotFound, compile_path
from ..runtime import Scope
from ..values import is_integer, parse_timestamp
from .base import State, serialize


class WaitState(State):
    """Waits Seconds, until a Timestamp, or for what SecondsPath/TimestampPath read; stop wakes it."""

    type_name = "Wait"

    def __init__(self, name, spec, compiler):
        super().__init__(name, spec, compiler)
        self.seconds = spec.get("Seconds")
        self.timestamp = parse_timestamp(spec["Timestamp"]).timestamp() if "Timestamp" in spec else None
        self.seconds_path = compile_path(spec["SecondsPath"]) if "SecondsPath" in spec else None
        self.timestamp_path = compile_path(spec["TimestampPath"]) if "TimestampPath" in spec else None

    def run(self, scope: Scope, raw: Any):
        self.enter(scope, raw)
        data = self.select_input(raw)
        scope.sleep(self._seconds(scope, data))
        output = self.select_output(data)
        self.exit(scope, serialize(output, f"output of state '{self.name}'"))
        return self.next_state, output

    def _seconds(self, scope: Scope, data: Any) -> float:
        if self.seconds is not None:
            return self.seconds
        if self.timestamp is not None:
            return self.timestamp - scope.run.clock.now()
        if self.seconds_path is not None:
            value = self._read(self.seconds_path, data, "SecondsPath")
            if not is_integer(value) or value < 0:
                raise errors.StatesFailure(
                    errors.RUNTIME,
                    f"The SecondsPath parameter does not reference a non-negative integer: {self.seconds_path.text} == {value!r}",
                )
            return float(value)
        value = self._read(self.timestamp_path, data, "TimestampPath")
        when = parse_timestamp(value)
        if when is None:
            raise errors.StatesFailure(
                errors.RUNTIME,
                f"The TimestampPath parameter does not reference a valid ISO-8601 timestamp: {self.timestamp_path.text} == {value!r}",
            )
        return when.timestamp() - scope.run.clock.now()

    @staticmethod
    def _read(path, data, field):
        try:
            return path.get(data)
        except PathNotFound:
            raise errors.StatesFailure(
                errors.RUNTIME, f"Invalid path '{path.text}' : No results for path: {path.text} ({field})"
            ) from None
