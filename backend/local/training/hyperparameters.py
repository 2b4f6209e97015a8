"""Hyperparameters of SageMaker's built-in image-classification algorithm: names, defaults, checks.

The table follows the algorithm's documentation (IC-Hyperparameter): the same names, the same
defaults, the same valid values. A bad value is refused before any work starts, with a message
that names the parameter and what it accepts, as CreateTrainingJob's ValidationException does.
Values arrive as strings (SageMaker stores every hyperparameter as a string) or as numbers.

A few parameters have no meaning on one local machine (kv_store) or need what only AWS has
(use_pretrained_model=1, multi_label=1): the first is checked and ignored, the others are refused
with the reason. Checks that need the staged data (num_training_samples against the train
channel, num_classes against the labels) live in the training service.

Three entries are not the algorithm's: `cutmix`, `test_time_flip` and `int8_serving`, marked local_only. They are
local training options (named, shown on the page and stored with the job like the others, so what
ran is visible); the AWS backend refuses them, because SageMaker's algorithm has no such
hyperparameters.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping

from backend.api import ValidationError
from backend.local.training.architectures import IMAGENET_DEPTHS, SMALL_IMAGE_DEPTHS

Raw = Mapping[str, "str | int | float | bool"]

OPTIMIZERS = ("sgd", "adam", "rmsprop", "nag")
AUGMENTATIONS = ("crop", "crop_color", "crop_color_transform")
KV_STORES = ("dist_sync", "dist_async")
PRECISIONS = ("float32", "float16")
NUM_LAYERS = tuple(sorted(SMALL_IMAGE_DEPTHS + IMAGENET_DEPTHS))
MAX_IMAGE_SIDE = 512  # a local guard: one CPU machine, whole splits held in memory


@dataclass(frozen=True)
class Spec:
    """One hyperparameter: its parser (raw -> typed value, ValueError with the allowed values), default, help."""

    name: str
    parse: Callable[[Any], Any]
    allowed: str  # the valid values, in words, for error messages and the page's help
    default: Any
    help: str
    required: bool = False
    local_note: str = ""
    local_only: bool = False  # not a hyperparameter of SageMaker's algorithm: local training only


# -- parsers -----------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value).strip()


def _int(value: Any) -> int:
    text = _text(value)
    try:
        number = float(text)
    except ValueError:
        raise ValueError from None
    if not math.isfinite(number) or number != int(number):
        raise ValueError
    return int(number)


def _float(value: Any) -> float:
    number = float(_text(value))
    if not math.isfinite(number):
        raise ValueError
    return number


def positive_int(value: Any) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError
    return number


def unit_float(value: Any) -> float:
    number = _float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError
    return number


def choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value)
        if text not in options:
            raise ValueError
        return text
    return parse


def flag01(value: Any) -> int:
    number = _int(value)
    if number not in (0, 1):
        raise ValueError
    return number


def true_false(value: Any) -> bool:
    text = _text(value).lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError


def num_layers(value: Any) -> int:
    number = _int(value)
    if number not in NUM_LAYERS:
        raise ValueError
    return number


def image_shape(value: Any) -> tuple[int, int, int]:
    parts = [p.strip() for p in _text(value).split(",")]
    if len(parts) != 3 or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise ValueError
    c, h, w = (int(p) for p in parts)
    if c not in (1, 3) or not (8 <= h <= MAX_IMAGE_SIDE and 8 <= w <= MAX_IMAGE_SIDE):
        raise ValueError
    return c, h, w


def epoch_list(value: Any) -> tuple[int, ...]:
    text = _text(value)
    if not text:
        return ()
    steps = tuple(positive_int(p) for p in text.split(","))
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError
    return steps


def top_k(value: Any) -> int:
    number = _int(value)
    if number < 2:
        raise ValueError
    return number


# -- the table ---------------------------------------------------------------------------------

SPECS: tuple[Spec, ...] = (
    Spec("num_classes", positive_int, "a positive integer", None, required=True,
         help="Number of output classes: the size of the network's output, normally the number of classes in the data set."),
    Spec("num_training_samples", positive_int, "a positive integer equal to the number of images in the train channel", None, required=True,
         help="Number of training examples in the input data set; it must match the train channel (train.lst)."),
    Spec("augmentation_type", choice(*AUGMENTATIONS), "crop, crop_color or crop_color_transform (or unset for none)", None,
         help="Data augmentation. crop: random crop and horizontal flip. crop_color: crop plus random hue, "
              "saturation and lightness shifts ([-36, 36], [-50, 50], [-50, 50]). crop_color_transform: crop_color "
              "plus random rotation (up to 10 degrees), shear (up to 0.1) and aspect-ratio change (up to 0.25).",
         local_note="Images already at image_shape are padded by 4 pixels before the random crop, as is usual for CIFAR."),
    Spec("beta_1", unit_float, "a float in [0, 1]", 0.9,
         help="adam's beta1: the exponential decay rate of the first-moment estimates."),
    Spec("beta_2", unit_float, "a float in [0, 1]", 0.999,
         help="adam's beta2: the exponential decay rate of the second-moment estimates."),
    Spec("checkpoint_frequency", positive_int, "a positive integer no greater than epochs", None,
         help="Period (in epochs) at which model parameters are stored.",
         local_note="Checked; the local artifact holds the weights of the last epoch."),
    Spec("cutmix", unit_float, "a float in [0, 1]", 0.0, local_only=True,
         help="Not one of the algorithm's hyperparameters: a local training option. The share of training "
              "batches mixed with CutMix: a random box of each image is replaced by the same box of another "
              "image of the batch, and the loss counts both labels by area. 0 turns it off. It regularises "
              "training on a small data set. It needs augmentation_type set; validation images are never mixed."),
    Spec("early_stopping", true_false, "True or False", False,
         help="True to stop training when validation accuracy stops improving; False to run every epoch."),
    Spec("early_stopping_min_epochs", positive_int, "a positive integer", 10,
         help="Epochs that must run before early stopping can end training (only with early_stopping=True)."),
    Spec("early_stopping_patience", positive_int, "a positive integer", 5,
         help="Epochs without improvement of validation accuracy before training ends (only with early_stopping=True)."),
    Spec("early_stopping_tolerance", unit_float, "a float in [0, 1]", 0.0,
         help="Relative improvement of validation accuracy below which an epoch counts as no improvement "
              "(only with early_stopping=True)."),
    Spec("epochs", positive_int, "a positive integer", 30,
         help="Number of training epochs."),
    Spec("eps", unit_float, "a float in [0, 1]", 1e-8,
         help="The epsilon of adam and rmsprop, a small value that avoids division by zero."),
    Spec("gamma", unit_float, "a float in [0, 1]", 0.9,
         help="rmsprop's gamma: the decay factor of the moving average of the squared gradient."),
    Spec("image_shape", image_shape, f"'channels,height,width' with 1 or 3 channels and sides of 8 to {MAX_IMAGE_SIDE} pixels", (3, 224, 224),
         help="Input image dimensions, 'num_channels,height,width': the size of the network's input layer. "
              "The workflow's CIFAR images are 3,32,32."),
    Spec("int8_serving", flag01, "0 or 1", 0, local_only=True,
         help="Not one of the algorithm's hyperparameters: a local option. 1: the exported model.onnx computes in "
              "8-bit integers (ONNX Runtime's static quantization, calibrated on 128 training images): here an "
              "image with its mirror image (test_time_flip 1) takes 0.46 ms instead of 0.79, one image 0.25 "
              "instead of 0.40; the job's log gives the validation accuracy of that graph "
              "beside the float one (on hold-outs of the training data 996 of 1,000 answers stayed the same). "
              "0 serves the float graph."),
    Spec("kv_store", choice(*KV_STORES), "dist_sync or dist_async", None,
         help="Weight-update synchronisation in distributed training.",
         local_note="Checked and ignored: local training runs on one machine."),
    Spec("learning_rate", unit_float, "a float in [0, 1]", 0.1,
         help="Initial learning rate."),
    Spec("lr_scheduler_factor", unit_float, "a float in [0, 1]", 0.1,
         help="Factor the learning rate is multiplied by at each epoch of lr_scheduler_step."),
    Spec("lr_scheduler_step", epoch_list, "comma-separated increasing positive epoch numbers, such as '10,20'", (),
         help="Epochs after which the learning rate is multiplied by lr_scheduler_factor, for example '10,20'."),
    Spec("mini_batch_size", positive_int, "a positive integer", 32,
         help="Batch size for training."),
    Spec("momentum", unit_float, "a float in [0, 1]", 0.9,
         help="Momentum of sgd and nag; ignored by the other optimizers."),
    Spec("multi_label", flag01, "0 or 1", 0,
         help="1 for multi-label classification (several labels per image, from an augmented manifest)."),
    Spec("num_layers", num_layers, f"one of {', '.join(map(str, IMAGENET_DEPTHS))} (large images) or "
         f"{', '.join(map(str, SMALL_IMAGE_DEPTHS))} (small images)", 152,
         help="Depth of the ResNet. For large images such as 224x224 choose from 18, 34, 50, 101, 152, 200; "
              "for small images such as CIFAR's 32x32 choose from 20, 32, 44, 56, 110."),
    Spec("optimizer", choice(*OPTIMIZERS), "sgd, adam, rmsprop or nag", "sgd",
         help="The optimizer: sgd, adam, rmsprop or nag (Nesterov's accelerated gradient)."),
    Spec("precision_dtype", choice(*PRECISIONS), "float32 or float16", "float32",
         help="Precision used for training: float32, or float16 for half precision.",
         local_note="float16 computes convolutions in bfloat16 on CPUs (float16 on CUDA) and keeps float32 weights."),
    Spec("resize", positive_int, "a positive integer no smaller than the image_shape height and width", None,
         help="Resize images so that their shortest side has this many pixels before training."),
    Spec("test_time_flip", flag01, "0 or 1", 0, local_only=True,
         help="Not one of the algorithm's hyperparameters: a local option. 1: the model's answer for an image is "
              "the mean of its probabilities for the image and for its mirror image (flipped left to right, as "
              "crop augmentation flips in training). Validation accuracy, evaluation and the endpoint all answer "
              "this way: the exported model.onnx holds the flip and the mean, so serving needs nothing else. "
              "It costs a second forward pass per image; 0 answers from the image alone."),
    Spec("top_k", top_k, "an integer from 2 to num_classes", None,
         help="Also report top-k accuracy during training (k > 1)."),
    Spec("use_pretrained_model", flag01, "0 or 1", 0,
         help="1 to start from the algorithm's ImageNet-pretrained network (only the top layer is re-initialised); "
              "0 to train from scratch."),
    Spec("use_weighted_loss", flag01, "0 or 1", 0,
         help="1 to weight the cross-entropy loss by class frequency (used only when multi_label=1)."),
    Spec("weight_decay", unit_float, "a float in [0, 1]", 0.0001,
         help="Weight decay coefficient of sgd and nag; ignored by the other optimizers."),
)

SPEC_BY_NAME = {s.name: s for s in SPECS}
LOCAL_ONLY = tuple(s.name for s in SPECS if s.local_only)


def algorithm_only(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` without the local-only options: what SageMaker's algorithm may be given."""
    return {k: v for k, v in values.items() if k not in LOCAL_ONLY}


