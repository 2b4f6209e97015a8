"""Errors, as Step Functions names them.

Two families live here. `StatesFailure` and its subclass `TaskError` travel *inside* an execution:
they carry an AWS error name (`States.TaskFailed`, `Lambda.ServiceException`, a user's own name)
and a cause, and Retry/Catch match on the name. The others are raised to the *caller* of the engine
(a definition that does not validate, a duplicate execution name) and subclass the project's named
errors in `backend.api`, so pages and the CLI show them like any other backend error.
"""
from __future__ import annotations

from dataclasses import dataclass

from backend.api import ResourceInUse, ResourceNotFound, SconesError, ValidationError

# Error names from the States Language spec and the Step Functions developer guide.
ALL = "States.ALL"
TASK_FAILED = "States.TaskFailed"
TIMEOUT = "States.Timeout"
HEARTBEAT_TIMEOUT = "States.HeartbeatTimeout"
RUNTIME = "States.Runtime"
DATA_LIMIT_EXCEEDED = "States.DataLimitExceeded"
INTRINSIC_FAILURE = "States.IntrinsicFailure"
NO_CHOICE_MATCHED = "States.NoChoiceMatched"
RESULT_PATH_MATCH_FAILURE = "States.ResultPathMatchFailure"
PARAMETER_PATH_FAILURE = "States.ParameterPathFailure"
BRANCH_FAILED = "States.BranchFailed"
EXCEED_TOLERATED_FAILURE_THRESHOLD = "States.ExceedToleratedFailureThreshold"
PERMISSIONS = "States.Permissions"
ITEM_READER_FAILED = "States.ItemReaderFailed"
RESULT_WRITER_FAILED = "States.ResultWriterFailed"

# Errors no wildcard catches: States.ALL leaves out DataLimitExceeded and Runtime, and a Runtime
# error is never retried or caught at all (developer guide, "Error names").
_TERMINAL = frozenset({RUNTIME, DATA_LIMIT_EXCEEDED})


def error_matches(error_equals: tuple[str, ...] | list[str], error: str) -> bool:
    """Does a retrier's or catcher's ErrorEquals match `error`?"""
    if error == RUNTIME:
        return False
    if error in error_equals:
        return True
    if error in _TERMINAL:
        return False
    if ALL in error_equals:
        return True
    # States.TaskFailed is a wildcard for every known error except States.Timeout.
    return TASK_FAILED in error_equals and error != TIMEOUT


class StatesFailure(Exception):
    """A state failed with an AWS error name; Retry and Catch decide what happens next."""

    def __init__(self, error: str, cause: str | None = None):
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause

    def error_output(self) -> dict:
        """The JSON a Catcher hands on (`{"Error", "Cause"}`)."""
        return {"Error": self.error or "", "Cause": self.cause or ""}


class TaskError(StatesFailure):
    """Raised by a resolver: the task failed with this error name and cause.

    `TaskError("States.Timeout", ...)` or `TaskError("States.HeartbeatTimeout", ...)` reports a
    timeout (history shows TaskTimedOut); any other name is a TaskFailed.
    """


class UnknownResource(LookupError):
    """Raised by a resolver that does not know how to run a Task's Resource."""

    def __init__(self, resource: str, hint: str = ""):
        super().__init__(resource)
        self.resource = resource
        self.hint = hint


class ExecutionHalted(Exception):
    """Unwinds the threads of an execution that was stopped, timed out or failed elsewhere."""


# --- errors raised to the engine's caller --------------------------------------------------------


@dataclass(frozen=True)
class Diagnostic:
    """One reason a definition is refused: which state, which field, what is wrong."""

    state: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"state '{self.state}'" if self.state else "the definition"
        if not self.field or self.message.startswith(self.field):  # not "StartAt: StartAt names no state"
            return f"{where}: {self.message}"
        return f"{where}, {self.field}: {self.message}"


class DefinitionInvalid(ValidationError):
    """The definition does not validate (like ValidateStateMachineDefinition's errors)."""

    code = "InvalidDefinition"

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        head = self.diagnostics[0] if self.diagnostics else None
        first = "unknown problem" if head is None else head.message if not (head.state or head.field) else str(head)
        more = f" (and {len(self.diagnostics) - 1} more)" if len(self.diagnostics) > 1 else ""
        super().__init__(f"The state machine definition is invalid: {first}{more}.")


class InvalidExecutionInput(ValidationError):
    code = "InvalidExecutionInput"


class InvalidName(ValidationError):
    code = "InvalidName"


class ExecutionAlreadyExists(ResourceInUse):
    code = "ExecutionAlreadyExists"


class ExecutionDoesNotExist(ResourceNotFound):
    code = "ExecutionDoesNotExist"


class ExecutionNotRecorded(SconesError):
    """An execution ended, but its end could not be written (a full disk, a database held locked)."""

    code = "ExecutionNotRecorded"
