"""Build CIFAR-100-format archives for tests: synthetic, truncated or hostile."""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from backend import cifar
from backend.settings import SAMPLE_ARCHIVE


def fine_names() -> list[str]:
    return list(cifar.read_archive(SAMPLE_ARCHIVE, want_splits=()).fine_label_names)


def split_dict(labels: list[int], seed: int, prefix: str, batch: str) -> dict:
    rng = np.random.default_rng(seed)
    n = len(labels)
    return {
        b"batch_label": batch.encode(),
        b"filenames": [f"{prefix}_{i:06d}.png".encode() for i in range(n)],
        b"fine_labels": list(labels),
        b"coarse_labels": [lab // 5 for lab in labels],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
    }


def meta_dict(names: list[str] | None = None) -> dict:
    names = names or fine_names()
    return {
        b"fine_label_names": [n.encode() for n in names],
        b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)],
    }


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1230768000
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data))


def write_archive(path: Path, members: dict[str, object], extra: list[tarfile.TarInfo] | None = None) -> Path:
    """members: {name: dict to pickle | raw bytes}; extra: TarInfo entries without data (links...)."""
    with tarfile.open(path, "w:gz") as tar:
        for info in extra or []:
            tar.addfile(info)
        for name, value in members.items():
            data = value if isinstance(value, bytes) else pickle.dumps(value, protocol=2)
            add_bytes(tar, name, data)
    return path


def synthetic_archive(path: Path, train_labels: list[int], test_labels: list[int], seed: int = 0,
                      with_meta: bool = True) -> Path:
    members: dict[str, object] = {}
    if with_meta:
        members["cifar-100-python/meta"] = meta_dict()
    members["cifar-100-python/train"] = split_dict(train_labels, seed, "tr", "training batch 1 of 1")
    members["cifar-100-python/test"] = split_dict(test_labels, seed + 1, "te", "testing batch 1 of 1")
    return write_archive(path, members)


def several_classes(n_per_class: int, classes: tuple[int, ...] = (8, 48, 3, 10, 99), seed: int = 0) -> list[int]:
    labels = [c for c in classes for _ in range(n_per_class)]
    np.random.default_rng(seed).shuffle(labels)
    return labels


class EvilPayload:
    """Unpickling this would run `os.system`: the restricted unpickler must refuse it."""

    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/scones-pwned",))
