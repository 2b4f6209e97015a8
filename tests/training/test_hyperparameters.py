"""Every hyperparameter of the image-classification algorithm: accepted values, refused values, messages."""
from __future__ import annotations

import pytest

from backend.api import ValidationError
from backend.local.training import hyperparameters as H

BASE = {"num_classes": "2", "num_training_samples": "1000", "image_shape": "3,32,32"}

GOOD = {
    "num_classes": [("2", 2), (10, 10), ("1", 1)],
    "num_training_samples": [("1000", 1000), (5, 5), ("1e3", 1000)],
    "augmentation_type": [("crop", "crop"), ("crop_color", "crop_color"), ("crop_color_transform", "crop_color_transform")],
    "beta_1": [("0.9", 0.9), ("0", 0.0), (1, 1.0)],
    "beta_2": [("0.999", 0.999), ("1", 1.0)],
    "checkpoint_frequency": [("1", 1), ("30", 30)],
    "cutmix": [("0.5", 0.5), ("0", 0.0), (1, 1.0)],
    "early_stopping": [("True", True), ("False", False), ("true", True), (True, True), ("0", False)],
    "early_stopping_min_epochs": [("10", 10), ("1", 1)],
    "early_stopping_patience": [("5", 5), (1, 1)],
    "early_stopping_tolerance": [("0.0", 0.0), ("0.01", 0.01), ("1", 1.0)],
    "epochs": [("30", 30), (1, 1)],
    "eps": [("1e-8", 1e-8), ("0.1", 0.1)],
    "gamma": [("0.9", 0.9), ("0", 0.0)],
    "image_shape": [("3,32,32", (3, 32, 32)), ("3, 224, 224", (3, 224, 224)), ("1,28,28", (1, 28, 28))],
    "kv_store": [("dist_sync", "dist_sync"), ("dist_async", "dist_async")],
    "learning_rate": [("0.1", 0.1), ("0.001", 0.001), ("1", 1.0)],
    "lr_scheduler_factor": [("0.1", 0.1), ("0.5", 0.5)],
    "lr_scheduler_step": [("10,20", (10, 20)), ("15", (15,)), ("10, 20, 25", (10, 20, 25))],
    "mini_batch_size": [("32", 32), ("128", 128)],
    "momentum": [("0.9", 0.9), ("0", 0.0)],
    "multi_label": [("0", 0)],
    "num_layers": [(str(n), n) for n in (18, 20, 32, 34, 44, 50, 56, 101, 110, 152, 200)],
    "optimizer": [("sgd", "sgd"), ("adam", "adam"), ("rmsprop", "rmsprop"), ("nag", "nag")],
    "precision_dtype": [("float32", "float32"), ("float16", "float16")],
    "resize": [("32", 32), ("40", 40)],
    "test_time_flip": [("1", 1), ("0", 0), (1, 1)],
    "int8_serving": [("1", 1), ("0", 0), (0, 0)],
    "top_k": [("2", 2)],
    "use_pretrained_model": [("0", 0), (0, 0)],
    "use_weighted_loss": [("0", 0), ("1", 1)],
    "weight_decay": [("0.0001", 0.0001), ("0", 0.0)],
}

