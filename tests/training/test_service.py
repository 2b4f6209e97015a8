"""Training jobs through real worker processes: statuses, metrics, artifact, model, evaluation, faults."""
from __future__ import annotations

import os
import re
import signal

import pytest

from backend import get_backend
from backend.api import ResourceInUse, ResourceLimitExceeded, ResourceNotFound, ValidationError
from backend.local.training.artifact import load_artifact, read_members
from backend.settings import load_settings
from tests.training import synthetic
from tests.training.conftest import wait_done, wait_for

LONG = 400  # epochs: a job that is still running whenever the test acts on it


def worker_pid(backend, name: str) -> int:
    job_id = backend.db.query_one("SELECT job_id FROM training_jobs WHERE job_name=?", (name,))["job_id"]
    return backend.db.query_one("SELECT pid FROM jobs WHERE job_id=?", (job_id,))["pid"]


def test_bad_hyperparameters_fail_at_once_and_start_nothing(staged):
    with pytest.raises(ValidationError, match="optimizer='adagrad' is not valid: use sgd, adam, rmsprop or nag"):
        staged.create_training_job(synthetic.hyperparameters(optimizer="adagrad"))
    with pytest.raises(ValidationError, match=r"num_training_samples=1000 does not match the train channel .* set it to 64"):
        staged.create_training_job(synthetic.hyperparameters(n_train=1000))
    with pytest.raises(ValidationError, match="num_classes=1 is not valid: the staged lists use class indices up to 1"):
        staged.create_training_job({**synthetic.hyperparameters(), "num_classes": "1"})
    with pytest.raises(ValidationError, match=r"num_classes=3 does not match the staged classes \(reddish, bluish\): set it to 2"):
        staged.create_training_job({**synthetic.hyperparameters(), "num_classes": "3"})
    with pytest.raises(ValidationError, match="use_pretrained_model=1 is not available locally"):
        staged.create_training_job(synthetic.hyperparameters(use_pretrained_model="1"))
    with pytest.raises(ValidationError, match="validation='train' is not valid"):
        staged.create_training_job(synthetic.hyperparameters(), validation="train")
    with pytest.raises(ValidationError, match="Training job name 'bad name!' is not valid"):
        staged.create_training_job(synthetic.hyperparameters(), job_name="bad name!")
    assert staged.list_training_jobs() == [] and staged.list_jobs("train") == []


def test_without_staged_data_the_error_says_to_stage(backend):
    with pytest.raises(ResourceNotFound, match="stage the data first"):
        backend.create_training_job(synthetic.hyperparameters())


def test_a_job_runs_to_completed_with_metrics_artifact_model_and_evaluation(staged):
    name = staged.create_training_job(synthetic.hyperparameters(epochs=2), job_name="tiny-1", seed=1)
    assert name == "tiny-1"
    first = staged.describe_training_job(name)
    assert first.status == "InProgress" and first.secondary_status in ("Starting", "Downloading", "Training")
    job = wait_done(staged, name)
    assert (job.status, job.secondary_status, job.failure_reason) == ("Completed", "Completed", "")
    assert [e["epoch"] for e in job.epochs] == [1, 2]
    assert set(job.final_metrics) == {"train:accuracy", "validation:accuracy", "train:loss"}
    assert job.final_metrics["validation:accuracy"] > 0.9
    assert job.model_artifact == f"s3://{staged.objects.bucket}/output/tiny-1/output/model.tar.gz"
    assert job.hyperparameters["epochs"] == "2" and job.ended and job.seconds > 0
    log = staged.training_log(name)
    assert "Epoch[1]" in log and "#metrics" in log and "model.tar.gz" in log

    data = staged.store.get(staged.objects.bucket, "output/tiny-1/output/model.tar.gz")
    assert load_artifact(data).classes == ("reddish", "bluish")

    ev = staged.evaluate_training_job(name)
    assert ev.classes == ("reddish", "bluish") and sum(map(sum, ev.confusion_matrix)) == 32
    assert ev.accuracy == pytest.approx(job.final_metrics["validation:accuracy"], abs=1 / 32)
    assert staged.evaluate_training_job(name) == ev  # cached

    # What validation:accuracy was measured on is part of the job (the pages and `scones jobs` say it).
    assert job.validation == "test"
    held = wait_done(staged, staged.create_training_job(synthetic.hyperparameters(epochs=1), job_name="tiny-held",
                                                        validation="holdout", seed=1))
    assert (held.status, held.validation) == ("Completed", "holdout")
    assert {j.job_name: j.validation for j in staged.list_training_jobs()} == {"tiny-1": "test", "tiny-held": "holdout"}

    model = staged.create_model(name)
    assert (model.model_name, model.job_name, model.image_shape) == ("tiny-1", "tiny-1", (3, 16, 16))
    assert "validation:accuracy_served" not in model.metrics  # a float graph: PyTorch's figure is the served one
    assert [m.model_name for m in staged.list_models()] == ["tiny-1"]
    with pytest.raises(ValidationError, match="Cannot create already existing model 'tiny-1'"):
        staged.create_model(name)
    with pytest.raises(ResourceInUse, match="already exists"):
        staged.create_training_job(synthetic.hyperparameters(), job_name="tiny-1")
    assert staged.step_statuses()["train"].state == "done"

    # a dashboard restart: a new backend object on the same workspace sees the same job and metrics
    again = get_backend(load_settings())
    assert again.describe_training_job(name) == staged.describe_training_job(name)


