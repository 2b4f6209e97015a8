"""The algorithm's ResNet family as data: which depths exist and what each one means.

Torch-free, so validation and the pages can name a network without importing torch; `model.py`
builds the modules.
"""
from __future__ import annotations

from dataclasses import dataclass

SMALL_IMAGE_DEPTHS = (20, 32, 44, 56, 110)
IMAGENET_DEPTHS = (18, 34, 50, 101, 152, 200)
SUPPORTED_DEPTHS = tuple(sorted(SMALL_IMAGE_DEPTHS + IMAGENET_DEPTHS))

_IMAGENET_UNITS = {
    18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
    101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3),
}


@dataclass(frozen=True)
class Architecture:
    """What a depth means: blocks per stage, filters per stage, block kind and stem."""

    num_layers: int
    units: tuple[int, ...]
    filters: tuple[int, ...]  # stem width, then the output width of each stage
    bottleneck: bool
    small_stem: bool

    @property
    def description(self) -> str:
        kind = "bottleneck" if self.bottleneck else "basic"
        return (f"pre-activation ResNet-{self.num_layers}: {len(self.units)} stages of "
                f"{'/'.join(map(str, self.units))} {kind} blocks, {'/'.join(map(str, self.filters[1:]))} filters")


def architecture(num_layers: int, image_size: int = 32) -> Architecture:
    """The network `num_layers` names; ValueError for a depth outside the family."""
    small = image_size <= 32
    if num_layers in SMALL_IMAGE_DEPTHS:
        n = (num_layers - 2) // 6
        return Architecture(num_layers, (n, n, n), (16, 16, 32, 64), False, True)
    if num_layers in _IMAGENET_UNITS:
        bottleneck = num_layers >= 50
        filters = (64, 256, 512, 1024, 2048) if bottleneck else (64, 64, 128, 256, 512)
        return Architecture(num_layers, _IMAGENET_UNITS[num_layers], filters, bottleneck, small)
    raise ValueError(f"num_layers={num_layers} is not one of {', '.join(map(str, SUPPORTED_DEPTHS))}")
