"""The workflow methods of the local backend, delegated to `self.workflow` (a WorkflowService):
the names the pages and the CLI call."""
from __future__ import annotations

from typing import Any

from backend.api import Execution, StateMachine, StateRun
from backend.local.workflow import DEFAULT_MACHINE, WorkflowService, status_totals


class WorkflowBackendMixin:
    workflow: WorkflowService

    def deploy_workflow(self, endpoint_name: str | None = None, threshold: float | None = None,
                        name: str = DEFAULT_MACHINE) -> StateMachine:
        return self.workflow.deploy_workflow(endpoint_name, threshold, name)

    def import_workflow(self, text: str, mapping: dict[str, str] | None = None, name: str = "imported-workflow",
                        endpoint_name: str | None = None, threshold: float | None = None) -> StateMachine:
        return self.workflow.import_definition(text, mapping, name, endpoint_name, threshold)

    def workflow_mapping(self, name: str = DEFAULT_MACHINE) -> dict[str, str]:
        """{function name: handler file stem in lambdas/} of a state machine."""
        return self.workflow.mapping(name)

    def describe_state_machine(self, name: str = DEFAULT_MACHINE) -> StateMachine:
        return self.workflow.describe_state_machine(name)

    def list_state_machines(self) -> list[StateMachine]:
        return self.workflow.list_state_machines()

    def generate_test_case(self) -> dict[str, Any]:
        return self.workflow.generate_test_case()

    def upload_workflow_image(self, filename: str, data: bytes) -> str:
        return self.workflow.upload_image(filename, data)

    def start_workflow_execution(self, input: dict[str, Any] | None = None, name: str | None = None,
                                 state_machine: str = DEFAULT_MACHINE) -> str:
        return self.workflow.start_execution(input, name, state_machine)

    def start_workflow_batch(self, count: int = 1, s3_key: str | None = None, threshold: float | None = None,
                             state_machine: str = DEFAULT_MACHINE) -> list[str]:
        return self.workflow.start_batch(count, s3_key, threshold, state_machine)

    def wait_workflow_executions(self, arns: list[str], timeout: float = 300.0) -> list[Execution]:
        return self.workflow.wait(arns, timeout)

    def describe_workflow_execution(self, name_or_arn: str) -> Execution:
        return self.workflow.describe_execution(name_or_arn)

    def list_workflow_executions(self, state_machine: str | None = None, limit: int = 200) -> list[Execution]:
        return self.workflow.list_executions(state_machine, limit)

    def workflow_execution_history(self, name_or_arn: str) -> list[dict[str, Any]]:
        return self.workflow.execution_history(name_or_arn)

    def workflow_execution_states(self, name_or_arn: str) -> list[StateRun]:
        return self.workflow.execution_states(name_or_arn)

    def workflow_execution_definition(self, name_or_arn: str) -> dict[str, Any]:
        return self.workflow.execution_definition(name_or_arn)

    def stop_workflow_execution(self, name_or_arn: str) -> Execution:
        return self.workflow.stop_execution(name_or_arn)

    def delete_state_machine(self, name: str) -> None:
        self.workflow.delete_state_machine(name)

    def execution_counts(self, state_machine: str) -> tuple[int, int]:
        statuses = status_totals(self.workflow.engine.count_executions([state_machine]))
        return sum(statuses.values()), statuses.get("RUNNING", 0)

    def kept_execution_groups(self) -> list[str]:
        return self.workflow.engine.execution_machine_names()

    def delete_executions(self, state_machine: str) -> int:
        return self.workflow.engine.delete_executions(state_machine)

    def after_cleanup(self, deleted: list[tuple[str, str]]) -> None:
        if "workflow" in vars(self):
            self.workflow.close()  # no Lambda worker or gateway of this workspace keeps running

    def validate_definition(self, text: str) -> list[Any]:
        from backend.local.states import validate_definition

        return validate_definition(text)

    def run_definition(self, text: str, input: Any = None, params: dict[str, str] | None = None):
        return self.workflow.run_definition(text, input, params)