BAD = {
    "num_classes": ["0", "-1", "two", "2.5", ""],
    "num_training_samples": ["0", "abc", "10.5"],
    "augmentation_type": ["flip", "CROP", "none"],
    "beta_1": ["1.5", "-0.1", "x"],
    "beta_2": ["2", "nan"],
    "checkpoint_frequency": ["0", "31", "x"],
    "cutmix": ["1.5", "-0.1", "half"],
    "early_stopping": ["yes", "2", "maybe"],
    "early_stopping_min_epochs": ["0", "-3"],
    "early_stopping_patience": ["0", "1.5"],
    "early_stopping_tolerance": ["-0.1", "1.1"],
    "epochs": ["0", "-1", "ten", "2.5", "inf"],
    "eps": ["2", "-1e-8"],
    "gamma": ["1.01", "x"],
    "image_shape": ["32,32", "3,32", "2,32,32", "3,4,4", "3,32,32,1", "3x32x32", "3,1000,1000"],
    "kv_store": ["local", "device"],
    "learning_rate": ["1.5", "-0.1", "fast"],
    "lr_scheduler_factor": ["2", "-1"],
    "lr_scheduler_step": ["20,10", "10,10", "0,5", "a,b"],
    "mini_batch_size": ["0", "-32", "32.5"],
    "momentum": ["1.1", "-0.5"],
    "multi_label": ["2", "yes"],
    "num_layers": ["19", "0", "151", "resnet152", "-18"],
    "optimizer": ["SGD", "adagrad", "momentum"],
    "precision_dtype": ["float64", "bfloat16", "half"],
    "resize": ["0", "16", "-32"],
    "test_time_flip": ["2", "yes", "-1"],
    "int8_serving": ["2", "int8", "-1"],
    "top_k": ["1", "0", "3"],
    "use_pretrained_model": ["2", "-1", "yes"],
    "use_weighted_loss": ["2", "x"],
    "weight_decay": ["1.5", "-0.0001"],
}


def test_the_tables_cover_every_documented_hyperparameter():
    documented = {
        "num_classes", "num_training_samples", "augmentation_type", "beta_1", "beta_2", "checkpoint_frequency",
        "early_stopping", "early_stopping_min_epochs", "early_stopping_patience", "early_stopping_tolerance",
        "epochs", "eps", "gamma", "image_shape", "kv_store", "learning_rate", "lr_scheduler_factor",
        "lr_scheduler_step", "mini_batch_size", "momentum", "multi_label", "num_layers", "optimizer",
        "precision_dtype", "resize", "top_k", "use_pretrained_model", "use_weighted_loss", "weight_decay",
    }
    assert set(H.SPEC_BY_NAME) == documented | set(H.LOCAL_ONLY) == set(GOOD) == set(BAD)
    assert H.LOCAL_ONLY == ("cutmix", "int8_serving", "test_time_flip")  # the local training options, marked as not the algorithm's


def test_the_local_options_are_named_as_such_and_refused_for_sagemaker():
    plain = H.validate(BASE)
    assert (plain.cutmix, plain.test_time_flip, plain.int8_serving) == (0.0, 0, 0)  # off unless asked for
    for name in H.LOCAL_ONLY:
        assert "Not one of the algorithm's hyperparameters" in H.help_text(name)
        assert "Local only: the AWS backend refuses it" in H.help_text(name)
    with pytest.raises(ValidationError, match="test_time_flip is a local training option"):
        H.check_for_sagemaker({**BASE, "test_time_flip": "1"})
    with pytest.raises(ValidationError, match=r"cutmix, test_time_flip are local training options .* drop "
                                              r"--hp cutmix=\.\.\. --hp test_time_flip=\.\.\."):
        H.check_for_sagemaker({**BASE, "cutmix": "0.5", "test_time_flip": "1"})
    H.check_for_sagemaker({**BASE, "test_time_flip": "0"})
    with pytest.raises(ValidationError, match="int8_serving is a local training option"):
        H.check_for_sagemaker({**BASE, "int8_serving": "1"})
    H.check_for_sagemaker({**BASE, "int8_serving": "0"})
    with pytest.raises(ValidationError, match="cutmix is a local training option"):
        H.check_for_sagemaker({**BASE, "cutmix": "0.5"})
    for off in ("0", "0.00", "0e0", "", 0):  # off, however written, is harmless
        H.check_for_sagemaker({**BASE, "cutmix": off})
    with pytest.raises(ValidationError, match=r"is a local training option .* drop --hp cutmix=\.\.\."):
        H.check_for_sagemaker({**BASE, "cutmix": "2"})  # refused as local-only, whatever its value
    H.check_for_sagemaker(H.SAGEMAKER_WORKFLOW_PRESET)


