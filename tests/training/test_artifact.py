"""model.tar.gz: ONNX weights that give the torch model's outputs, loaded without torch."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.local.training.artifact import (
    ArtifactError, build_artifact, export_onnx, load_artifact, quantize_onnx, read_members,
)
from backend.local.training.model import build_resnet

REPO = Path(__file__).resolve().parents[2]
MEAN, STD = (0.5, 0.45, 0.4), (0.25, 0.24, 0.26)


@pytest.fixture(scope="module")
def model_and_artifact():
    torch.manual_seed(0)
    model = build_resnet(20, 2, (3, 16, 16))
    with torch.no_grad():  # non-trivial batch-norm statistics, so the export must carry them
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    data = build_artifact(export_onnx(model, MEAN, STD, (3, 16, 16)), classes=["bicycle", "motorcycle"],
                          image_shape=(3, 16, 16), mean=MEAN, std=STD, hyperparameters={"num_layers": "20"},
                          metrics={"validation:accuracy": 0.9}, job_name="job-1", network="ResNet-20")
    return model, data


def test_onnx_outputs_match_torch(model_and_artifact):
    model, data = model_and_artifact
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    loaded = load_artifact(data)
    probs = loaded.predict(images)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(model((x - mean) / std), 1).numpy()
    assert probs.shape == (6, 2)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_a_test_time_flip_export_answers_the_mean_of_the_image_and_its_mirror_image(model_and_artifact):
    model, plain = model_and_artifact
    flipped = load_artifact(build_artifact(export_onnx(model, MEAN, STD, (3, 16, 16), test_time_flip=True),
                                           classes=["bicycle", "motorcycle"], image_shape=(3, 16, 16), mean=MEAN,
                                           std=STD, hyperparameters={"test_time_flip": "1"}))
    images = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    mirrored = images[:, :, ::-1]
    one, other = load_artifact(plain).predict(images), load_artifact(plain).predict(mirrored)
    assert np.abs(one - other).max() > 1e-3  # the network alone is not mirror-symmetric
    both = flipped.predict(images)
    np.testing.assert_allclose(both, (one + other) / 2, atol=1e-5)
    np.testing.assert_allclose(flipped.predict(mirrored), both, atol=1e-5)  # the answer no longer depends on the side
    np.testing.assert_allclose(flipped.predict(images[:1]), both[:1], atol=1e-5)  # each image alone, as the endpoint asks
    np.testing.assert_allclose(both.sum(1), 1.0, atol=1e-5)


def test_the_archive_holds_what_serving_needs(model_and_artifact):
    _, data = model_and_artifact
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["model.json", "model.onnx"]
    meta, onnx_bytes = read_members(data)
    assert meta["classes"] == ["bicycle", "motorcycle"] and meta["image_shape"] == [3, 16, 16]
    assert meta["normalization"] == {"mean": list(MEAN), "std": list(STD)}
    assert meta["hyperparameters"] == {"num_layers": "20"} and meta["input"]["normalization_in_graph"] is True
    assert onnx_bytes[:2] == b"\x08\x08" or len(onnx_bytes) > 100_000


def test_loading_and_predicting_never_imports_torch(model_and_artifact, tmp_path):
    _, data = model_and_artifact
    path = tmp_path / "model.tar.gz"
    path.write_bytes(data)
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(png, format="PNG")
    (tmp_path / "x.png").write_bytes(png.getvalue())
    code = (
        "import sys; from pathlib import Path\n"
        "from backend.local.training.artifact import load_artifact\n"
        f"m = load_artifact(Path({str(path)!r}).read_bytes())\n"
        f"p = m.predict_image_bytes(Path({str(tmp_path / 'x.png')!r}).read_bytes())\n"
        "assert len(p) == 2 and abs(sum(p) - 1) < 1e-5, p\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok', m.classes)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert "ok ('bicycle', 'motorcycle')" in out.stdout


def test_a_truncated_or_foreign_archive_is_refused(model_and_artifact):
    _, data = model_and_artifact
    with pytest.raises(ArtifactError, match="not a readable model.tar.gz"):
        read_members(data[: len(data) // 2])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(ArtifactError, match="lacks model.onnx"):
        read_members(buf.getvalue())


def test_wrong_input_shape_is_a_clear_error(model_and_artifact):
    _, data = model_and_artifact
    with pytest.raises(ArtifactError, match=r"expects images of shape \(3, 16, 16\)"):
        load_artifact(data).predict(np.zeros((1, 8, 8, 3), dtype=np.uint8))


def test_decode_prepares_images_as_training_validated(model_and_artifact):
    """With `resize`, shortest side to `resize`, then a centre crop; without, straight to image_shape."""
    from PIL import Image

    _, data = model_and_artifact
    meta, onnx_bytes = read_members(data)
    rgb = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    plain = load_artifact(data).decode(buf.getvalue())
    assert plain.shape == (16, 16, 3)
    with_resize = build_artifact(onnx_bytes, classes=meta["classes"], image_shape=(3, 16, 16), mean=MEAN, std=STD,
                                 hyperparameters={"resize": "20"})
    cropped = load_artifact(with_resize).decode(buf.getvalue())
    expected = np.asarray(Image.fromarray(rgb).resize((27, 20), Image.BILINEAR))[2:18, 5:21]
    assert np.array_equal(cropped, expected)


def test_an_int8_graph_computes_in_8_bits_and_answers_as_the_float_one_does(model_and_artifact):
    import onnx

    model, plain = model_and_artifact
    rng = np.random.default_rng(2)
    float_graph = export_onnx(model, MEAN, STD, (3, 16, 16), test_time_flip=True)
    calibration = rng.random((64, 3, 16, 16), dtype=np.float32)
    int8_graph = quantize_onnx(float_graph, calibration)
    ops = {n.op_type for n in onnx.load_from_string(int8_graph).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    initializers = {i.data_type for i in onnx.load_from_string(int8_graph).graph.initializer}
    assert onnx.TensorProto.INT8 in initializers  # the weights are stored as 8-bit integers
    kw = dict(classes=["bicycle", "motorcycle"], image_shape=(3, 16, 16), mean=MEAN, std=STD, hyperparameters={})
    exact = load_artifact(build_artifact(float_graph, **kw))
    served = load_artifact(build_artifact(int8_graph, precision="int8", **kw))
    assert served.meta["precision"] == "int8" and exact.meta["precision"] == "float32"
    images = (rng.random((40, 16, 16, 3)) * 255).astype(np.uint8)
    a, b = exact.predict(images), served.predict(images)
    assert np.abs(a - b).max() < 0.1  # close, not equal: 8-bit arithmetic
    assert not np.array_equal(a, b)
    np.testing.assert_allclose(b.sum(1), 1.0, atol=1e-5)


def test_quantizing_without_calibration_images_is_refused(model_and_artifact):
    model, _ = model_and_artifact
    with pytest.raises(ValueError, match="calibration images"):
        quantize_onnx(export_onnx(model, MEAN, STD, (3, 16, 16)), np.zeros((0, 3, 16, 16), dtype=np.float32))


def test_quantizing_leaves_the_logging_setup_as_it_found_it(model_and_artifact):
    import logging

    model, _ = model_and_artifact
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quantize_onnx(export_onnx(model, MEAN, STD, (3, 16, 16)), np.random.default_rng(0).random((4, 3, 16, 16), dtype=np.float32))
    assert root.handlers == handlers and root.level == level
    assert logging.root.manager.disable == logging.NOTSET