def test_a_job_with_test_time_flip_serves_what_it_validated_on(staged):
    import numpy as np

    name = staged.create_training_job(synthetic.hyperparameters(epochs=1, learning_rate="0.00001", test_time_flip="1"),
                                      job_name="tiny-flip", seed=1)  # hardly trained: answers far from 0 and 1
    job = wait_done(staged, name)
    assert job.status == "Completed" and job.hyperparameters["test_time_flip"] == "1"
    assert job.served_accuracy is None  # a float graph: what it serves scored validation:accuracy
    model = load_artifact(staged.store.get(staged.objects.bucket, "output/tiny-flip/output/model.tar.gz"))
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_allclose(model.predict(images), model.predict(images[:, :, ::-1]), atol=1e-6)  # the flip is in the graph
    ev = staged.evaluate_training_job(name)  # through the artifact: the same answers validation counted
    assert ev.accuracy == pytest.approx(job.final_metrics["validation:accuracy"], abs=1 / 32)


def test_a_job_with_int8_serving_serves_an_8_bit_graph_and_says_how_it_validates(staged):
    import numpy as np
    import onnx

    name = staged.create_training_job(synthetic.hyperparameters(epochs=1, learning_rate="0.00001", test_time_flip="1",
                                                                int8_serving="1"),
                                      job_name="tiny-int8", seed=1)  # hardly trained: answers far from 0 and 1
    job = wait_done(staged, name)
    assert job.status == "Completed" and job.hyperparameters["int8_serving"] == "1"
    data = staged.store.get(staged.objects.bucket, "output/tiny-int8/output/model.tar.gz")
    meta, graph = read_members(data)
    assert meta["precision"] == "int8"
    assert "QuantizeLinear" in {n.op_type for n in onnx.load_from_string(graph).graph.node}
    log = staged.training_log(name)
    said = re.search(r"Quantized the served graph to 8-bit integers \(calibrated on (\d+) training images\).*"
                     r"Validation accuracy of the graph the endpoint serves: ([0-9.]+) \(PyTorch at the last epoch: "
                     r"([0-9.]+)\)", log)
    assert said, log
    assert int(said[1]) == min(128, int(job.hyperparameters["num_training_samples"]))
    assert float(said[3]) == pytest.approx(job.final_metrics["validation:accuracy"], abs=1e-4)
    ev = staged.evaluate_training_job(name)  # evaluation runs the served graph: the accuracy the log gave
    assert ev.accuracy == pytest.approx(float(said[2]), abs=1e-4)
    model_record = staged.create_model(name)  # the model carries the served graph's accuracy beside PyTorch's
    assert model_record.metrics["validation:accuracy_served"] == pytest.approx(float(said[2]), abs=1e-4)
    assert model_record.metrics["validation:accuracy"] == job.final_metrics["validation:accuracy"]
    # the job itself carries it too (the jobs table, Home, `scones jobs`), and a restart reads it back
    assert job.served_accuracy == pytest.approx(float(said[2]), abs=1e-4)
    assert get_backend(load_settings()).describe_training_job(name).served_accuracy == job.served_accuracy
    assert f"(served 8-bit graph {job.served_accuracy:.3f})" in staged.training.step_status().detail
    # a job completed before the column existed reads it from its artifact once, then keeps it in its row
    db = staged.training.db
    db.execute("UPDATE training_jobs SET served_accuracy=NULL WHERE job_name=?", (name,))
    assert staged.describe_training_job(name).served_accuracy == job.served_accuracy
    assert db.query_one("SELECT served_accuracy FROM training_jobs WHERE job_name=?", (name,))[0] == job.served_accuracy
    # ... and one whose quantizing failed (its artifact serves the float graph) has none to show
    from backend.local.training.artifact import build_artifact
    float_artifact = build_artifact(graph, classes=meta["classes"], image_shape=tuple(meta["image_shape"]),
                                    **meta["normalization"], hyperparameters=job.hyperparameters,
                                    metrics=job.final_metrics, job_name=name)
    staged.store.put(staged.objects.bucket, "output/tiny-int8/output/model.tar.gz", float_artifact)
    db.execute("UPDATE training_jobs SET served_accuracy=NULL WHERE job_name=?", (name,))
    assert staged.describe_training_job(name).served_accuracy is None
    staged.store.put(staged.objects.bucket, "output/tiny-int8/output/model.tar.gz", data)  # as trained, for below
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    model = load_artifact(data)
    # the flip is kept: an image and its mirror image make the same pair, so the same answer, bit for bit
    np.testing.assert_allclose(model.predict(images), model.predict(images[:, :, ::-1]), atol=1e-6)