def test_cutmix_needs_augmentation():
    with pytest.raises(ValidationError, match="cutmix=0.5 needs augmentation_type set"):
        H.validate({**BASE, "cutmix": "0.5"})
    assert H.validate({**BASE, "cutmix": "0.5", "augmentation_type": "crop"}).cutmix == 0.5


@pytest.mark.parametrize("name,raw,expected", [(n, r, e) for n, cases in GOOD.items() for r, e in cases])
def test_good_values_are_accepted_and_typed(name, raw, expected):
    base = dict(BASE)
    if name == "checkpoint_frequency":
        base["epochs"] = "30"
    if name == "cutmix":
        base["augmentation_type"] = "crop"
    hp = H.validate({**base, name: raw})
    assert getattr(hp, name) == expected


@pytest.mark.parametrize("name,raw", [(n, r) for n, values in BAD.items() for r in values])
def test_bad_values_name_the_parameter_and_the_allowed_values(name, raw):
    base = dict(BASE)
    if name == "checkpoint_frequency":
        base["epochs"] = "30"
    with pytest.raises(ValidationError) as err:
        H.validate({**base, name: raw})
    message = str(err.value)
    assert name in message
    if raw != "":
        assert H.SPEC_BY_NAME[name].allowed.split(" (")[0] in message or "not available" in message
    assert err.value.code == "ValidationException"


def test_defaults_are_the_algorithms():
    hp = H.validate({"num_classes": "2", "num_training_samples": "1000"})
    assert (hp.num_layers, hp.epochs, hp.learning_rate, hp.mini_batch_size, hp.optimizer) == (152, 30, 0.1, 32, "sgd")
    assert (hp.momentum, hp.weight_decay, hp.beta_1, hp.beta_2, hp.eps, hp.gamma) == (0.9, 0.0001, 0.9, 0.999, 1e-8, 0.9)
    assert hp.image_shape == (3, 224, 224) and hp.augmentation_type is None and hp.lr_scheduler_step == ()
    assert (hp.early_stopping, hp.early_stopping_min_epochs, hp.early_stopping_patience,
            hp.early_stopping_tolerance) == (False, 10, 5, 0.0)
    assert (hp.use_pretrained_model, hp.multi_label, hp.precision_dtype) == (0, 0, "float32")


def test_required_parameters_must_be_given():
    with pytest.raises(ValidationError) as err:
        H.validate({"epochs": "3"})
    assert "2 hyperparameters not valid" in str(err.value)
    assert "num_classes is required" in str(err.value) and "num_training_samples is required" in str(err.value)


def test_unknown_names_are_refused_with_a_suggestion():
    with pytest.raises(ValidationError) as err:
        H.validate({**BASE, "learning_rte": "0.1"})
    assert "'learning_rte' is not a hyperparameter" in str(err.value) and "did you mean learning_rate" in str(err.value)


def test_use_pretrained_model_1_says_why_it_is_refused():
    with pytest.raises(ValidationError) as err:
        H.validate({**BASE, "use_pretrained_model": "1"})
    message = str(err.value)
    assert "use_pretrained_model=1 is not available locally" in message
    assert "pretrained ImageNet weights" in message and "use 0" in message
    assert H.validate({**BASE, "use_pretrained_model": "1"}, local=False).use_pretrained_model == 1  # SageMaker has them


def test_epochs_past_what_the_local_trainer_runs_are_refused_there_only():
    """1e20 epochs ran with no end (and 'about 3491010097778699264 min left'): locally nothing else stops it."""
    for raw in ("1e20", "99999999999999999999", str(H.MAX_LOCAL_EPOCHS + 1)):
        with pytest.raises(ValidationError, match="is more than the local trainer runs: use at most 10,000"):
            H.validate({**BASE, "epochs": raw})
    assert H.validate({**BASE, "epochs": str(H.MAX_LOCAL_EPOCHS)}).epochs == H.MAX_LOCAL_EPOCHS
    assert H.validate({**BASE, "epochs": "20000"}, local=False).epochs == 20000  # SageMaker's MaxRuntime ends it


