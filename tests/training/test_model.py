"""The algorithm's ResNet family: each num_layers is a real network of that depth."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from backend.local.training.model import SUPPORTED_DEPTHS, architecture, build_resnet, count_parameters


def weighted_layers(arch) -> int:
    """Convolutions and the classifier along the main path (projections excluded), as the papers count."""
    per_block = 3 if arch.bottleneck else 2
    return 1 + per_block * sum(arch.units) + 1


@pytest.mark.parametrize("depth", SUPPORTED_DEPTHS)
def test_each_depth_has_that_many_weighted_layers(depth):
    assert weighted_layers(architecture(depth, 32)) == depth


def test_small_and_imagenet_families():
    assert architecture(20).units == (3, 3, 3) and architecture(20).filters == (16, 16, 32, 64)
    assert architecture(110).units == (18, 18, 18)
    assert architecture(152).units == (3, 8, 36, 3) and architecture(152).bottleneck
    assert architecture(18).filters == (64, 64, 128, 256, 512) and not architecture(18).bottleneck
    assert architecture(50, 32).small_stem and not architecture(50, 224).small_stem
    with pytest.raises(ValueError):
        architecture(19)


def test_counted_layers_match_the_built_module():
    model = build_resnet(32, 2, (3, 16, 16))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 32  # 31 3x3 convolutions + the classifier
    assert 460_000 < count_parameters(model) < 470_000


@pytest.mark.parametrize("depth,shape", [(20, (3, 32, 32)), (18, (3, 16, 16)), (50, (1, 64, 64))])
def test_forward_gives_one_logit_per_class(depth, shape):
    model = build_resnet(depth, 3, shape).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
