"""The bucket interface both backends share: the local store's folders or an S3 bucket.

Staging, sample reads and (later) capture reading go through this, so the same code writes to the
workspace locally and to S3 on AWS.
"""
from __future__ import annotations

from typing import Callable, Protocol

from backend.api import StoredObject


class ObjectStore(Protocol):
    bucket: str

    def uri(self, key: str) -> str: ...

    def get(self, key: str) -> bytes: ...

    def put_many(self, items: dict[str, bytes], progress: Callable[[int], None] | None = None) -> None: ...

    def list(self, prefix: str = "") -> list[StoredObject]: ...

    def delete_keys(self, keys: list[str]) -> None: ...
