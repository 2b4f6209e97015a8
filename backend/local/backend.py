"""The embedded local backend: the shared workspace, with its bucket as folders on disk, training
in worker processes."""
from __future__ import annotations

from typing import Any

from backend.api import Job, ProgressCallback, StepStatus
from backend.local.store import LocalBucket, LocalStore
from backend.local.training.service import JOB_KIND as TRAIN_JOB, TrainingBackendMixin, TrainingService
from backend.settings import LOCAL_BUCKET, Settings
from backend.workspace import WorkspaceBackend


class LocalBackend(TrainingBackendMixin, WorkspaceBackend):
    name = "local"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.store = LocalStore(settings.buckets_dir)
        self.objects = LocalBucket(self.store, settings.bucket or LOCAL_BUCKET)
        self.training = TrainingService(self.db, self.store, self.objects.bucket, self.jobs, settings)

    def step_statuses(self) -> dict[str, StepStatus]:
        steps = super().step_statuses()
        steps["train"] = self.training.step_status()
        return steps

    def run_job(self, job: Job, progress: ProgressCallback) -> dict[str, Any]:
        if job.kind == TRAIN_JOB:
            return self.training.run(job, progress)
        return super().run_job(job, progress)
