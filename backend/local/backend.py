"""The embedded local backend: the shared workspace, with its bucket as folders on disk."""
from __future__ import annotations

from backend.local.store import LocalBucket, LocalStore
from backend.settings import LOCAL_BUCKET, Settings
from backend.workspace import WorkspaceBackend


class LocalBackend(WorkspaceBackend):
    name = "local"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.store = LocalStore(settings.buckets_dir)
        self.objects = LocalBucket(self.store, settings.bucket or LOCAL_BUCKET)