def test_multi_label_1_is_refused_with_the_reason():
    for local in (True, False):  # the staged .lst is single-label on either backend
        with pytest.raises(ValidationError, match="multi_label=1 is not available: multi-label training needs"):
            H.validate({**BASE, "multi_label": "1"}, local=local)


def test_several_problems_are_reported_together():
    with pytest.raises(ValidationError) as err:
        H.validate({**BASE, "epochs": "0", "optimizer": "adagrad"})
    assert "2 hyperparameters not valid" in str(err.value)
    assert "epochs='0'" in str(err.value) and "optimizer='adagrad'" in str(err.value)


def test_presets_are_valid_and_named_as_the_algorithms():
    local = H.validate(H.LOCAL_CPU_PRESET)
    assert local.num_layers == 20 and local.image_shape == (3, 32, 32)
    assert (local.epochs, local.lr_scheduler_step, local.cutmix, local.test_time_flip, local.int8_serving) == (
        80, (55, 73), 0.5, 1, 1)
    aws = H.validate(H.SAGEMAKER_WORKFLOW_PRESET)
    assert (aws.num_layers, aws.epochs, aws.learning_rate, aws.mini_batch_size, aws.optimizer) == (152, 30, 0.1, 32, "sgd")
    assert set(H.LOCAL_CPU_PRESET) <= set(H.SPEC_BY_NAME) and set(H.SAGEMAKER_WORKFLOW_PRESET) <= set(H.SPEC_BY_NAME)


def test_values_are_stored_as_sagemaker_strings():
    raw = {**BASE, "epochs": 5, "learning_rate": 0.05, "early_stopping": True, "lr_scheduler_step": "10, 20"}
    stored = H.as_strings(H.validate(raw), raw)
    assert stored == {"num_classes": "2", "num_training_samples": "1000", "image_shape": "3,32,32", "epochs": "5",
                      "learning_rate": "0.05", "early_stopping": "True", "lr_scheduler_step": "10,20"}
    assert H.validate(stored) == H.validate(raw)


def test_help_text_comes_from_the_documentation():
    assert "for small images such as CIFAR's 32x32 choose from 20, 32, 44, 56, 110" in H.help_text("num_layers")
    assert "default 152" in H.help_text("num_layers")
    assert "required" in H.help_text("num_classes")
    assert "Locally:" in H.help_text("kv_store")


def test_advisories_name_valid_values_that_cannot_do_what_they_seem_to():
    """A form cut from 80 to 8 epochs kept its steps at 55 and 73, and a batch of 100,000 over 1,000 images
    ran, both without a word (browser audit): allowed, but said."""
    from backend.local.training.hyperparameters import LOCAL_CPU_PRESET, advisories

    assert advisories(LOCAL_CPU_PRESET) == []
    cut = advisories({**LOCAL_CPU_PRESET, "epochs": "8"})
    assert cut == ["lr_scheduler_step=55,73: steps at or after epoch 8, the last, never come, so the learning rate "
                   "never drops; set the steps below epochs."]
    half = advisories({**LOCAL_CPU_PRESET, "epochs": "60"})
    assert half == ["lr_scheduler_step=55,73: a step at or after epoch 60, the last, never comes, so the learning "
                    "rate drops only 1 time(s); set the steps below epochs."]
    big = advisories({**LOCAL_CPU_PRESET, "mini_batch_size": "100000"})
    assert big == ["mini_batch_size=100000 is more than the 1,000 training images: each epoch is one step over all "
                   "of them (a batch of 1,000)."]
    assert advisories({**LOCAL_CPU_PRESET, "epochs": "abc"}) == []  # refused by Start with its own message