def test_quantizing_calibrates_on_served_inputs_and_validates_the_graph_it_serves(monkeypatch):
    """The spies see what _quantized hands over: at most 128 training images prepared as the endpoint
    prepares them, and the quantized graph (not the float one) scored on the validation images."""
    import numpy as np
    import torch

    from backend.local.training import artifact, service, trainer
    from backend.local.training import hyperparameters as H
    from backend.local.training.data import ImageSet
    from backend.local.training.model import build_resnet

    hp = H.validate({**synthetic.hyperparameters(n_train=200, epochs=1), "int8_serving": "1", "resize": "20"})
    rng = np.random.default_rng(3)
    train = ImageSet(rng.integers(0, 256, (200, 24, 20, 3), dtype=np.uint8), rng.integers(0, 2, 200))
    validation = ImageSet(rng.integers(0, 256, (30, 24, 20, 3), dtype=np.uint8), rng.integers(0, 2, 30))
    torch.manual_seed(0)
    float_graph = artifact.export_onnx(build_resnet(20, 2, hp.image_shape).eval(), (0.5,) * 3, (0.25,) * 3,
                                       hp.image_shape)
    seen: dict = {}
    real_quantize, real_score = artifact.quantize_onnx, service.served_accuracy
    monkeypatch.setattr(artifact, "quantize_onnx",
                        lambda graph, calibration: seen.setdefault("int8", real_quantize(graph, seen.setdefault("cal", calibration))))
    monkeypatch.setattr(service, "served_accuracy",
                        lambda graph, x, labels: seen.setdefault("score", (graph, x, real_score(graph, x, labels)))[2])
    lines: list[str] = []
    graph, precision, served = service._quantized(float_graph, hp, train, validation, 7, 0.5, lines.append)
    assert precision == "int8" and graph == seen["int8"] != float_graph
    assert seen["cal"].shape == (128, 3, 16, 16) and 0.0 <= seen["cal"].min() and seen["cal"].max() <= 1.0
    pick = np.sort(np.random.default_rng(7).permutation(200)[:128])
    np.testing.assert_array_equal(seen["cal"], trainer.served_inputs(train.images[pick], hp).numpy())
    scored_graph, x, accuracy = seen["score"]
    assert scored_graph == graph and served == accuracy  # the served graph is the one scored
    np.testing.assert_array_equal(x, trainer.served_inputs(validation.images, hp).numpy())
    assert f"Validation accuracy of the graph the endpoint serves: {accuracy:.4f} (PyTorch at the last epoch: 0.5000)" in lines[0]
    assert "calibrated on 128 training images" in lines[0]


def test_a_graph_that_cannot_be_quantized_is_served_in_float_and_the_log_says_so():
    import numpy as np

    from backend.local.training import hyperparameters as H
    from backend.local.training.data import ImageSet
    from backend.local.training.service import _quantized

    hp = H.validate({**synthetic.hyperparameters(epochs=1), "int8_serving": "1"})
    images = np.zeros((4, *hp.image_shape[1:], 3), dtype=np.uint8)
    lines: list[str] = []
    result = _quantized(b"not an onnx graph", hp, ImageSet(images, np.zeros(4, dtype=np.int64)),
                        ImageSet(images, np.zeros(4, dtype=np.int64)), 0, 0.5, lines.append)
    assert result == (b"not an onnx graph", "float32", None)
    assert len(lines) == 1 and "quantizing the graph failed" in lines[0] and "serve the float graph" in lines[0]