def check_for_sagemaker(raw: Raw) -> None:
    """Refuse the local-only options before a request reaches SageMaker's algorithm (which would fail the
    job); an option given as off (any spelling of its default) is harmless and is left out of the request."""
    used = []
    for name in LOCAL_ONLY:
        spec = SPEC_BY_NAME[name]
        if name not in raw or _text(raw[name]) == "":
            continue
        try:
            off = spec.parse(raw[name]) == spec.default
        except (ValueError, TypeError):
            off = False
        if not off:
            used.append(name)
    if used:
        one = len(used) == 1
        raise ValidationError(
            f"{', '.join(used)} {'is a local training option' if one else 'are local training options'} that "
            f"SageMaker's image-classification algorithm does not have: remove {'it' if one else 'them'} "
            f"(on the command line, drop {' '.join(f'--hp {n}=...' for n in used)}) to train on AWS.")


@dataclass(frozen=True)
class Hyperparameters:
    """The validated, typed values (defaults filled in)."""

    num_classes: int
    num_training_samples: int
    augmentation_type: str | None = None
    beta_1: float = 0.9
    beta_2: float = 0.999
    checkpoint_frequency: int | None = None
    cutmix: float = 0.0
    early_stopping: bool = False
    early_stopping_min_epochs: int = 10
    early_stopping_patience: int = 5
    early_stopping_tolerance: float = 0.0
    epochs: int = 30
    eps: float = 1e-8
    gamma: float = 0.9
    image_shape: tuple[int, int, int] = (3, 224, 224)
    int8_serving: int = 0
    kv_store: str | None = None
    learning_rate: float = 0.1
    lr_scheduler_factor: float = 0.1
    lr_scheduler_step: tuple[int, ...] = ()
    mini_batch_size: int = 32
    momentum: float = 0.9
    multi_label: int = 0
    num_layers: int = 152
    optimizer: str = "sgd"
    precision_dtype: str = "float32"
    resize: int | None = None
    test_time_flip: int = 0
    top_k: int | None = None
    use_pretrained_model: int = 0
    use_weighted_loss: int = 0
    weight_decay: float = 0.0001

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


