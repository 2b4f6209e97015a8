"""The algorithm's ResNet family, written in plain PyTorch (torchvision is not used).

SageMaker's built-in image-classification algorithm is MXNet's pre-activation ResNet ("v2",
He et al. 2016, "Identity Mappings in Deep Residual Networks"). `num_layers` picks the depth the
same way its symbol builder does:

- small-image depths 20, 32, 44, 56, 110 (6n+2, three stages of basic blocks, 16/32/64 filters):
  the CIFAR networks of the ResNet papers;
- ImageNet depths 18, 34 (basic blocks) and 50, 101, 152, 200 (bottlenecks), four stages of
  64..512 (x4 for bottlenecks) filters. Images of 32 pixels or less start with one 3x3 convolution
  instead of the 7x7/stride-2 convolution and max-pool, as MXNet's builder does for CIFAR-sized input.

Inputs are float tensors (N, C, H, W) already normalised by the trainer; the network ends in
logits. Nothing here imports training code, so the export can trace it alone.
"""
from __future__ import annotations

import torch
from torch import nn

from backend.local.training.architectures import SUPPORTED_DEPTHS, Architecture, architecture

__all__ = ["SUPPORTED_DEPTHS", "Architecture", "ResNet", "architecture", "build_resnet", "count_parameters"]


class BasicBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus the identity (or a 1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu(self.bn1(x))
        short = x if self.shortcut is None else self.shortcut(act)
        out = self.conv1(act)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + short


class BottleneckBlock(nn.Module):
    """BN-ReLU-conv1x1 (c/4), BN-ReLU-conv3x3 (c/4), BN-ReLU-conv1x1 (c), plus the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        mid = cout // 4
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, mid, 1, 1, 0, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, 1, 0, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu(self.bn1(x))
        short = x if self.shortcut is None else self.shortcut(act)
        out = self.conv1(act)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + short


class ResNet(nn.Module):
    def __init__(self, arch: Architecture, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.arch = arch
        stem = arch.filters[0]
        if arch.small_stem:
            self.stem = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem),
                nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
            )
        block = BottleneckBlock if arch.bottleneck else BasicBlock
        layers: list[nn.Module] = []
        cin = stem
        for stage, (units, cout) in enumerate(zip(arch.units, arch.filters[1:])):
            for i in range(units):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(block(cin, cout, stride))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        x = self.pool(self.relu(self.bn(x)))
        return self.fc(torch.flatten(x, 1))


def build_resnet(num_layers: int, num_classes: int, image_shape: tuple[int, int, int] = (3, 32, 32)) -> ResNet:
    channels, height, width = image_shape
    return ResNet(architecture(num_layers, min(height, width)), num_classes, channels)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
