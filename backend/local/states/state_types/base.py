"""What every state shares: input and output processing, history events, Retry and Catch."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .. import errors
from ..jsonpath import JsonPath, PathNotFound, ResultPathMismatch, compile_path, compile_reference_path, set_reference
from ..runtime import Scope
from ..templates import Template
from ..values import PAYLOAD_LIMIT_BYTES, dumps, utf8_size

if TYPE_CHECKING:
    from ..machine import Block, Compiler

class _Root:
    """Marks a path that is `$` itself: the common case, kept off the slow path."""

    text = "$"

    def __repr__(self) -> str:
        return "$"


ROOT: Any = _Root()
NOTHING = object()


def _io_path(spec: dict, field: str) -> JsonPath | str | None:
    if field not in spec:
        return ROOT
    text = spec[field]
    if text is None:
        return None
    return ROOT if text == "$" else compile_path(text)


def _result_path(value: Any, present: bool) -> JsonPath | str | None:
    if not present:
        return ROOT
    if value is None:
        return None
    return ROOT if value == "$" else compile_reference_path(value)


def check_size(text: str, what: str) -> None:
    if utf8_size(text) > PAYLOAD_LIMIT_BYTES:
        raise errors.StatesFailure(
            errors.DATA_LIMIT_EXCEEDED,
            f"The {what} has a size exceeding the maximum number of bytes service limit ({PAYLOAD_LIMIT_BYTES} bytes).",
        )


def serialize(value: Any, what: str) -> str:
    try:
        text = dumps(value)
    except (TypeError, ValueError, RecursionError) as e:
        raise errors.StatesFailure(errors.RUNTIME, f"The {what} is not JSON: {e}") from None
    check_size(text, what)
    return text


def apply_result_path(path: JsonPath | str | None, raw: Any, result: Any) -> Any:
    if path is ROOT:
        return result
    if path is None:
        return raw
    try:
        return set_reference(raw, path, result)
    except ResultPathMismatch:
        raise errors.StatesFailure(
            errors.RESULT_PATH_MATCH_FAILURE,
            f"Unable to apply ReferencePath {path.text} to input {_clip(raw)}",
        ) from None


def _clip(value: Any) -> str:
    text = dumps(value)
    return text if len(text) <= 1000 else text[:1000] + "..."


class State:
    """A state: its name, where it goes next, and InputPath/OutputPath."""

    type_name = "State"
    has_io_paths = True

    def __init__(self, name: str, spec: dict, compiler: "Compiler"):
        self.name = name
        self.spec = spec
        self.next_name: str | None = spec.get("Next")
        self.next_state: State | None = None
        self.input_path = _io_path(spec, "InputPath") if self.has_io_paths else ROOT
        self.output_path = _io_path(spec, "OutputPath") if self.has_io_paths else ROOT
        self.entered_event = f"{self.type_name}StateEntered"
        self.exited_event = f"{self.type_name}StateExited"

    def link(self, states: dict[str, "State"]) -> None:
        if self.next_name is not None:
            self.next_state = states[self.next_name]

    # --- running -----------------------------------------------------------------------------

    def run(self, scope: Scope, raw: Any) -> tuple["State | None", Any]:
        raise NotImplementedError

    def enter(self, scope: Scope, raw: Any) -> float:
        ts = scope.run.clock.now()
        text = dumps(raw)
        scope.entered = scope.emit(self.entered_event, "stateEnteredEventDetails",
                                   {"name": self.name, "input": text, "inputDetails": {"truncated": False}}, len(text))
        return ts

    def exit(self, scope: Scope, text: str) -> None:
        scope.emit(self.exited_event, "stateExitedEventDetails",
                   {"name": self.name, "output": text, "outputDetails": {"truncated": False}}, len(text))

    def context(self, scope: Scope, entered: float, retry_count: int = 0) -> Callable[[], dict]:
        cache: list = []

        def build() -> dict:
            if not cache:
                cache.append(scope.run.context_object(self.name, entered, retry_count))
            return cache[0]

        return build

    def select_input(self, raw: Any) -> Any:
        return self._select(self.input_path, raw, "InputPath")

    def select_output(self, value: Any) -> Any:
        return self._select(self.output_path, value, "OutputPath")

    @staticmethod
    def _select(path: JsonPath | str | None, value: Any, field: str) -> Any:
        if path is ROOT:
            return value
        if path is None:
            return {}
        try:
            return path.get(value)
        except PathNotFound:
            raise errors.StatesFailure(
                errors.RUNTIME, f"Invalid path '{path.text}' : No results for path: {path.text} ({field})"
            ) from None


# --------------------------------------------------------------------------------------------
# Retry and Catch
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retrier:
    error_equals: tuple[str, ...]
    interval: float = 1.0
    max_attempts: int = 3
    backoff_rate: float = 2.0
    max_delay: float | None = None
    jitter: str = "NONE"

    @classmethod
    def from_spec(cls, spec: dict) -> "Retrier":
        return cls(
            error_equals=tuple(spec["ErrorEquals"]),
            interval=spec.get("IntervalSeconds", 1),
            max_attempts=spec.get("MaxAttempts", 3),
            backoff_rate=spec.get("BackoffRate", 2.0),
            max_delay=spec.get("MaxDelaySeconds"),
            jitter=spec.get("JitterStrategy", "NONE"),
        )

    def delay(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (0-based): interval x rate^attempt, capped, jittered."""
        seconds = self.interval * (self.backoff_rate ** attempt)
        if self.max_delay is not None:
            seconds = min(seconds, self.max_delay)
        if self.jitter == "FULL":
            seconds = random.uniform(0, seconds)
        return seconds