def test_kill_9_of_the_worker_reads_failed_with_a_reason(staged):
    name = staged.create_training_job(synthetic.hyperparameters(epochs=LONG))
    wait_for(lambda: len(staged.describe_training_job(name).epochs) >= 1)
    # a dashboard restart while training: a new backend object sees the job running and its metrics growing
    restarted = get_backend(load_settings())
    seen = restarted.describe_training_job(name)
    assert seen.status == "InProgress" and seen.secondary_status == "Training" and len(seen.epochs) >= 1
    wait_for(lambda: len(restarted.describe_training_job(name).epochs) > len(seen.epochs))
    pid = worker_pid(staged, name)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z", 10)
    listed = staged.list_training_jobs()  # the first look after the kill: the page's job list (read in one go)
    assert [(j.job_name, j.status, j.secondary_status) for j in listed] == [(name, "Failed", "Failed")]
    job = staged.describe_training_job(name)
    assert listed == [job]  # the list reads each job as describing it alone does
    assert "worker process exited unexpectedly" in job.failure_reason
    log = staged.training_log(name)  # the log says how it ended, once, though the worker could not
    assert log.count("Failed: The worker process exited unexpectedly") == 1 and "Epoch[0]" in log
    assert len(job.epochs) >= 1 and job.model_artifact is None
    with pytest.raises(ValidationError, match="only a Completed job has a model artifact"):
        staged.create_model(name)
    assert staged.step_statuses()["train"].state == "failed"


def test_stop_mid_run_reads_stopped_and_keeps_the_metrics(staged):
    name = staged.create_training_job(synthetic.hyperparameters(epochs=LONG))
    with pytest.raises(ResourceLimitExceeded, match="one job at a time"):
        staged.create_training_job(synthetic.hyperparameters())
    wait_for(lambda: len(staged.describe_training_job(name).epochs) >= 1)
    pid = worker_pid(staged, name)
    job = staged.stop_training_job(name)
    assert (job.status, job.secondary_status, job.failure_reason) == ("Stopped", "Stopped", "")
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z", 20)
    job = staged.describe_training_job(name)
    assert job.status == "Stopped" and 1 <= len(job.epochs) < LONG and job.model_artifact is None
    assert staged.stop_training_job(name).status == "Stopped"  # stopping again changes nothing
    assert staged.training_log(name).count("Stopped by the operator") == 1
    with pytest.raises(ValidationError, match="evaluate a Completed job"):
        staged.evaluate_training_job(name)
    step = staged.step_statuses()["train"]
    assert (step.state, step.detail) == ("failed", f"{name} stopped.")  # no earlier model to fall back on


def test_stopping_a_newer_job_leaves_the_train_step_done(staged):
    done = staged.create_training_job(synthetic.hyperparameters())
    wait_for(lambda: staged.describe_training_job(done).status == "Completed", 120)
    name = staged.create_training_job(synthetic.hyperparameters(epochs=LONG))
    wait_for(lambda: len(staged.describe_training_job(name).epochs) >= 1)
    staged.stop_training_job(name)
    step = staged.step_statuses()["train"]
    assert step.state == "done" and step.detail == f"{done} completed; the newer job {name} was stopped."
    listed = staged.list_training_jobs()  # several jobs read in one go: each as describing it alone reads it
    assert [j.job_name for j in listed] == [name, done] and [j.status for j in listed] == ["Stopped", "Completed"]
    assert listed == [staged.describe_training_job(j.job_name) for j in listed] and len(listed[1].epochs) == 2


def test_a_half_written_artifact_is_never_a_model(staged):
    """A worker killed while uploading leaves at most a hidden temp file; the job is not Completed."""
    name = staged.create_training_job(synthetic.hyperparameters(epochs=LONG))
    wait_for(lambda: staged.describe_training_job(name).secondary_status == "Training")
    staged.stop_training_job(name)
    folder = staged.store.path(staged.objects.bucket, f"output/{name}/output/model.tar.gz").parent
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".tmp-upload").write_bytes(b"half an archive")
    assert staged.list_objects(f"output/{name}/") == []
    assert staged.list_models() == []
    with pytest.raises(ValidationError, match="Stopped; only a Completed job"):
        staged.create_model(name)


