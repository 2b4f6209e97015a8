"""Training benchmark (JSON on stdout): the training page's default hyperparameters on the bundled
1,000 + 200 real CIFAR-100 images (bicycle, motorcycle), three seeds.

Goal (issue 3): test accuracy >= 0.93 (mean of 3 seeds) on the 200 test images in <= 120 s wall per
run on 2 CPU cores. Each run is a real training job: `create_training_job` starts the worker
process, which reads the staged PNGs and .lst files from the bucket, trains with a fixed number of
epochs (early stopping off), exports model.tar.gz; the test accuracy is then measured on that
artifact through onnxruntime, as the endpoint will serve it. Wall time runs from the create call
to the job's Completed status (process start, reading images, training, export and upload included).

`--design` compares candidate hyperparameters on hold-outs of the TRAINING split only (80/20,
stratified, repeated with different splits), never on the test split: that is how the defaults
were chosen. It trains in this process and prints hold-out accuracies.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL_ACCURACY, GOAL_SECONDS = 0.93, 120.0


def load() -> tuple[float, float, float]:
    return os.getloadavg()


def benchmark(seeds: list[int], overrides: dict[str, str], home: str) -> dict:
    from backend import get_backend
    from backend.settings import load_settings

    backend = get_backend(load_settings().with_overrides(home=home, backend="local"))
    t = time.perf_counter()
    backend.stage_data("sample")
    stage_seconds = time.perf_counter() - t
    hyperparameters = {**backend.default_training_hyperparameters("local"), **overrides}
    runs = []
    for seed in seeds:
        load_before = load()
        started = time.perf_counter()
        name = backend.create_training_job(hyperparameters, seed=seed)
        while (job := backend.describe_training_job(name)).status == "InProgress":
            time.sleep(0.2)
        wall = time.perf_counter() - started
        if job.status != "Completed":
            raise SystemExit(f"{name} ended {job.status}: {job.failure_reason}")
        summary = backend.training.run_summary(name) or {}
        evaluation = backend.evaluate_training_job(name)
        epoch_seconds = summary.get("epoch_seconds", [])
        runs.append({
            "seed": seed, "job_name": name, "test_accuracy": round(evaluation.accuracy, 4),
            "validation_accuracy_last_epoch": round(job.final_metrics.get("validation:accuracy", float("nan")), 4),
            "seconds_wall": round(wall, 2), "seconds_training_loop": round(sum(epoch_seconds), 2),
            "seconds_per_epoch": round(statistics.mean(epoch_seconds), 3) if epoch_seconds else None,
            "epochs": len(job.epochs), "device": summary.get("device"),
            "load_average_1min_before_after": [round(load_before[0], 2), round(load()[0], 2)],
        })
        print(f"seed {seed}: test accuracy {evaluation.accuracy:.3f}, {wall:.1f} s wall", file=sys.stderr)
    accuracies = [r["test_accuracy"] for r in runs]
    walls = [r["seconds_wall"] for r in runs]
    per_epoch = [r["seconds_per_epoch"] for r in runs if r["seconds_per_epoch"]]
    mean_accuracy = statistics.mean(accuracies)
    return {
        "benchmark": "train",
        "data": "bundled sample: 1,000 train + 200 test real CIFAR-100 images (bicycle, motorcycle)",
        "hyperparameters": hyperparameters,
        "network": backend.training.describe_network(hyperparameters["num_layers"], hyperparameters["image_shape"]),
        "runs": runs,
        "accuracy": {"mean": round(mean_accuracy, 4), "stdev": round(statistics.stdev(accuracies), 4) if len(runs) > 1 else 0.0,
                     "min": min(accuracies), "max": max(accuracies)},
        "seconds_wall": {"mean": round(statistics.mean(walls), 2), "max": max(walls)},
        "seconds_per_epoch_mean": round(statistics.mean(per_epoch), 3) if per_epoch else None,
        "staging_seconds": round(stage_seconds, 2),
        "goal": {"accuracy_mean": GOAL_ACCURACY, "seconds_wall_per_run": GOAL_SECONDS},
        "meets_goal": mean_accuracy >= GOAL_ACCURACY and max(walls) <= GOAL_SECONDS,
        "machine": {"cpu_count": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
                    "load_average_at_end": [round(x, 2) for x in load()]},
    }


def design(configs: list[dict[str, str]], folds: list[int], seed: int) -> dict:
    """Hold-out accuracy of each candidate on repeated stratified 80/20 splits of the training data."""
    import numpy as np

    from backend import cifar
    from backend.local.training import hyperparameters as H
    from backend.local.training.data import ImageSet, holdout_split
    from backend.local.training.trainer import DEFAULT_RECIPE, train
    from backend.settings import DEFAULT_CLASSES, SAMPLE_ARCHIVE

    split = cifar.load_split_arrays(SAMPLE_ARCHIVE, list(DEFAULT_CLASSES))["train"]  # the test split is not read
    full = ImageSet(split.images, split.class_index)
    results = []
    for overrides in configs:
        accs, secs, last5 = [], [], []
        for fold in folds:
            train_idx, hold_idx = holdout_split(full.labels, 0.2, seed=100 + fold)
            hps = {k: v for k, v in overrides.items() if not k.startswith("_")}
            recipe = replace(DEFAULT_RECIPE, **{k[1:]: v for k, v in overrides.items() if k.startswith("_")})
            hp = H.validate({**H.LOCAL_CPU_PRESET, **hps, "num_training_samples": str(len(train_idx))})
            t = time.perf_counter()
            res = train(hp, full.subset(train_idx), full.subset(hold_idx), seed=seed, recipe=recipe)
            secs.append(time.perf_counter() - t)
            accs.append(res.epochs[-1]["validation:accuracy"])
            last5.append(float(np.mean([e["validation:accuracy"] for e in res.epochs[-5:]])))
            print(f"{overrides} fold {fold}: hold-out accuracy {accs[-1]:.3f} in {secs[-1]:.1f} s", file=sys.stderr)
        results.append({"overrides": overrides, "holdout_accuracy_mean": round(float(np.mean(accs)), 4),
                        "holdout_accuracies": [round(a, 4) for a in accs],
                        "holdout_accuracy_last5_epochs_mean": round(float(np.mean(last5)), 4),
                        "seconds_mean": round(float(np.mean(secs)), 1), "device": res.device})
    return {"benchmark": "train-design", "split": "repeated stratified 80/20 hold-outs of the 1,000 training images",
            "folds": folds, "seed": seed, "results": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="override a default hyperparameter")
    ap.add_argument("--design", action="store_true", help="compare candidates on hold-outs of the training data")
    ap.add_argument("--candidate", action="append", default=[], metavar="JSON",
                    help="with --design: one candidate as a JSON object of hyperparameter overrides, and of "
                         "trainer Recipe fields prefixed with '_' such as {\"_label_smoothing\": 0.1} "
                         "(repeatable; default: the defaults)")
    ap.add_argument("--folds", default="0,1,2", help="with --design: which hold-out splits (comma-separated)")
    ap.add_argument("--seed", type=int, default=0, help="with --design: the training seed")
    args = ap.parse_args()
    if args.design:  # the worker sets this itself; --design trains in this process
        from backend.local.training.service import OMP_SPIN_COUNT

        os.environ.setdefault("GOMP_SPINCOUNT", str(OMP_SPIN_COUNT))
    if args.design:
        configs = [json.loads(c) for c in args.candidate] or [{}]
        folds = [int(f) for f in args.folds.split(",")]
        print(json.dumps(design(configs, folds, seed=args.seed), indent=2))
        return
    overrides = dict(item.split("=", 1) for item in args.hp)
    with tempfile.TemporaryDirectory(prefix="scones-bench-train-") as home:
        result = benchmark([int(s) for s in args.seeds.split(",")], overrides, home)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
