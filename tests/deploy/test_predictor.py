"""The endpoint's image preparation is the one training validated with: with `resize`, the shortest
side to it and then the centre crop (LoadedModel.decode), not a squash to image_shape."""
from __future__ import annotations

import numpy as np
import pytest

from backend.local.serving.server import Predictor
from backend.local.training import artifact


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def resized_artifact(image_shape: tuple[int, int, int], resize: int | None) -> bytes:
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(image_shape[0], 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 2)).eval()
    mean, std = [0.5] * image_shape[0], [0.25] * image_shape[0]
    hyperparameters = {"resize": str(resize)} if resize else {}
    return artifact.build_artifact(artifact.export_onnx(net, mean, std, image_shape), classes=("a", "b"),
                                   image_shape=image_shape, mean=mean, std=std, hyperparameters=hyperparameters)


@pytest.mark.parametrize("image_shape, resize", [((3, 32, 32), 40), ((1, 16, 24), 30), ((3, 32, 32), None)])
@pytest.mark.parametrize("size", [(50, 36), (36, 50), (32, 32), (100, 80)])
def test_the_endpoint_prepares_images_as_validation_did(image_shape, resize, size):
    model = artifact.load_artifact(resized_artifact(image_shape, resize))
    predictor = Predictor(model)
    rng = np.random.default_rng(size[0])
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    pixels[:, : size[0] // 3] = 255  # not symmetric: a wrong crop or squash shows
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    smooth = np.stack([xx * 255 // size[0], yy * 255 // size[1], (xx + yy) * 127 // sum(size)], -1).astype(np.uint8)
    png, jpeg = encoded(pixels, "PNG"), encoded(smooth, "JPEG")  # a photo-like JPEG: smooth, not noise
    np.testing.assert_array_equal(predictor.decode(png), model.decode(png))
    # A JPEG is decoded at a reduced scale when it is large (Pillow's draft), so close rather than equal:
    # a squash instead of the crop, or another crop, would be far off.
    got, want = predictor.decode(jpeg).astype(int), model.decode(jpeg).astype(int)
    assert np.abs(got - want).mean() < 3, np.abs(got - want).mean()
    assert predictor.decode(encoded(pixels, "PNG")).shape == (image_shape[1], image_shape[2], image_shape[0])
