"""The training loop of the local image-classification algorithm, on numpy arrays.

Input: validated `Hyperparameters`, the training images (uint8, N x H x W x C) with their class
indices, and optionally a validation set. Each epoch ends with a callback that receives the
algorithm's metrics (`train:accuracy`, `train:loss`, `validation:accuracy`); a stop check runs
between batches. The loop knows nothing about buckets, SQLite or processes: the service feeds it.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from backend.local.training.artifact import resized_size
from backend.local.training.data import ImageSet
from backend.local.training.hyperparameters import Hyperparameters
from backend.local.training.model import ResNet, build_resnet

EpochCallback = Callable[[dict[str, float]], None]
StopCheck = Callable[[], bool]
Log = Callable[[str], None]

CROP_PAD = 4  # pixels of zero padding before a random crop of an image already at image_shape


class TrainingStopped(Exception):
    """The stop check asked the loop to end early (the job becomes Stopped, not Failed)."""


@dataclass(frozen=True)
class Recipe:
    """Training tricks SageMaker's algorithm exposes no hyperparameter for, kept for design studies.

    Compared on five 80/20 hold-outs of the training data (bench/train.py --design, candidates
    with '_' keys): label smoothing 0.1, cutout 8 or 16, mixup 0.2 or 1.0 and weight averaging
    (EMA 0.99, 0.995) did not beat the plain recipe (0.896 hold-out accuracy), so all are off. Later, with the
    CutMix defaults: a stem started as the whitening of the training images' 3x3 patches (airbench's trick),
    trained on or frozen, gave 0.912 and 0.911 against 0.907 (five folds, seed 1) but 0.889 against about
    0.897 (seed 0): noise, so it is off too. Weight averaging (SWA) from epoch 56 with batch-norm statistics
    recomputed on batches augmented as in training (on clean images they had sunk it): 0.913 against 0.907
    (seed 1), 0.898 against about 0.897 (seed 0); with the learning rate held at 0.01 while averaging, 0.913
    (seed 1) and no better on the first folds of seed 0. Off.
    A mirror-symmetric network (flipnet.py: each filter has a mirrored twin, so the answer is the same for an
    image and its mirror image, what test_time_flip buys, at one forward pass; 2026-11-29, five folds each):
    0.918 against 0.907 (seed 1) but 0.892 against about 0.897 (seed 0), noise again. Off.
    Each residual branch's last convolution started at zero (zero_init_residual; 2026-11-30, with the flip
    defaults, five folds each): 0.903 against 0.919 (seed 1) and 0.914 against 0.904 (seed 0). Noise. Off.
    CutMix did beat it and is therefore not hidden here: it is the named local option `cutmix`
    (hyperparameters.py), shown on the page and stored with each job.
    """

    label_smoothing: float = 0.0
    cutout: int = 0  # side of a square zeroed (after normalisation) at a random place in each training image
    mixup_alpha: float = 0.0
    ema_decay: float = 0.0  # > 0: validate and export an exponential moving average of the weights
    whiten_stem: str = ""  # "init" or "frozen": the stem starts as a whitening of the training images' patches
    swa_start: int = 0  # > 0: from this epoch on, average the weights at each epoch's end (SWA), then recompute
    # batch-norm statistics on training batches augmented as in training, and validate and export the average
    whiten_eps: float = 5e-4
    flip_equivariant: bool = False  # the mirror-symmetric network of flipnet.py (same depth and cost)
    zero_init_residual: bool = False  # each residual branch's last convolution starts at zero (blocks start as identity)


DEFAULT_RECIPE = Recipe()


@dataclass
class TrainResult:
    model: ResNet  # float32, eval mode, on the CPU
    mean: tuple[float, ...]  # per-channel mean and std of the training pixels (0..1 scale)
    std: tuple[float, ...]
    epochs: list[dict[str, float]]
    epoch_seconds: list[float]
    stopped_early: bool
    device: str


# -- image preparation ---------------------------------------------------------------------------


def fit_images(images: np.ndarray, hp: Hyperparameters) -> np.ndarray:
    """Images at the size training crops from: shortest side = `resize` when set, else image_shape."""
    channels, height, width = hp.image_shape
    n, h, w, c = images.shape
    if hp.resize:
        size = resized_size((w, h), hp.resize, (width, height))
    else:
        size = (width, height)
    if (w, h) != size:
        images = np.stack([np.asarray(Image.fromarray(im.squeeze(-1) if c == 1 else im).resize(size, Image.BILINEAR))
                           .reshape(size[1], size[0], c) for im in images])
    if channels == 1 and images.shape[-1] == 3:
        images = np.round(images @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
    elif channels == 3 and images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.ascontiguousarray(images)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in 0..1."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top, left = (x.shape[2] - height) // 2, (x.shape[3] - width) // 2
    return x[:, :, top:top + height, left:left + width]


def served_inputs(images: np.ndarray, hp: Hyperparameters) -> torch.Tensor:
    """uint8 NHWC images as validation sees them and the exported graph takes them: float NCHW in 0..1
    at image_shape (with `resize`, the centre crop)."""
    _, height, width = hp.image_shape
    return center_crop(to_tensor(fit_images(images, hp)), height, width)


# -- augmentation (batched, on tensors) ----------------------------------------------------------


def random_crop_flip(x: torch.Tensor, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    if x.shape[2] == height and x.shape[3] == width:
        x = F.pad(x, (CROP_PAD, CROP_PAD, CROP_PAD, CROP_PAD))
    top = torch.randint(0, x.shape[2] - height + 1, (n,), generator=gen)
    left = torch.randint(0, x.shape[3] - width + 1, (n,), generator=gen)
    rows = (top[:, None] + torch.arange(height))[:, None, :, None]
    cols = (left[:, None] + torch.arange(width))[:, None, None, :]
    x = x[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def _rgb_to_hls(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc, minc = x.max(1).values, x.min(1).values
    light = (maxc + minc) / 2
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    sat = torch.where(delta > 0, delta / torch.where(light <= 0.5, maxc + minc, 2.0 - maxc - minc).clamp_min(1e-6),
                      torch.zeros_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(r == maxc, bc - gc, torch.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    return hue, light, sat


def _hls_to_rgb(h: torch.Tensor, light: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    m2 = torch.where(light <= 0.5, light * (1.0 + s), light + s - light * s)
    m1 = 2.0 * light - m2

    def channel(hue: torch.Tensor) -> torch.Tensor:
        hue = hue % 1.0
        return torch.where(hue < 1 / 6, m1 + (m2 - m1) * hue * 6.0,
                           torch.where(hue < 0.5, m2,
                                       torch.where(hue < 2 / 3, m1 + (m2 - m1) * (2 / 3 - hue) * 6.0, m1)))

    return torch.stack([channel(h + 1 / 3), channel(h), channel(h - 1 / 3)], 1)


def random_hls(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The algorithm's crop_color shifts: hue +-36 (of OpenCV's 180), saturation and lightness +-50 (of 255)."""
    if x.shape[1] != 3:
        return x
    n = x.shape[0]
    dh = (torch.rand(n, generator=gen) * 72 - 36) / 180.0
    ds = (torch.rand(n, generator=gen) * 100 - 50) / 255.0
    dl = (torch.rand(n, generator=gen) * 100 - 50) / 255.0
    h, light, s = _rgb_to_hls(x)
    h = h + dh[:, None, None]
    light = (light + dl[:, None, None]).clamp(0, 1)
    s = (s + ds[:, None, None]).clamp(0, 1)
    return _hls_to_rgb(h, light, s).clamp(0, 1)


