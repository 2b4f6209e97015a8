"""S3-like buckets and keys as files under the workspace.

Writes are atomic (a temp file in the same folder, then `os.replace`), so a reader never sees half
an object. Keys that could escape their bucket are refused before any path is built.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from backend.api import InvalidKey, ResourceNotFound, StoredObject

_TMP_PREFIX = ".tmp-"
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def check_bucket(bucket: str) -> str:
    if not _BUCKET_RE.fullmatch(bucket or "") or ".." in bucket:
        raise InvalidKey(f"Bucket name {bucket!r} is not valid: use 3-63 lowercase letters, digits, dots or hyphens.")
    return bucket


def check_key(key: str) -> str:
    """Refuse keys that are empty, absolute, hold NUL or backslashes, or have '.'/'..' segments."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("An object key must be a non-empty string.")
    if "\x00" in key:
        raise InvalidKey(f"Object key {key!r} contains a NUL character; remove it.")
    if "\\" in key:
        raise InvalidKey(f"Object key {key!r} contains a backslash; use '/' between folders.")
    if key.startswith("/") or re.match(r"^[A-Za-z]:", key):
        raise InvalidKey(f"Object key {key!r} is an absolute path; keys are relative to their bucket.")
    parts = key.split("/")
    if any(p in (".", "..") for p in parts):
        raise InvalidKey(f"Object key {key!r} has a '.' or '..' segment that would leave its folder.")
    if any(p.startswith(_TMP_PREFIX) for p in parts):
        raise InvalidKey(f"Object key {key!r} uses the reserved prefix {_TMP_PREFIX!r}.")
    if len(key.encode()) > 1024:
        raise InvalidKey("Object keys are limited to 1,024 bytes, as on S3.")
    return key


class LocalStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def bucket_dir(self, bucket: str) -> Path:
        return self.root / check_bucket(bucket)

    def path(self, bucket: str, key: str) -> Path:
        check_key(key.rstrip("/") or key)
        base = self.bucket_dir(bucket).resolve()
        p = (base / key).resolve()
        if base != p and base not in p.parents:  # belt and braces: symlinks planted by hand
            raise InvalidKey(f"Object key {key!r} resolves outside bucket {bucket!r}.")
        return p

    def put(self, bucket: str, key: str, data: bytes) -> None:
        p = self.path(bucket, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_many(self, bucket: str, items: dict[str, bytes]) -> None:
        """Many small objects: folders made once, each object still written atomically."""
        made: set[Path] = set()
        for key, data in items.items():
            p = self.path(bucket, key)
            if p.parent not in made:
                p.parent.mkdir(parents=True, exist_ok=True)
                made.add(p.parent)
            tmp = p.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, p)

    def get(self, bucket: str, key: str) -> bytes:
        return self.get_with_mtime(bucket, key)[0]

    def get_with_mtime(self, bucket: str, key: str) -> tuple[bytes, float]:
        """The object's bytes and its modification time (one path check, one open)."""
        p = self.path(bucket, key)
        try:
            with open(p, "rb") as f:
                return f.read(), os.fstat(f.fileno()).st_mtime
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ResourceNotFound(f"No object s3://{bucket}/{key}: stage the data first or check the key.") from None

    def exists(self, bucket: str, key: str) -> bool:
        return self.path(bucket, key).is_file()

    def iter_objects(self, bucket: str, prefix: str = "") -> Iterator[StoredObject]:
        base = self.bucket_dir(bucket)
        if not base.is_dir():
            return
        # Walk only the folder the prefix names, then filter by the rest of the prefix.
        folder, _, _ = prefix.rpartition("/")
        start = base / folder if folder else base
        if folder:
            check_key(folder)
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, base)
            for name in sorted(filenames):
                if name.startswith(_TMP_PREFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not key.startswith(prefix):
                    continue
                st = os.stat(os.path.join(dirpath, name))
                yield StoredObject(bucket=bucket, key=key, size=st.st_size, modified=st.st_mtime)

    def list(self, bucket: str, prefix: str = "") -> list[StoredObject]:
        return list(self.iter_objects(bucket, prefix))

    def delete(self, bucket: str, key: str) -> bool:
        p = self.path(bucket, key)
        try:
            p.unlink()
        except FileNotFoundError:
            return False
        self._prune_empty(bucket, p.parent)
        return True

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        n = 0
        for obj in self.list(bucket, prefix):
            n += self.delete(bucket, obj.key)
        return n

    def delete_bucket(self, bucket: str) -> None:
        shutil.rmtree(self.bucket_dir(bucket), ignore_errors=True)

    def _prune_empty(self, bucket: str, folder: Path) -> None:
        base = self.bucket_dir(bucket)
        while folder != base and base in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


class LocalBucket:
    """One bucket of the local store, as `backend.objects.ObjectStore`."""

    def __init__(self, store: LocalStore, bucket: str):
        self.store, self.bucket = store, check_bucket(bucket)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def get(self, key: str) -> bytes:
        return self.store.get(self.bucket, key)

    def put_many(self, items: dict[str, bytes], progress=None) -> None:
        self.store.put_many(self.bucket, items)
        if progress:
            progress(len(items))

    def list(self, prefix: str = "") -> list[StoredObject]:
        return self.store.list(self.bucket, prefix)

    def delete_keys(self, keys: list[str]) -> None:
        for key in keys:
            self.store.delete(self.bucket, key)
