"""A local Amazon States Language engine: runs state machine definitions as Step Functions would.

Public API (what the CLI and the backend use):

    validate_definition(definition) -> list[Diagnostic]      # empty list: valid
    StatesEngine(db, resolver=None, clock=None, ...)           # start/run/describe/list/stop/history/wait
    resolver(resource, parameters, context: TaskContext) -> result, or raise TaskError(error, cause),
        or raise UnknownResource(resource) when it cannot run that resource

The engine knows nothing of Lambda or SageMaker: Task resources go to the resolver.
"""
from .engine import STATUSES, ExecutionRecord, StatesEngine
from .errors import (
    Diagnostic,
    DefinitionInvalid,
    ExecutionAlreadyExists,
    ExecutionDoesNotExist,
    InvalidExecutionInput,
    InvalidName,
    StatesFailure,
    TaskError,
    UnknownResource,
)
from .runtime import Clock, FakeClock, TaskContext
from .store import STATES_MIGRATIONS
from .validation import validate_definition

__all__ = [
    "STATUSES", "STATES_MIGRATIONS", "Clock", "DefinitionInvalid", "Diagnostic", "ExecutionAlreadyExists",
    "ExecutionDoesNotExist", "ExecutionRecord", "FakeClock", "InvalidExecutionInput", "InvalidName",
    "StatesEngine", "StatesFailure", "TaskContext", "TaskError", "UnknownResource", "validate_definition",
]
