"""Channels as arrays: a .lst file and its images read from the bucket, and the hold-out split.

Torch-free on purpose: evaluation runs in the dashboard's process, which never imports torch.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from backend.api import ResourceNotFound, ValidationError
from backend.cifar import parse_lst
from backend.local.store import LocalStore

HOLDOUT_FRACTION = 0.2


@dataclass
class ImageSet:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64, 0..num_classes-1
    keys: list[str] = field(default_factory=list)  # bucket keys, for showing an image again

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError("images must be a uint8 array of shape (N, H, W, C)")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels must have the same length")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "ImageSet":
        keys = [self.keys[i] for i in index] if self.keys else []
        return ImageSet(self.images[index], self.labels[index], keys)


@dataclass(frozen=True)
class Channel:
    """Where a channel lives in the bucket: the image prefix and its .lst."""

    name: str
    prefix: str  # e.g. "train/"
    lst_key: str  # e.g. "train.lst"


def read_lst(store: LocalStore, bucket: str, channel: Channel) -> list[tuple[int, int, str]]:
    try:
        text = store.get(bucket, channel.lst_key).decode("utf-8")
    except ResourceNotFound:
        raise ResourceNotFound(
            f"The {channel.name} channel's list s3://{bucket}/{channel.lst_key} does not exist: stage the data first.") from None
    except UnicodeDecodeError:
        raise ValidationError(f"s3://{bucket}/{channel.lst_key} is not UTF-8 text; stage the data again.") from None
    rows = parse_lst(text)
    if not rows:
        raise ValidationError(f"The {channel.name} channel's list s3://{bucket}/{channel.lst_key} is empty; stage the data again.")
    for n, (_, label, path) in enumerate(rows, 1):
        if label < 0:
            raise ValidationError(f"{channel.lst_key} line {n}: class index {label} is negative; classes count from 0.")
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise ValidationError(f"{channel.lst_key} line {n}: path {path!r} must be relative to the channel's folder.")
    return rows


def decode_image(data: bytes, key: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3); resized to `size` (width, height) when given and different."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            if size is not None and im.size != size:
                im = im.resize(size, Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValidationError(f"s3://.../{key} is not a readable image ({type(exc).__name__}); stage the data again.") from None


def read_channel(store: LocalStore, bucket: str, channel: Channel,
                 size: tuple[int, int] | None = None) -> ImageSet:
    """Every image the channel's .lst names, with its class; images of another size are resized to `size`."""
    rows = read_lst(store, bucket, channel)
    images, labels, keys = [], [], []
    first: tuple[int, int] | None = None
    for _, label, path in rows:
        key = channel.prefix + path
        arr = decode_image(store.get(bucket, key), key, size)
        if first is None:
            first = (arr.shape[1], arr.shape[0])
        elif (arr.shape[1], arr.shape[0]) != first:
            arr = decode_image(store.get(bucket, key), key, first)
        images.append(arr)
        labels.append(label)
        keys.append(key)
    return ImageSet(np.stack(images), np.array(labels, dtype=np.int64), keys)


def holdout_split(labels: np.ndarray, fraction: float = HOLDOUT_FRACTION, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stratified (train, hold-out) index split of the training data, the same for the same seed."""
    rng = np.random.default_rng(seed)
    train_idx, hold_idx = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_hold = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        hold_idx.append(idx[:n_hold])
        train_idx.append(idx[n_hold:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(hold_idx))