def test_defaults_come_from_the_staged_data(staged):
    local = staged.default_training_hyperparameters("local")
    assert local["num_training_samples"] == "64" and local["num_classes"] == "2" and local["num_layers"] == "20"
    aws = staged.default_training_hyperparameters("sagemaker")
    assert aws["num_layers"] == "152" and aws["epochs"] == "30"
    with pytest.raises(ValidationError, match="Unknown preset"):
        staged.default_training_hyperparameters("gpu")
    specs = {s["name"]: s for s in staged.training_hyperparameter_specs()}
    assert specs["optimizer"]["choices"] == ["sgd", "adam", "rmsprop", "nag"]
    assert specs["num_classes"]["required"] and "Valid values" in specs["epochs"]["help"]


def test_unknown_job_names_are_resource_not_found(backend):
    for call in (backend.describe_training_job, backend.stop_training_job, backend.training_log,
                 backend.evaluate_training_job, backend.describe_model):
        with pytest.raises(ResourceNotFound):
            call("nope")


def test_deleting_a_running_job_waits_for_its_worker_before_removing_its_output(staged):
    name = staged.create_training_job(synthetic.hyperparameters(epochs=LONG))
    wait_for(lambda: len(staged.describe_training_job(name).epochs) >= 1)
    pid = worker_pid(staged, name)
    staged.training.delete_training_job(name)
    gone = not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert gone  # the worker had exited before output/<job>/ was removed: it cannot write there afterwards
    assert staged.list_objects(f"output/{name}/") == [] and name not in [j.job_name for j in staged.list_training_jobs()]


def test_staging_again_under_a_running_job_is_refused(staged):
    """A restage just after a job started trained it on the new lists under the old class names."""
    name = staged.create_training_job(synthetic.hyperparameters(epochs=LONG), job_name="reads-the-data")
    with pytest.raises(ResourceInUse, match="Training job reads-the-data is still running on the staged data"):
        staged.start_staging("sample")
    with pytest.raises(ResourceInUse, match="reads-the-data"):
        staged.stage_data("sample")
    assert staged.training._dataset_classes() == ["reddish", "bluish"]  # nothing was staged
    staged.stop_training_job(name)
    wait_done(staged, name)
    assert staged.stage_data("sample").classes == ("bicycle", "motorcycle")


def test_training_on_a_staging_that_was_cut_short_is_refused(staged):
    """A staging killed part way leaves lists without dataset.json: a model trained on it had no class names."""
    from backend.local.training.service import MANIFEST_KEY

    staged.store.delete(staged.objects.bucket, MANIFEST_KEY)
    with pytest.raises(ValidationError, match="not completely staged .* stage the data again"):
        staged.create_training_job(synthetic.hyperparameters())
    assert staged.list_training_jobs() == []


def test_evaluation_after_a_restage_in_another_class_order_maps_classes_by_name(staged):
    """Restaged as (bluish, reddish), the test labels' indices swap: matched by position the accuracy read 1 - a."""
    import json

    name = staged.create_training_job(synthetic.hyperparameters(epochs=2), job_name="by-name", seed=1)
    assert wait_done(staged, name).status == "Completed"
    before = staged.evaluate_training_job(name)
    bucket = staged.objects.bucket
    rows = [line.split("\t") for line in staged.store.get(bucket, "test.lst").decode().splitlines()]
    swapped = "".join(f"{i}\t{1 - int(label)}\t{path}\n" for i, label, path in rows)
    staged.store.put_many(bucket, {"test.lst": swapped.encode(),
                                   "dataset.json": json.dumps({"classes": ["bluish", "reddish"]}).encode()})
    after = staged.evaluate_training_job(name)
    assert after.accuracy == before.accuracy and after.classes == before.classes == ("reddish", "bluish")
    first = rows[0][2]
    staged.store.put(bucket, "test.lst", swapped.encode() + b"\n")  # other bytes: not the cached result
    staged.store.put(bucket, f"test/{first}", b"garbage")  # a staged image damaged: named, not 'request body'
    with pytest.raises(ValidationError, match=f"The staged test image s3://{bucket}/test/{first} is not a readable"):
        staged.evaluate_training_job(name)
    staged.store.put(bucket, "dataset.json", json.dumps({"classes": ["apple", "pear"]}).encode())
    with pytest.raises(ValidationError, match=r"re-staged with other classes \(apple, pear\) than this model knows"):
        staged.evaluate_training_job(name)