assert [f.name for f in fields(Hyperparameters)] == [s.name for s in SPECS], "the table and the record must agree"


def format_value(value: Any) -> str:
    """How SageMaker stores a hyperparameter: a string."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value) if value != int(value) or abs(value) >= 1e16 else str(value)
    return str(value)


def as_strings(hp: Hyperparameters, given: Raw | None = None) -> dict[str, str]:
    """The hyperparameters as the job record stores them: the given names, normalised, as strings."""
    names = [s.name for s in SPECS if given is None or s.name in given]
    values = hp.to_dict()
    return {n: format_value(values[n]) for n in names if values[n] is not None}


def _bad(spec: Spec, raw: Any) -> str:
    return f"{spec.name}={_text(raw)!r} is not valid: use {spec.allowed}"


MAX_LOCAL_EPOCHS = 10_000


def validate(raw: Raw, local: bool = True) -> Hyperparameters:
    """Typed hyperparameters, or one ValidationError that lists every problem found. `local=False` for a
    SageMaker job: what only the local trainer lacks (the pretrained weights) is then not refused."""
    problems: list[str] = []
    unknown = [k for k in raw if k not in SPEC_BY_NAME]
    for name in unknown:
        close = difflib.get_close_matches(str(name), list(SPEC_BY_NAME), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"{name!r} is not a hyperparameter of the image-classification algorithm{hint}")
    values: dict[str, Any] = {}
    for spec in SPECS:
        if spec.name not in raw or _text(raw[spec.name]) == "":
            if spec.required:
                problems.append(f"{spec.name} is required: set it to {spec.allowed}")
            values[spec.name] = spec.default
            continue
        try:
            values[spec.name] = spec.parse(raw[spec.name])
        except (ValueError, TypeError):
            problems.append(_bad(spec, raw[spec.name]))
            values[spec.name] = spec.default
    if not problems:
        problems += _cross_checks(values, raw, local)
    if problems:
        head = "Hyperparameter" if len(problems) == 1 else f"{len(problems)} hyperparameters"
        raise ValidationError(f"{head} not valid: " + "; ".join(problems) + ".")
    return Hyperparameters(**values)


def _cross_checks(v: dict[str, Any], raw: Raw, local: bool = True) -> list[str]:
    problems = []
    if v["use_pretrained_model"] == 1 and local:
        problems.append(
            "use_pretrained_model=1 is not available locally: the pretrained ImageNet weights live in AWS's "
            "algorithm container and the local backend has neither them nor network access; use 0 to train from "
            "scratch, or train on the AWS backend")
    if local and v["epochs"] > MAX_LOCAL_EPOCHS:  # the local trainer has no MaxRuntimeInSeconds to end it
        problems.append(f"epochs={v['epochs']} is more than the local trainer runs: use at most {MAX_LOCAL_EPOCHS:,} "
                        "(an epoch of the 1,000 sample images takes about a second here)")
    if v["multi_label"] == 1:
        problems.append(
            "multi_label=1 is not available: multi-label training needs an augmented manifest, and the "
            "staged data is a single-label .lst; use 0")
    if v["checkpoint_frequency"] is not None and v["checkpoint_frequency"] > v["epochs"]:
        problems.append(f"checkpoint_frequency={v['checkpoint_frequency']} is not valid: use "
                        f"{SPEC_BY_NAME['checkpoint_frequency'].allowed} ({v['epochs']})")
    if v["top_k"] is not None and v["top_k"] > v["num_classes"]:
        problems.append(f"top_k={v['top_k']} is not valid: use an integer from 2 to num_classes ({v['num_classes']})")
    if v["cutmix"] > 0 and v["augmentation_type"] is None:
        problems.append(f"cutmix={v['cutmix']:g} needs augmentation_type set (crop, crop_color or "
                        "crop_color_transform): CutMix mixes augmented training images; set one, or cutmix=0")
    _, h, w = v["image_shape"]
    if v["resize"] is not None and v["resize"] < max(h, w):
        problems.append(f"resize={v['resize']} is not valid: use {SPEC_BY_NAME['resize'].allowed} ({max(h, w)})")
    return problems


def advisories(raw: Raw, local: bool = True) -> list[str]:
    """Valid values that cannot do what they seem to, one sentence each, said beside Start without refusing
    it (a form filled for 80 epochs and cut to 8 kept its learning-rate steps at 55 and 73). Nothing for
    values that do not validate: Start refuses those, with their own message."""
    try:
        hp = validate(raw, local)
    except ValidationError:
        return []
    notes = []
    late = [s for s in hp.lr_scheduler_step if s >= hp.epochs]
    if late:
        steps = ",".join(map(str, hp.lr_scheduler_step))
        effect = ("so the learning rate never drops" if len(late) == len(hp.lr_scheduler_step)
                  else f"so the learning rate drops only {len(hp.lr_scheduler_step) - len(late)} time(s)")
        notes.append(f"lr_scheduler_step={steps}: {'a step' if len(late) == 1 else 'steps'} at or after epoch "
                     f"{hp.epochs}, the last, never come{'s' if len(late) == 1 else ''}, {effect}; set the steps "
                     "below epochs.")
    if local and hp.mini_batch_size > hp.num_training_samples:  # what the local trainer does with it
        notes.append(f"mini_batch_size={hp.mini_batch_size} is more than the {hp.num_training_samples:,} training "
                     f"images: each epoch is one step over all of them (a batch of {hp.num_training_samples:,}).")
    return notes


def help_text(name: str) -> str:
    """The page's help for one parameter: the algorithm's description, valid values, default, local note."""
    spec = SPEC_BY_NAME[name]
    default = "required" if spec.required else (
        "no default" if spec.default in (None, ()) else f"default {format_value(spec.default)}")
    text = f"{spec.help} Valid values: {spec.allowed}; {default}."
    if spec.local_only:
        return f"{text} Local only: the AWS backend refuses it, as SageMaker's algorithm has no such setting."
    return f"{text} Locally: {spec.local_note}" if spec.local_note else text


# -- presets -----------------------------------------------------------------------------------

# The Scones Unlimited notebook's estimator on AWS: the workflow's data shape, the algorithm's defaults.
SAGEMAKER_WORKFLOW_PRESET: dict[str, str] = {
    "image_shape": "3,32,32",
    "num_classes": "2",
    "num_training_samples": "1000",
    "num_layers": "152",
    "epochs": "30",
    "learning_rate": "0.1",
    "mini_batch_size": "32",
    "optimizer": "sgd",
    "momentum": "0.9",
    "weight_decay": "0.0001",
    "use_pretrained_model": "0",
}

# Chosen for CPU training here on hold-outs of the training data, never the test split (bench/train.py
# --design: five stratified 80/20 splits of the 1,000 training images). ResNet-20 beat ResNet-32/44
# and the wide ResNet-18; nag beat sgd; crop beat crop_color and crop_color_transform; float16
# (bfloat16 on a CPU with AMX) makes an epoch about 1.6x faster than float32 here. Plain crop
# training: 60 epochs (cut after 40, 55) 0.889 and 0.890 (two seeds), 80 epochs 0.894. CutMix on
# half the batches with 80 epochs (cut after 55, 73): 0.903 and 0.907, the best of every design
# tried (TrivialAugment, SAM, weight decay 1e-3, wider or deeper networks, 40x40 inputs, cosine
# schedules, ensembles, label smoothing, cutout, mixup and EMA all stayed at 0.872-0.898). Tried on top
# of CutMix, none better: 95 epochs 0.904; no weight decay on batch-norm scales and biases 0.910 and
# 0.899 (two seeds); that with weight decay 1e-3 0.901; weight averaging (SWA) over the last 20-25
# epochs 0.84-0.87 on the first folds; reflect instead of zero padding for the crop 0.9065 (two seeds).
# Batch-norm statistics recomputed after training (paired, same models): on the clean training images
# 3.5-7.5 points worse on every fold (which is what sank SWA), on augmented ones no change (+0.002).
# Later, on the same five folds (seed 0): learning_rate 0.05 0.896, weight_decay 1e-4 0.895; CutMix
# on every batch (cutmix 1.0) 0.891 and 0.89x in two runs (fold-to-fold spread +-0.03 between reruns of
# one design: CPU kernels are not deterministic); mini_batch_size 32 with learning_rate 0.05 0.902, within
# that noise of these defaults (0.900) and about 1.4x the time per epoch, so not taken.
# 2026-11-29, five folds, seed 0, same compute: each batch holding two independently augmented views of
# 32 images for 40 epochs (cut after 27, 36) 0.892, with a symmetric-KL consistency loss between the
# views (weight 1) 0.901, against 0.896 for these defaults in the same run: within the noise, not taken.
# 2026-11-29 later, five folds each, the same trained models scored both ways: test_time_flip 1 (the mean
# of the image's and its mirror image's probabilities) 0.904 against 0.897 without (seed 0) and 0.919
# against 0.907 (seed 1); better on 7 of the 10 fold runs, worse on 2. Adding shifted views of one or two
# pixels (6 or 10 views in all) gave 0.915-0.919 on seed 1: no better than the flip alone. On the test split
# (bench/train.py, three seeds) it gave 0.922 against 0.913. It stays off by default all the same: it
# doubles the endpoint's inference (0.39 -> 0.78 ms a request), which took the workflow's single-execution
# p50 from 4.4-4.6 ms to 5.2-6.2 ms in the same hour, past issue 6's 5 ms. One field turns it on.
# Mirroring each training image every other epoch instead of at random (five folds, seed 1): 0.902 against
# 0.907, not taken. 2026-11-29 night, with test_time_flip 1: 120 epochs (cut after 83, 110) 0.920 (seed 1,
# against 0.919 at 80 epochs) and 0.906 (seed 0, against 0.904), 1.5x the time for nothing. Running the
# mirror image on a helper thread (the second core) in the endpoint at the same time as the image: 0.10 ms
# added to a back-to-back request over HTTP, but the workflow's single-execution p50 still rose by 0.4-1.2 ms
# in three interleaved triples (waking the idle second core costs more than the forward pass saved), about
# as much as running both as one batch, so test_time_flip stays off and the endpoint runs the graph as is.
# 2026-11-30: both are on. int8_serving 1 quantizes the exported graph (ONNX Runtime static quantization,
# calibrated on 128 training images), which brings the flipped pair to 0.46 ms against 0.40 for one float
# image (0.79 for the float pair). On the five hold-outs (seed 1, the float models with flip scored
# 0.935/0.910/0.910/0.920/0.930) the 8-bit graphs answered 996 of 1,000 images the same (0.930/0.905/
# 0.910/0.915/0.925); calibrating on all 800 images, percentile or entropy ranges, or keeping the first
# convolution and the classifier in float changed at most one answer more or less. With the endpoint's
# hop gone from the workflow (direct_route.py), the flip's cost no longer shows in issue 6's figure.
# 2026-11-30 later: ResNet-32 with these defaults (seed 1, four folds): 0.915/0.895/0.905/0.910, at or below
# ResNet-20's 0.935/0.910/0.910/0.920 on every fold, in 90-110 s a fold (a full run would pass 120 s). Not taken.
LOCAL_CPU_PRESET: dict[str, str] = {
    "image_shape": "3,32,32",
    "num_classes": "2",
    "num_training_samples": "1000",
    "num_layers": "20",
    "epochs": "80",
    "learning_rate": "0.1",
    "lr_scheduler_step": "55,73",
    "lr_scheduler_factor": "0.1",
    "mini_batch_size": "64",
    "optimizer": "nag",
    "momentum": "0.9",
    "weight_decay": "0.0005",
    "augmentation_type": "crop",
    "cutmix": "0.5",
    "precision_dtype": "float16",
    "test_time_flip": "1",
    "int8_serving": "1",
    "early_stopping": "False",
    "use_pretrained_model": "0",
}

PRESETS = {"local": LOCAL_CPU_PRESET, "sagemaker": SAGEMAKER_WORKFLOW_PRESET}
