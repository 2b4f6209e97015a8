"""The embedded local backend: the shared workspace with its bucket as folders on disk, training in
worker processes, endpoints as local HTTP processes, the workflow on the local States engine."""
from __future__ import annotations

from functools import cached_property
from typing import Any

from backend.api import Job, ProgressCallback, StepStatus
from backend.inventory import InventoryMixin
from backend.monitoring import MonitoringBackendMixin
from backend.local.serving.service import DeploymentBackendMixin, DeploymentService
from backend.local.store import LocalBucket, LocalStore
from backend.local.training.service import JOB_KIND as TRAIN_JOB, TrainingBackendMixin, TrainingService
from backend.local.workflow import WorkflowService
from backend.local.workflow_mixin import WorkflowBackendMixin
from backend.settings import LOCAL_BUCKET, Settings
from backend.workspace import WorkspaceBackend


class LocalBackend(MonitoringBackendMixin, TrainingBackendMixin, DeploymentBackendMixin, WorkflowBackendMixin,
                   InventoryMixin, WorkspaceBackend):
    name = "local"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.store = LocalStore(settings.buckets_dir)
        self.objects = LocalBucket(self.store, settings.bucket or LOCAL_BUCKET)
        self.training = TrainingService(self.db, self.store, self.objects.bucket, self.jobs, settings)
        self.deployment = DeploymentService(self.db, self.store, self.objects.bucket, settings, self.training)

    @cached_property
    def workflow(self) -> WorkflowService:
        return WorkflowService(
            self.db, self.store, self.objects.bucket, self.settings,
            invoke_endpoint=self.deployment.invoke_endpoint,
            describe_endpoint=self.deployment.describe_endpoint,
            endpoint_classes=lambda name: self.training.describe_model(
                self.deployment.describe_endpoint(name).model_name).classes,
            newest_endpoint=self._newest_endpoint,
            test_keys=self.test_image_keys,
            model_size=lambda name: self.training.describe_model(
                self.deployment.describe_endpoint(name).model_name).image_shape[1:][::-1],
            staged_classes=lambda: tuple(report.classes) if (report := self.latest_stage_report()) else (),
        )

    def _newest_endpoint(self) -> str | None:
        serving = [e for e in self.deployment.list_endpoints() if e.status == "InService"]
        return max(serving, key=lambda e: e.created).endpoint_name if serving else None

    def resource_step_statuses(self) -> dict[str, StepStatus]:
        return {"train": self.training.step_status(), "deploy": self.deployment.step_status(),
                "workflow": self.workflow.step_status(), "monitor": self.monitoring.monitor_step_status()}

    def workflow_targets(self) -> dict[str, str]:
        return self.workflow.targets()

    def after_cleanup(self, deleted: list[tuple[str, str]]) -> None:
        super().after_cleanup(deleted)
        if any(kind == "executions" for kind, _ in deleted):  # the bulk of the database: histories
            self.db.compact()

    def run_job(self, job: Job, progress: ProgressCallback) -> dict[str, Any]:
        if job.kind == TRAIN_JOB:
            return self.training.run(job, progress)
        return super().run_job(job, progress)