class Catcher:
    def __init__(self, spec: dict):
        self.error_equals = tuple(spec["ErrorEquals"])
        self.next_name = spec["Next"]
        self.next_state: State | None = None
        self.result_path = _result_path(spec.get("ResultPath"), "ResultPath" in spec)


class ExecState(State):
    """Task, Parallel and Map: Parameters, ResultSelector, ResultPath, Retry and Catch."""

    parameters_field = "Parameters"

    def __init__(self, name: str, spec: dict, compiler: "Compiler"):
        super().__init__(name, spec, compiler)
        params = spec.get(self.parameters_field)
        self.parameters = Template(params, self.parameters_field) if self.parameters_field in spec else None
        self.result_selector = Template(spec["ResultSelector"], "ResultSelector") if "ResultSelector" in spec else None
        self.result_path = _result_path(spec.get("ResultPath"), "ResultPath" in spec)
        self.retriers = [Retrier.from_spec(r) for r in spec.get("Retry", ())]
        self.catchers = [Catcher(c) for c in spec.get("Catch", ())]

    def link(self, states: dict[str, State]) -> None:
        super().link(states)
        for c in self.catchers:
            c.next_state = states[c.next_name]

    def attempt(self, scope: Scope, raw: Any, entered: float, retry_count: int) -> Any:
        """One try at the state's work; returns the state output (after OutputPath)."""
        raise NotImplementedError

    def attempt_failed(self, scope: Scope, failure: errors.StatesFailure) -> None:
        """Hook for the ...StateFailed event of Parallel and Map."""

    def finish_result(self, raw: Any, result: Any, ctx: Callable[[], dict]) -> Any:
        if self.result_selector is not None:
            result = self.result_selector.apply(result, ctx)
        return self.select_output(apply_result_path(self.result_path, raw, result))

    def run(self, scope: Scope, raw: Any) -> tuple[State | None, Any]:
        entered = self.enter(scope, raw)
        attempts = [0] * len(self.retriers)
        retry_count = 0
        while True:
            try:
                output = self.attempt(scope, raw, entered, retry_count)
                text = serialize(output, f"output of state '{self.name}'")
                break
            except errors.StatesFailure as failure:
                self.attempt_failed(scope, failure)
                retrier = next((i for i, r in enumerate(self.retriers)
                                if errors.error_matches(r.error_equals, failure.error)), None)
                if retrier is not None and attempts[retrier] < self.retriers[retrier].max_attempts:
                    delay = self.retriers[retrier].delay(attempts[retrier])
                    attempts[retrier] += 1
                    retry_count += 1
                    scope.sleep(delay)
                    continue
                catcher = next((c for c in self.catchers if errors.error_matches(c.error_equals, failure.error)), None)
                if catcher is None:
                    raise
                output = apply_result_path(catcher.result_path, raw, failure.error_output())
                text = serialize(output, f"output of state '{self.name}'")
                self.exit(scope, text)
                return catcher.next_state, output
        self.exit(scope, text)
        return self.next_state, output


RUNTIME_PREFIX = "An error occurred while executing the state"


def run_block(block: "Block", value: Any, scope: Scope) -> Any:
    """Run states from the block's StartAt until one ends it; returns the last output."""
    state = block.start
    stop = scope.stopper.event
    while True:
        if stop.is_set():
            raise errors.ExecutionHalted()
        try:
            state, value = state.run(scope, value)
        except errors.StatesFailure as failure:
            if failure.error == errors.RUNTIME and not (failure.cause or "").startswith(RUNTIME_PREFIX):
                # AWS names the state and its entry event in front of a runtime error's cause
                failure.cause = (f"{RUNTIME_PREFIX} '{state.name}' (entered at the event id #{scope.entered}). "
                                 + (failure.cause or ""))
            raise
        if state is None:
            return value
