"""The workflow on AWS (Lambda functions from lambdas/, the Step Functions state machine from asl/)
is the AWS backend's next step. Until it lands, every workflow call on this backend says so in one
sentence instead of failing somewhere deeper; listing calls answer with nothing."""
from __future__ import annotations

from typing import Any

from backend.api import SconesError

NOT_YET = ("The workflow (Lambda functions and the Step Functions state machine) does not run on the AWS "
           "backend in this build yet: use the local backend for it (SCONES_BACKEND=local or --backend local).")


class AwsWorkflowNotYet(SconesError):
    code = "NotImplementedOnAws"


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AwsWorkflowNotYet(NOT_YET)


class AwsWorkflowMixin:
    deploy_workflow = import_workflow = describe_state_machine = generate_test_case = _refuse
    upload_workflow_image = start_workflow_execution = start_workflow_batch = wait_workflow_executions = _refuse
    describe_workflow_execution = workflow_execution_history = workflow_execution_states = _refuse
    stop_workflow_execution = run_definition = workflow_mapping = delete_state_machine = _refuse

    def list_state_machines(self) -> list[Any]:
        return []

    def list_workflow_executions(self, state_machine: str | None = None, limit: int = 200) -> list[Any]:
        return []

    def validate_definition(self, text: str) -> list[Any]:
        """Validation is the same everywhere: the local validator, as ValidateStateMachineDefinition."""
        from backend.local.states import validate_definition

        return validate_definition(text)