def random_affine(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """crop_color_transform: rotation up to 10 degrees, shear up to 0.1, aspect ratio change up to 0.25."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    shear = (torch.rand(n, generator=gen) * 2 - 1) * 0.1
    aspect = 1 + (torch.rand(n, generator=gen) * 2 - 1) * 0.25
    sx, sy = torch.sqrt(aspect), 1 / torch.sqrt(aspect)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * sx
    theta[:, 0, 1] = -sin * sx + shear
    theta[:, 1, 0] = sin * sy
    theta[:, 1, 1] = cos * sy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero one size x size square per image, at a random place (it may hang over the border)."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=gen)[:, None, None]
    cx = torch.randint(0, w, (n,), generator=gen)[:, None, None]
    ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return x.masked_fill(inside[:, None], 0.0)


def cutmix(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al., 2019) on a batch: one random box, its area drawn uniformly, is replaced in
    every image by the same box of a partner image. Returns (mixed images, partner index, share of
    each image that is its own), the weight of its own label in the loss."""
    n, _, h, w = x.shape
    cut = math.sqrt(float(torch.rand(1, generator=gen)))  # side ratio: the box's area is uniform in [0, 1]
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(torch.randint(0, h, (1,), generator=gen)), int(torch.randint(0, w, (1,), generator=gen))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    partner = torch.randperm(n, generator=gen)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[partner, :, top:bottom, left:right]
    return mixed, partner, 1.0 - (bottom - top) * (right - left) / (h * w)


def augment(x: torch.Tensor, hp: Hyperparameters, gen: torch.Generator) -> torch.Tensor:
    _, height, width = hp.image_shape
    if hp.augmentation_type is None:
        return center_crop(x, height, width)
    x = random_crop_flip(x, height, width, gen)
    if hp.augmentation_type in ("crop_color", "crop_color_transform"):
        x = random_hls(x, gen)
    if hp.augmentation_type == "crop_color_transform":
        x = random_affine(x, gen)
    return x


# -- optimisation --------------------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, hp: Hyperparameters) -> torch.optim.Optimizer:
    params = model.parameters()
    if hp.optimizer in ("sgd", "nag"):
        nesterov = hp.optimizer == "nag" and hp.momentum > 0
        return torch.optim.SGD(params, lr=hp.learning_rate, momentum=hp.momentum,
                               weight_decay=hp.weight_decay, nesterov=nesterov)
    if hp.optimizer == "adam":
        return torch.optim.Adam(params, lr=hp.learning_rate, betas=(hp.beta_1, hp.beta_2), eps=hp.eps)
    if hp.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=hp.learning_rate, alpha=hp.gamma, eps=hp.eps)
    raise ValueError(f"unknown optimizer {hp.optimizer}")


