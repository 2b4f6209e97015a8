"""A mirror-symmetric (flip-equivariant) pre-activation ResNet, for design studies.

Every feature channel comes in a pair (a, b) whose weights are tied so that mirroring the input
image left to right mirrors each feature map and swaps a with b. Global pooling then sums each
pair, so the network's answer for an image and for its mirror image is the same by construction:
what test-time flip buys, at the cost of one forward pass instead of two.

Channels are in two blocks (a0..aC-1, b0..bC-1). Downsampling
is a 2x2 average pool followed by a stride-1 convolution: a stride-2 convolution on an even width
samples the mirror image on a grid shifted by one pixel and would break the symmetry.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from backend.local.training.architectures import Architecture


class FlipConv(nn.Module):
    """A convolution from `cin` channel pairs (or a plain image when `image_input`) to `cout` pairs."""

    def __init__(self, cin: int, cout: int, k: int, image_input: bool = False):
        super().__init__()
        self.k, self.image_input = k, image_input
        shape = (cout, cin if image_input else 2 * cin, k, k)  # a-outputs' weights; the b-outputs' are mirrored
        self.weight = nn.Parameter(torch.empty(shape))
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / (2 * cout * k * k)))  # kaiming fan_out of the full conv

    def full_weight(self) -> torch.Tensor:
        v = self.weight
        if self.image_input:
            return torch.cat([v, v.flip(-1)])
        half = v.shape[1] // 2
        return torch.cat([v, torch.cat([v[:, half:], v[:, :half]], 1).flip(-1)])  # b-outputs: a <-> b, mirrored

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.full_weight(), padding=self.k // 2)


class FlipBatchNorm(nn.Module):
    """Batch norm whose scale and shift are shared within each channel pair. In training each channel keeps
    its own batch statistics (the native kernel; a pair's two are equal in expectation under random
    flips); in evaluation the pair's running statistics are pooled, so the network is exactly symmetric."""

    def __init__(self, pairs: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(pairs))
        self.bias = nn.Parameter(torch.zeros(pairs))
        self.register_buffer("running_mean", torch.zeros(2 * pairs))
        self.register_buffer("running_var", torch.ones(2 * pairs))

    def pooled_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        m, v = self.running_mean.view(2, -1), self.running_var.view(2, -1)
        mean = m.mean(0)
        var = v.mean(0) + ((m[0] - m[1]) / 2) ** 2
        return mean.repeat(2), var.repeat(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight.repeat(2), self.bias.repeat(2)
        if self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, weight, bias, True, self.momentum, self.eps)
        mean, var = self.pooled_stats()
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)


class FlipBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.bn1 = FlipBatchNorm(cin)
        self.conv1 = FlipConv(cin, cout, 3)
        self.bn2 = FlipBatchNorm(cout)
        self.conv2 = FlipConv(cout, cout, 3)
        self.shortcut = FlipConv(cin, cout, 1) if down or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        if self.down:
            act = F.avg_pool2d(act, 2)
            x = act
        short = x if self.shortcut is None else self.shortcut(act)
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + short


class FlipResNet(nn.Module):
    """The small-image ResNet of `arch` with half its filters as free channels (the other half mirrored),
    so it costs what the plain network costs."""

    def __init__(self, arch: Architecture, num_classes: int, in_channels: int = 3):
        super().__init__()
        if not arch.small_stem:
            raise ValueError("the mirror-symmetric network exists for the small-image depths (20, 32, 44, 56, 110)")
        self.arch = arch
        pairs = [f // 2 for f in arch.filters]
        self.stem = FlipConv(in_channels, pairs[0], 3, image_input=True)
        layers: list[nn.Module] = []
        cin = pairs[0]
        for stage, (units, cout) in enumerate(zip(arch.units, pairs[1:])):
            for i in range(units):
                layers.append(FlipBlock(cin, cout, down=stage > 0 and i == 0))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.bn = FlipBatchNorm(cin)
        self.fc = nn.Linear(cin, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stages(self.stem(x))))
        n, c = x.shape[:2]
        x = x.mean((2, 3)).reshape(n, 2, c // 2).sum(1)  # each pair summed: the same for the mirror image
        return self.fc(x)
