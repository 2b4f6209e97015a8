"""Stage a CIFAR-100 archive into a bucket: PNGs per split plus SageMaker .lst files.

Shared by both backends: the local one writes to its on-disk store, the AWS one to S3, through the
`ObjectStore` interface. The dataset manifest (`dataset.json`) is written last and removed
before the first image is written, so a run that fails half-way never leaves a dataset that looks
staged, and one refused earlier (an unreadable archive, a class it lacks) leaves the staged one as it was.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
import numpy as np

from backend import cifar
from backend.api import SconesError, ValidationError
from backend.objects import ObjectStore

TRAIN_PREFIX = "train/"
TEST_PREFIX = "test/"
TRAIN_LST = "train.lst"
TEST_LST = "test.lst"
MANIFEST = "dataset.json"
# In a shared bucket: every image key a staging may have written and not yet removed, kept before the images
# are written, so a staging that fails half way (or whose clean-up of stale images fails) leaves nothing
# that neither the next staging nor cleanup knows to be this project's.
STAGED_KEYS = "dataset-keys.json"
PREFIXES = {"train": TRAIN_PREFIX, "test": TEST_PREFIX}
LISTS = {"train": TRAIN_LST, "test": TEST_LST}


def manifest_keys(sink: ObjectStore) -> list[str]:
    """[MANIFEST] when the bucket holds a staged dataset's manifest, else []."""
    return [o.key for o in sink.list(MANIFEST) if o.key == MANIFEST]


def previously_listed(sink: ObjectStore) -> set[str]:
    """The image keys the bucket's train.lst and test.lst name, and those a staging recorded before writing
    them (STAGED_KEYS, in a shared bucket); an unreadable list names none."""
    keys: set[str] = set()
    try:
        recorded = json.loads(sink.get(STAGED_KEYS))
        keys.update(k for k in recorded if isinstance(k, str) and k.startswith(tuple(PREFIXES.values())))
    except (SconesError, ValueError, TypeError):
        pass  # none recorded (a local bucket, or staged before it was kept)
    for name, lst in LISTS.items():
        try:
            rows = cifar.parse_lst(sink.get(lst).decode("utf-8"))
        except (SconesError, UnicodeDecodeError):  # no list yet, or not one of ours
            continue
        keys.update(PREFIXES[name] + rel for _, _, rel in rows)
    return keys


def stage_archive(path: Path, classes: list[str], sink: ObjectStore,
                  progress: cifar.Progress = cifar._no_progress, source: str = "") -> dict:
    """Returns the report fields (see `StageReport`); raises a named error and leaves no manifest."""
    t0 = time.perf_counter()
    archive = cifar.read_archive(path, progress, span=(0.0, 0.6))
    ids = cifar.choose_classes(archive.fine_label_names, classes)
    selections = {name: cifar.select(archive.splits[name], ids) for name in cifar.SPLITS}
    del archive
    empty = [classes[i] for i in range(len(ids)) if not any((s.class_index == i).any() for s in selections.values())]
    if empty:
        raise ValidationError(f"{'Class' if len(empty) == 1 else 'Classes'} {', '.join(repr(e) for e in empty)} "
                              f"{'has' if len(empty) == 1 else 'have'} no images in this archive; choose classes it holds.")
    for name, sel in selections.items():
        if len(set(sel.filenames)) != len(sel.filenames):
            raise ValidationError(f"The archive's '{name}' split repeats an image file name; it cannot be staged as files.")
    timings = {"read_and_filter": time.perf_counter() - t0}

    listed_before = previously_listed(sink)
    shared = getattr(sink, "shared", False)
    if shared:
        new_keys = {PREFIXES[name] + f for name, sel in selections.items() for f in sel.filenames}
        sink.put_many({STAGED_KEYS: json.dumps(sorted(listed_before | new_keys)).encode()})
    t1 = time.perf_counter()
    sink.delete_keys(manifest_keys(sink))  # from here the old dataset changes
    total = sum(len(s.filenames) for s in selections.values())
    done = 0
    written: dict[str, set[str]] = {}
    for name, sel in selections.items():
        prefix = PREFIXES[name]
        batch: dict[str, bytes] = {}
        written[name] = set()
        for image, filename in zip(sel.images, sel.filenames):
            key = prefix + filename
            batch[key] = cifar.encode_png(image)
            written[name].add(key)
            if len(batch) >= 200:
                sink.put_many(batch)
                done += len(batch)
                batch = {}
                progress(0.6 + 0.35 * done / max(total, 1), f"Writing images: {done} of {total}")
        sink.put_many(batch)
        done += len(batch)
    timings["write_images"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    sink.put_many({LISTS[name]: cifar.lst_text(sel).encode() for name, sel in selections.items()})
    ours = set().union(*written.values())
    if shared:  # other projects' objects may sit under train/ and test/: ours only
        stale = sorted(k for k in listed_before if k not in ours)
    else:
        stale = [o.key for name, prefix in PREFIXES.items() for o in sink.list(prefix) if o.key not in written[name]]
    sink.delete_keys(stale)
    if shared:
        sink.put_many({STAGED_KEYS: json.dumps(sorted(ours)).encode()})
    counts = {
        name: {c: int(np.count_nonzero(sel.class_index == i)) for i, c in enumerate(classes)}
        for name, sel in selections.items()
    }
    seconds = time.perf_counter() - t0
    timings["write_lists"] = time.perf_counter() - t2
    report = {
        "counts": counts, "classes": list(classes), "bucket": sink.bucket,
        "train_prefix": TRAIN_PREFIX, "test_prefix": TEST_PREFIX,
        "train_lst": TRAIN_LST, "test_lst": TEST_LST, "seconds": seconds,
        "source": source, "timings": timings, "removed_stale": len(stale),
    }
    sink.put_many({MANIFEST: json.dumps(report, indent=1).encode()})
    progress(1.0, "Staged")
    return report