def learning_rate_at(epoch: int, hp: Hyperparameters) -> float:
    """Step schedule: multiplied by lr_scheduler_factor after each epoch listed in lr_scheduler_step."""
    drops = sum(1 for step in hp.lr_scheduler_step if epoch > step)
    return hp.learning_rate * hp.lr_scheduler_factor ** drops


class EarlyStopping:
    """The algorithm's rule: after min_epochs, stop when validation accuracy has not improved by a
    relative `tolerance` for `patience` epochs."""

    def __init__(self, hp: Hyperparameters):
        self.enabled = hp.early_stopping
        self.min_epochs, self.patience, self.tolerance = (
            hp.early_stopping_min_epochs, hp.early_stopping_patience, hp.early_stopping_tolerance)
        self.best: float | None = None
        self.since_best = 0

    def should_stop(self, epoch: int, accuracy: float | None) -> bool:
        if not self.enabled or accuracy is None:
            return False
        improved = self.best is None or (
            accuracy > self.best if self.best == 0 else (accuracy - self.best) / self.best > self.tolerance)
        if improved:
            self.best, self.since_best = accuracy, 0
        else:
            self.since_best += 1
        return epoch >= self.min_epochs and self.since_best >= self.patience


def training_batch(x: torch.Tensor, hp: Hyperparameters, recipe: Recipe, gen: torch.Generator, mean: torch.Tensor,
                   std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """A batch as training sees it: augmented, normalised, then cut out, CutMix'd or mixed up as asked. Returns
    (images, partner index or None, share of each image that is its own: its label's weight in the loss)."""
    xb = (augment(x, hp, gen) - mean) / std
    if recipe.cutout and hp.augmentation_type:
        xb = cutout(xb, recipe.cutout, gen)
    if hp.cutmix > 0 and float(torch.rand(1, generator=gen)) < hp.cutmix:  # validation asks augmentation_type
        return cutmix(xb, gen)
    if recipe.mixup_alpha > 0:
        lam = float(torch.distributions.Beta(recipe.mixup_alpha, recipe.mixup_alpha).sample())
        partner = torch.randperm(len(x), generator=gen)
        return lam * xb + (1 - lam) * xb[partner], partner, lam
    return xb, None, 1.0


@torch.no_grad()
def recompute_batch_norm(model: torch.nn.Module, x_train: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                         hp: Hyperparameters, recipe: Recipe, gen: torch.Generator, device: torch.device, batch: int,
                         passes: int = 2) -> None:
    """Batch-norm running statistics of averaged weights, from training batches augmented as in training
    (on clean images they sank the accuracy: the network was trained on augmented statistics)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch
    model.train()
    for _ in range(passes):
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), batch):
            xb, _, _ = training_batch(x_train[order[i:i + batch]], hp, recipe, gen, mean, std)
            with autocast_for(device, hp):
                model(xb.to(device).contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def whiten_stem(model: ResNet, x: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> None:
    """Set the stem convolution to the whitening of the training images' k x k patches (its output
    channels get the leading principal components, each scaled to unit variance)."""
    conv = model.stem if isinstance(model.stem, torch.nn.Conv2d) else model.stem[0]
    cout, cin, k, _ = conv.weight.shape
    patches = F.unfold(x, k)  # N x (cin*k*k) x L
    patches = patches.transpose(1, 2).reshape(-1, cin * k * k)
    pick = torch.randperm(len(patches), generator=gen)[:50_000]
    p = patches[pick].double()
    p = p - p.mean(0)
    cov = p.T @ p / len(p)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    values, vectors = values.flip(0), vectors.flip(1)
    n = min(cout, cin * k * k)
    w = (vectors[:, :n] / torch.sqrt(values[:n] + recipe.whiten_eps)).T.reshape(n, cin, k, k).float()
    with torch.no_grad():
        conv.weight[:n] = w
    if recipe.whiten_stem == "frozen":
        conv.weight.requires_grad_(False)


# -- threads -------------------------------------------------------------------------------------


class ThreadGovernor:
    """How many CPU threads the next training step uses.

    All cores are fastest on a quiet machine (about 1.7x one thread here), but when another busy
    process shares the cores, OpenMP's barriers between threads make each step many times slower
    (two 2-thread trainings on 2 cores: 20x each), while one thread per process degrades gracefully.
    So the governor times steps (per image): after a few warm-up steps on all cores it runs a few on
    one thread to learn that speed (the median of its latest steps, so it follows the load), then keeps
    all cores while they beat it. It runs one thread for a while (8 steps, doubling up to 256 while
    all cores keep losing) after two all-core steps in a row lost, or after one that lost right after
    such a stretch. A light, bursty load (the dashboard polling a running job in a browser) stalls
    single steps now and then; answering each with 8 one-thread steps made training beside the Train
    page 1.2-1.6x slower than keeping all cores (measured, 30 epochs: 34-37 s against 29-33 s). A
    busy process that stays costs two slow steps the first time and one per try after that.
    """

    WARMUP_STEPS, PROBE_STEPS, FIRST_BACKOFF, MAX_BACKOFF = 3, 3, 8, 256
    LOSSES_IN_A_ROW, ONE_THREAD_SAMPLES = 2, 5

    def __init__(self, max_threads: int):
        self.max_threads = max(1, max_threads)
        self.threads = self.max_threads
        self.one_thread_times: deque[float] = deque(maxlen=self.ONE_THREAD_SAMPLES)  # latest s/image on one thread
        self.backoff, self.wait, self.steps, self.losses = self.FIRST_BACKOFF, 0, 0, 0

    @property
    def one_thread(self) -> float | None:
        """One thread's seconds per image lately (the median of its latest steps)."""
        return statistics.median(self.one_thread_times) if self.one_thread_times else None

    def step_done(self, seconds_per_image: float) -> int:
        """Record a step's time; returns the threads for the next step."""
        self.steps += 1
        if self.max_threads == 1:
            return 1
        if self.threads == 1:
            self.one_thread_times.append(seconds_per_image)
            self.wait -= 1
            if self.wait <= 0:
                self.threads, self.losses = self.max_threads, 0
            return self.threads
        reference = self.one_thread
        if reference is None:
            if self.steps >= self.WARMUP_STEPS:
                self.threads, self.wait = 1, self.PROBE_STEPS
        elif seconds_per_image > reference:
            self.losses += 1
            # Right after a fallback (the backoff not yet reset by a win), one loss is enough.
            if self.losses >= self.LOSSES_IN_A_ROW or self.backoff > self.FIRST_BACKOFF:
                self.threads, self.wait = 1, self.backoff
                self.backoff = min(self.backoff * 2, self.MAX_BACKOFF)
        else:
            self.losses, self.backoff = 0, self.FIRST_BACKOFF
        return self.threads


