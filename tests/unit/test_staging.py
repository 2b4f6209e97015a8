"""Staging on synthetic archives (several classes, so the filter is real) and on the real mirror."""
from __future__ import annotations

import csv
import time
import io
import json

import numpy as np
import pytest
from PIL import Image

from backend import cifar
from backend.api import ValidationError
from tests.archives import several_classes, synthetic_archive


def png_pixels(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.mode == "RGB" and img.size == (32, 32)
    return np.asarray(img)


def test_filter_keeps_only_chosen_classes_with_class_index_in_chosen_order(tmp_path, backend):
    train = several_classes(7)
    test = several_classes(3, seed=1)
    path = synthetic_archive(tmp_path / "syn.tar.gz", train, test)
    report = backend.stage_data(str(path), ["motorcycle", "bicycle"])
    assert report.counts == {"train": {"motorcycle": 7, "bicycle": 7}, "test": {"motorcycle": 3, "bicycle": 3}}
    archive = cifar.read_archive(path)
    for split, labels in (("train", train), ("test", test)):
        rows = cifar.parse_lst(backend.get_object(f"{split}.lst").decode())
        expected_rows = [i for i, lab in enumerate(labels) if lab in (8, 48)]
        assert [r for r, _, _ in rows] == expected_rows
        for row, cls, rel in rows:
            assert cls == (0 if labels[row] == 48 else 1)  # motorcycle listed first -> class 0
            assert rel == archive.splits[split].filenames[row]
            want = archive.splits[split].data[row].reshape(3, 32, 32).transpose(1, 2, 0)
            assert np.array_equal(png_pixels(backend.get_object(f"{split}/{rel}")), want)
    # nothing of the other three classes was written
    assert len(backend.list_objects("train/")) == 14
    assert len(backend.list_objects("test/")) == 6
    manifest = json.loads(backend.get_object("dataset.json"))
    assert manifest["classes"] == ["motorcycle", "bicycle"]


def test_restaging_is_idempotent_and_removes_stale_images(tmp_path, backend):
    path = synthetic_archive(tmp_path / "syn.tar.gz", several_classes(5), several_classes(2, seed=3))
    first = backend.stage_data(str(path), ["bicycle", "motorcycle"])
    snapshot = {o.key: backend.get_object(o.key) for o in backend.list_objects()}
    second = backend.stage_data(str(path), ["bicycle", "motorcycle"])
    assert second.counts == first.counts
    again = {o.key: backend.get_object(o.key) for o in backend.list_objects() if o.key != "dataset.json"}
    assert again == {k: v for k, v in snapshot.items() if k != "dataset.json"}
    third = backend.stage_data(str(path), ["bicycle", "bear"])
    assert third.counts["train"] == {"bicycle": 5, "bear": 5}
    assert len(backend.list_objects("train/")) == 10  # the motorcycles are gone


def test_class_with_no_images_is_a_clear_error_and_nothing_is_marked_staged(tmp_path, backend):
    path = synthetic_archive(tmp_path / "syn.tar.gz", several_classes(3), several_classes(1))
    with pytest.raises(ValidationError, match="'apple' has no images"):
        backend.stage_data(str(path), ["bicycle", "apple"])
    assert backend.latest_stage_report() is None
    assert backend.step_statuses()["stage"].state == "not_started"


def test_a_refused_restage_leaves_the_staged_dataset_as_it_was(tmp_path, backend):
    path = synthetic_archive(tmp_path / "syn.tar.gz", several_classes(3), several_classes(1))
    first = backend.stage_data(str(path), ["bicycle", "motorcycle"])
    before = {o.key: backend.get_object(o.key) for o in backend.list_objects()}
    with pytest.raises(ValidationError, match="'apple' has no images"):
        backend.stage_data(str(path), ["bicycle", "apple"])
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    job = backend.start_staging(str(junk), ["bicycle", "motorcycle"])
    while not backend.describe_job(job).done:
        time.sleep(0.05)
    assert backend.describe_job(job).status == "Failed"
    assert {o.key: backend.get_object(o.key) for o in backend.list_objects()} == before
    assert backend.latest_stage_report().counts == first.counts
    status = backend.step_statuses()["stage"]
    assert status.state == "done" and "The last staging attempt failed and changed nothing" in status.detail


def test_the_other_backends_staging_jobs_do_not_show_here(tmp_path, backend):
    """One workspace used with both backends: a failed `--backend aws stage` is not the local staging's
    last attempt (and is not a staging job running here); rows older than the backend column show to both."""
    from backend.local.jobs import JobRunner

    path = synthetic_archive(tmp_path / "syn.tar.gz", several_classes(3), several_classes(1))
    backend.stage_data(str(path), ["bicycle", "motorcycle"])
    aws = JobRunner(backend.db, backend.settings.home, backend.settings.logs_dir, "aws")
    failed = aws.create("stage", {"source": "sample"})
    aws.fail(failed, "No AWS credentials were found.")
    running = aws.create("stage", {"source": "sample"})
    assert [j.job_id for j in aws.list("stage")] == [running, failed]
    status = backend.step_statuses()["stage"]
    assert status.state == "done" and "failed" not in status.detail
    assert backend.latest_job("stage") is None and backend.list_jobs("stage") == []
    job = backend.start_staging("sample")  # the AWS job "running" does not block staging here
    assert backend.wait_job(job, timeout=120).status == "Completed"
    backend.db.execute("UPDATE jobs SET backend='' WHERE job_id=?", (failed,))
    assert failed in [j.job_id for j in backend.list_jobs("stage")]


def test_progress_is_reported_and_ends_at_one(tmp_path, backend):
    path = synthetic_archive(tmp_path / "syn.tar.gz", several_classes(20), several_classes(5))
    seen: list[float] = []
    backend.stage_data(str(path), None, progress=lambda f, m: seen.append(f))
    assert seen and seen[-1] == 1.0
    assert seen == sorted(seen)


def test_parse_lst_rejects_malformed_lines():
    assert cifar.parse_lst("0\t1\ta.png\n\n5\t0\tb.png\n") == [(0, 1, "a.png"), (5, 0, "b.png")]
    with pytest.raises(ValidationError, match="line 1 has 2"):
        cifar.parse_lst("0\ta.png\n")
    with pytest.raises(ValidationError, match="line 2"):
        cifar.parse_lst("0\t1\ta.png\nx\t1\tb.png\n")


# -- the real mirror ----------------------------------------------------------------------------


@pytest.fixture
def staged_mirror(backend, mirror_archive):
    return backend, backend.stage_data(str(mirror_archive))


def test_mirror_counts_and_lists(staged_mirror):
    backend, report = staged_mirror
    assert report.counts == {"train": {"bicycle": 500, "motorcycle": 500}, "test": {"bicycle": 100, "motorcycle": 100}}
    for split, n in (("train", 1000), ("test", 200)):
        rows = cifar.parse_lst(backend.get_object(f"{split}.lst").decode())
        assert len(rows) == n
        assert len({r for r, _, _ in rows}) == n
        assert {c for _, c, _ in rows} == {0, 1}
        keys = {o.key for o in backend.list_objects(f"{split}/")}
        assert keys == {f"{split}/{rel}" for _, _, rel in rows}


def test_mirror_labels_match_index_csv_and_bike_s_motorcycles(staged_mirror, shared_data):
    backend, _ = staged_mirror
    with open(shared_data / "index.csv", newline="") as f:
        truth = {(r["split"], r["filename"]): r["fine_label_name"] for r in csv.DictReader(f)}
    names = ("bicycle", "motorcycle")
    staged = {}
    for split in ("train", "test"):
        for _, cls, rel in cifar.parse_lst(backend.get_object(f"{split}.lst").decode()):
            staged[(split, rel)] = names[cls]
    assert staged == truth
    bike_s_motorcycles = sorted(k for k, v in staged.items() if k[1].startswith("bike_s_") and v == "motorcycle")
    assert len(bike_s_motorcycles) == 7
    assert sum(1 for s, _ in bike_s_motorcycles if s == "train") == 6
    assert ("test", "bike_s_000041.png") in bike_s_motorcycles


def test_mirror_pngs_equal_archive_rows_and_shared_samples(staged_mirror, mirror_archive, shared_data):
    backend, _ = staged_mirror
    archive = cifar.read_archive(mirror_archive)
    rng = np.random.default_rng(7)
    for split in ("train", "test"):
        s = archive.splits[split]
        for row in rng.choice(len(s.filenames), size=25, replace=False):
            want = s.data[row].reshape(3, 32, 32).transpose(1, 2, 0)
            got = png_pixels(backend.get_object(f"{split}/{s.filenames[row]}"))
            assert np.array_equal(got, want)
    for sample in sorted((shared_data / "samples").glob("*.png")):
        original = np.asarray(Image.open(sample).convert("RGB"))
        assert np.array_equal(png_pixels(backend.get_object(f"test/{sample.name}")), original)


def test_bundled_sample_is_the_mirror(backend, mirror_archive):
    from backend.settings import SAMPLE_ARCHIVE

    assert SAMPLE_ARCHIVE.read_bytes() == mirror_archive.read_bytes()
    report = backend.stage_data("sample")
    assert report.source == "sample"
    assert report.counts["train"] == {"bicycle": 500, "motorcycle": 500}


def test_archive_info_lists_members_keys_and_names(backend):
    info = backend.archive_info("sample")
    assert [m.name for m in info.members if m.type == "file"] == [
        "cifar-100-python/meta", "cifar-100-python/test", "cifar-100-python/train"]
    assert len(info.fine_label_names) == 100 and len(info.coarse_label_names) == 20
    assert info.fine_label_names[8] == "bicycle" and info.fine_label_names[48] == "motorcycle"
    data = {a.key: a for a in info.pickles["train"]}["data"]
    assert data.shape == (1000, 3072) and data.dtype == "uint8"
    assert info.counts["test"] == {"bicycle": 100, "motorcycle": 100}


def test_staged_samples_per_class(staged_mirror):
    backend, _ = staged_mirror
    samples = backend.staged_samples("test", per_class=3)
    assert [s.label for s in samples] == ["bicycle"] * 3 + ["motorcycle"] * 3
    assert all(s.data.startswith(b"\x89PNG") for s in samples)
