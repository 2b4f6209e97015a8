"""Reading channels from the bucket: .lst parsing, images, bad lists, the hold-out split."""
from __future__ import annotations

import numpy as np
import pytest

from backend.api import ResourceNotFound, ValidationError
from backend.local.training.data import Channel, holdout_split, read_channel, read_lst
from tests.training import synthetic

TRAIN = Channel("train", "train/", "train.lst")


@pytest.fixture
def staged(backend):
    synthetic.stage(backend, n_train=12, n_test=6, size=8)
    return backend


def test_lst_rows_and_images_are_read_in_list_order(staged):
    rows = read_lst(staged.store, staged.objects.bucket, TRAIN)
    assert rows[:3] == [(0, 0, "img_train_0000.png"), (1, 1, "img_train_0001.png"), (2, 0, "img_train_0002.png")]
    data = read_channel(staged.store, staged.objects.bucket, TRAIN)
    assert data.images.shape == (12, 8, 8, 3) and data.images.dtype == np.uint8
    assert data.labels.tolist() == [0, 1] * 6
    assert data.keys[0] == "train/img_train_0000.png"
    expected, _ = synthetic.images(12, 8, seed=1)
    assert np.array_equal(data.images, expected)  # PNG is lossless: the pixels come back exactly


def test_images_are_resized_to_the_requested_size(staged):
    data = read_channel(staged.store, staged.objects.bucket, TRAIN, size=(16, 12))
    assert data.images.shape == (12, 12, 16, 3)


def test_lst_with_extra_spaces_header_or_bad_fields_is_refused(staged):
    bucket = staged.objects.bucket
    staged.store.put(bucket, "train.lst", b"index\tclass\tpath\n")
    with pytest.raises(ValidationError, match="line 1: index and class must be numbers"):
        read_lst(staged.store, bucket, TRAIN)
    staged.store.put(bucket, "train.lst", b"0 0 img.png\n")
    with pytest.raises(ValidationError, match="has 1 tab-separated fields, not 3"):
        read_lst(staged.store, bucket, TRAIN)
    staged.store.put(bucket, "train.lst", b"0\t-1\timg_train_0000.png\n")
    with pytest.raises(ValidationError, match="class index -1 is negative"):
        read_lst(staged.store, bucket, TRAIN)
    staged.store.put(bucket, "train.lst", b"0\t0\t../test/img_test_0000.png\n")
    with pytest.raises(ValidationError, match="must be relative to the channel's folder"):
        read_lst(staged.store, bucket, TRAIN)
    staged.store.put(bucket, "train.lst", b"\n\n")
    with pytest.raises(ValidationError, match="is empty"):
        read_lst(staged.store, bucket, TRAIN)


def test_a_float_class_index_as_im2rec_writes_it_is_read(staged):
    staged.store.put(staged.objects.bucket, "train.lst", b"5\t1.000000\timg_train_0001.png\n")
    assert read_lst(staged.store, staged.objects.bucket, TRAIN) == [(5, 1, "img_train_0001.png")]


def test_missing_list_or_image_is_a_clear_error(backend):
    with pytest.raises(ResourceNotFound, match="stage the data first"):
        read_lst(backend.store, backend.objects.bucket, TRAIN)
    backend.store.put(backend.objects.bucket, "train.lst", b"0\t0\tmissing.png\n")
    with pytest.raises(ResourceNotFound, match="train/missing.png"):
        read_channel(backend.store, backend.objects.bucket, TRAIN)
    backend.store.put(backend.objects.bucket, "train/missing.png", b"not a png")
    with pytest.raises(ValidationError, match="not a readable image"):
        read_channel(backend.store, backend.objects.bucket, TRAIN)


def test_holdout_split_is_stratified_disjoint_and_repeatable():
    labels = np.array([0] * 500 + [1] * 500)
    train, hold = holdout_split(labels, 0.2, seed=3)
    assert len(hold) == 200 and len(train) == 800 and not set(train) & set(hold)
    assert np.bincount(labels[hold]).tolist() == [100, 100]
    again, _ = holdout_split(labels, 0.2, seed=3)
    assert np.array_equal(train, again)