# -- the loop ------------------------------------------------------------------------------------


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_for(device: torch.device, hp: Hyperparameters):
    """precision_dtype=float16: float16 autocast on CUDA, bfloat16 on CPUs (float32 weights either way)."""
    if hp.precision_dtype != "float16":
        return nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def predict_proba(model: torch.nn.Module, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                  device: torch.device, hp: Hyperparameters, batch: int = 256) -> torch.Tensor:
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        xb = ((x[i:i + batch] - mean) / std).to(device).contiguous(memory_format=torch.channels_last)
        with autocast_for(device, hp):
            logits = model(xb)
            probs = torch.softmax(logits.float(), 1)
            if hp.test_time_flip:  # as the exported graph answers: the mean with the mirror image's
                mirrored = model(xb.flip(3).contiguous(memory_format=torch.channels_last))
                probs = (probs + torch.softmax(mirrored.float(), 1)) / 2
        out.append(probs.cpu())
    return torch.cat(out) if out else torch.zeros(0, hp.num_classes)


def train(hp: Hyperparameters, train_set: ImageSet, validation: ImageSet | None = None, *,
          seed: int = 0, on_epoch: EpochCallback | None = None, should_stop: StopCheck | None = None,
          log: Log | None = None, device: torch.device | None = None, threads: int | None = None,
          recipe: Recipe = DEFAULT_RECIPE) -> TrainResult:
    """Train the ResNet `hp.num_layers` names; raises TrainingStopped when `should_stop()` turns true."""
    log = log or (lambda line: None)
    device = device or pick_device()
    governor = None
    if device.type == "cpu":
        if threads is None:
            governor = ThreadGovernor(len(os.sched_getaffinity(0)))
        torch.set_num_threads(threads or governor.threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    _, height, width = hp.image_shape

    x_train = to_tensor(fit_images(train_set.images, hp))
    y_train = torch.from_numpy(train_set.labels)
    mean = x_train.mean((0, 2, 3), keepdim=True)
    std = x_train.std((0, 2, 3), keepdim=True).clamp_min(1e-3)
    x_val = y_val = None
    if validation is not None and len(validation):
        x_val = served_inputs(validation.images, hp)
        y_val = torch.from_numpy(validation.labels)

    if recipe.flip_equivariant:
        if recipe.swa_start or recipe.whiten_stem or hp.image_shape[1] % 4 or hp.image_shape[2] % 4:
            # its pair-shared batch norm is not one the SWA recompute finds, its stem is not a plain conv, and
            # 2x2 pooling of an odd size drops a column, which breaks the symmetry
            raise ValueError("flip_equivariant needs image sides divisible by 4 and no swa_start or whiten_stem")
        from backend.local.training.architectures import architecture
        from backend.local.training.flipnet import FlipResNet

        model = FlipResNet(architecture(hp.num_layers, min(hp.image_shape[1:])), hp.num_classes, hp.image_shape[0])
    else:
        model = build_resnet(hp.num_layers, hp.num_classes, hp.image_shape)
        if recipe.zero_init_residual:
            for block in model.modules():
                last = getattr(block, "conv3", None) or getattr(block, "conv2", None) if hasattr(block, "conv1") else None
                if isinstance(last, torch.nn.Conv2d):
                    torch.nn.init.zeros_(last.weight)
    if recipe.whiten_stem:
        whiten_stem(model, (x_train - mean) / std, recipe, gen)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, hp)
    # float16 on CUDA needs loss scaling; bfloat16 on CPUs has float32's range and needs none.
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and hp.precision_dtype == "float16")
    stopper = EarlyStopping(hp)
    ema = None
    if recipe.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
    swa = None
    if recipe.swa_start > 0:
        from torch.optim.swa_utils import AveragedModel

        swa = AveragedModel(model)
    n = len(x_train)
    batch = min(hp.mini_batch_size, n)
    log(f"Network: {model.arch.description}; {sum(p.numel() for p in model.parameters()):,} parameters; "
        f"device {device.type}; training precision {hp.precision_dtype}; {n} training images, "
        f"{0 if x_val is None else len(x_val)} validation images.")

    history: list[dict[str, float]] = []
    threads_used: dict[int, int] = {}
    epoch_seconds: list[float] = []
    stopped_early = False
    for epoch in range(1, hp.epochs + 1):
        started = time.perf_counter()
        lr = learning_rate_at(epoch, hp)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        order = torch.randperm(n, generator=gen)
        if n % batch == 1 and n > 1:  # a batch of one image cannot be batch-normalised
            order = order[:-1]
        loss_sum, correct, seen = 0.0, 0, 0
        mixed_correct, mixed_seen = 0.0, 0
        for i in range(0, len(order), batch):
            if should_stop is not None and should_stop():
                raise TrainingStopped(f"Stopped during epoch {epoch}.")
            step_started = time.perf_counter()
            idx = order[i:i + batch]
            xb, partner, lam = training_batch(x_train[idx], hp, recipe, gen, mean, std)
            yb = y_train[idx]
            xb = xb.to(device).contiguous(memory_format=torch.channels_last)
            yb = yb.to(device)
            yb_partner = None if partner is None else yb[partner.to(device)]
            with autocast_for(device, hp):
                logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=recipe.label_smoothing)
                if partner is not None:
                    loss = lam * loss + (1 - lam) * F.cross_entropy(
                        logits.float(), yb_partner, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += float(loss.detach()) * len(idx)
            predicted = logits.argmax(1)
            if partner is None:
                correct += int((predicted == yb).sum())
                seen += len(idx)
            else:  # a mixed batch: right by the share of each label (counted only if no batch was clean)
                mixed_correct += (lam * int((predicted == yb).sum())
                                  + (1 - lam) * int((predicted == yb_partner).sum()))
                mixed_seen += len(idx)
            if governor is not None:
                threads_used[governor.threads] = threads_used.get(governor.threads, 0) + 1
                torch.set_num_threads(governor.step_done((time.perf_counter() - step_started) / len(idx)))
        if not math.isfinite(loss_sum):
            raise FloatingPointError(
                f"The training loss became {loss_sum} in epoch {epoch}: lower learning_rate (now {hp.learning_rate}).")
        if swa is not None and epoch >= recipe.swa_start:
            swa.update_parameters(model)
        # train:accuracy on the batches left unmixed (CutMix, mixup): mixed images have no single right answer
        train_accuracy = correct / seen if seen else mixed_correct / mixed_seen
        metrics = {"epoch": float(epoch), "train:accuracy": train_accuracy, "train:loss": loss_sum / (seen + mixed_seen)}
        if x_val is not None:
            probs = predict_proba(model if ema is None else ema.module, x_val, mean, std, device, hp)
            metrics["validation:accuracy"] = float((probs.argmax(1) == y_val).float().mean())
            if hp.top_k:
                top = probs.topk(hp.top_k, 1).indices
                metrics["validation:top_k_accuracy"] = float((top == y_val[:, None]).any(1).float().mean())
        epoch_seconds.append(time.perf_counter() - started)
        history.append(metrics)
        log(f"Epoch[{epoch - 1}] lr={lr:g} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "epoch")
            + f" time={epoch_seconds[-1]:.2f}s" + (f" steps_by_threads={threads_used}" if governor else ""))
        threads_used = {}
        if on_epoch is not None:
            on_epoch(metrics)
        if stopper.should_stop(epoch, metrics.get("validation:accuracy")):
            log(f"Early stopping after epoch {epoch}: validation accuracy has not improved for "
                f"{hp.early_stopping_patience} epochs (best {stopper.best:.4f}).")
            stopped_early = True
            break

    if ema is not None:
        model = ema.module
    if swa is not None and swa.n_averaged.item() > 0:
        model = swa.module
        recompute_batch_norm(model, x_train, mean, std, hp, recipe, gen, device, batch)
        if x_val is not None:
            probs = predict_proba(model, x_val, mean, std, device, hp)
            history[-1]["validation:accuracy"] = float((probs.argmax(1) == y_val).float().mean())
            log(f"Weights averaged over epochs {recipe.swa_start}-{len(history)}: "
                f"validation:accuracy={history[-1]['validation:accuracy']:.4f}")
    model = model.float().cpu().to(memory_format=torch.contiguous_format).eval()
    return TrainResult(model, tuple(mean.flatten().tolist()), tuple(std.flatten().tolist()),
                       history, epoch_seconds, stopped_early, device.type)
