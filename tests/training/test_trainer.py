"""The training loop on arrays: it learns, it reports each epoch, it stops when asked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.local.training import hyperparameters as H
from backend.local.training.data import ImageSet
from backend.local.training.trainer import (
    EarlyStopping, TrainingStopped, augment, fit_images, learning_rate_at, predict_proba, to_tensor, train,
)
from tests.training import synthetic


def hp(**extra):
    return H.validate(synthetic.hyperparameters(n_train=96, size=12, **extra))


def sets(n_train=96, n_test=48, size=12):
    x, y = synthetic.images(n_train, size, seed=1)
    xt, yt = synthetic.images(n_test, size, seed=2)
    return ImageSet(x, y), ImageSet(xt, yt)


def test_a_tiny_synthetic_task_is_learned_above_095():
    train_set, test_set = sets()
    seen = []
    result = train(hp(epochs=4, augmentation_type="crop"), train_set, test_set, seed=0, on_epoch=seen.append, threads=1)
    assert [m["epoch"] for m in seen] == [1, 2, 3, 4]
    assert set(seen[0]) == {"epoch", "train:accuracy", "train:loss", "validation:accuracy"}
    assert seen[-1]["validation:accuracy"] > 0.95
    assert seen[-1]["train:loss"] < seen[0]["train:loss"]
    x = to_tensor(test_set.images)
    mean, std = torch.tensor(result.mean).view(1, -1, 1, 1), torch.tensor(result.std).view(1, -1, 1, 1)
    probs = predict_proba(result.model, x, mean, std, torch.device("cpu"), hp())
    assert (probs.argmax(1).numpy() == test_set.labels).mean() > 0.95
    assert len(result.epoch_seconds) == 4 and not result.stopped_early


def test_test_time_flip_scores_the_mean_of_the_image_and_its_mirror_image():
    from backend.local.training.model import build_resnet

    torch.manual_seed(0)
    model = build_resnet(20, 2, (3, 8, 8))
    torch.nn.init.normal_(model.fc.weight, std=1.0)  # an answer far from 50/50 that depends on the side
    x = to_tensor(sets(32, 16, 8)[1].images)
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    plain = H.validate(synthetic.hyperparameters(n_train=32, size=8, precision_dtype="float32"))
    flip = H.validate(synthetic.hyperparameters(n_train=32, size=8, precision_dtype="float32", test_time_flip="1"))
    cpu = torch.device("cpu")
    one, other = predict_proba(model, x, mean, std, cpu, plain), predict_proba(model, x.flip(3), mean, std, cpu, plain)
    assert (one - other).abs().max() > 1e-3
    both = predict_proba(model, x, mean, std, cpu, flip)
    torch.testing.assert_close(both, (one + other) / 2)
    torch.testing.assert_close(predict_proba(model, x.flip(3), mean, std, cpu, flip), both)


def test_the_same_seed_gives_the_same_metrics():
    train_set, test_set = sets(32, 16, 8)
    params = H.validate(synthetic.hyperparameters(n_train=32, size=8, epochs=1))
    a = train(params, train_set, test_set, seed=5, threads=1).epochs
    b = train(params, train_set, test_set, seed=5, threads=1).epochs
    assert a == b


@pytest.mark.parametrize("optimizer", ["sgd", "nag", "rmsprop"])
def test_every_optimizer_runs(optimizer):
    train_set, test_set = sets(32, 16, 8)
    params = H.validate(synthetic.hyperparameters(n_train=32, size=8, epochs=1, optimizer=optimizer,
                                                  learning_rate="0.01", top_k="2"))
    result = train(params, train_set, test_set, seed=0, threads=1)
    assert result.epochs[0]["validation:top_k_accuracy"] == 1.0  # top-2 of 2 classes


def test_the_stop_check_ends_training_with_trainingstopped():
    train_set, test_set = sets(32, 16, 8)
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(TrainingStopped):
        train(H.validate(synthetic.hyperparameters(n_train=32, size=8, epochs=50)), train_set, test_set,
              seed=0, should_stop=should_stop, threads=1)
    assert len(calls) == 4


def test_early_stopping_follows_the_algorithms_rule():
    rule = EarlyStopping(H.validate(synthetic.hyperparameters(
        early_stopping="True", early_stopping_min_epochs="3", early_stopping_patience="2",
        early_stopping_tolerance="0.05")))
    # 0.5 best; 0.52 is a 4% relative gain (< 5% tolerance): no improvement
    decisions = [rule.should_stop(e, a) for e, a in enumerate([0.5, 0.52, 0.51, 0.6, 0.61, 0.62], 1)]
    assert decisions == [False, False, True, False, False, True]
    off = EarlyStopping(H.validate(synthetic.hyperparameters()))
    assert not any(off.should_stop(e, 0.5) for e in range(1, 30))


def test_early_stopping_ends_a_job_before_its_epochs():
    train_set, test_set = sets(32, 16, 8)
    params = H.validate(synthetic.hyperparameters(n_train=32, size=8, epochs=40, early_stopping="True",
                                                  early_stopping_min_epochs="2", early_stopping_patience="1"))
    result = train(params, train_set, test_set, seed=0, threads=1)
    assert result.stopped_early and len(result.epochs) < 40


def test_step_schedule():
    params = hp(learning_rate="0.1", lr_scheduler_step="2,4", lr_scheduler_factor="0.5")
    assert [learning_rate_at(e, params) for e in range(1, 7)] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]


@pytest.mark.parametrize("kind", [None, "crop", "crop_color", "crop_color_transform"])
def test_augmentation_keeps_shape_and_range(kind):
    params = H.validate(synthetic.hyperparameters(size=12, **({"augmentation_type": kind} if kind else {})))
    x = torch.rand(8, 3, 12, 12)
    out = augment(x, params, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    if kind is None:
        assert torch.equal(out, x)
    else:
        assert not torch.equal(out, x)


def test_images_fit_image_shape_and_resize():
    x, _ = synthetic.images(4, 16)
    assert fit_images(x, H.validate(synthetic.hyperparameters(size=8))).shape == (4, 8, 8, 3)
    gray = H.validate({**synthetic.hyperparameters(size=16), "image_shape": "1,16,16"})
    assert fit_images(x, gray).shape == (4, 16, 16, 1)
    resized = H.validate({**synthetic.hyperparameters(size=8), "resize": "12"})
    assert fit_images(x, resized).shape == (4, 12, 12, 3)
    assert np.array_equal(fit_images(x, H.validate(synthetic.hyperparameters(size=16))), x)


def test_the_design_study_recipe_options_run_and_are_off_by_default():
    from backend.local.training.trainer import DEFAULT_RECIPE, Recipe, cutout

    assert DEFAULT_RECIPE == Recipe(0.0, 0, 0.0, 0.0)
    x = torch.ones(4, 3, 12, 12)
    holed = cutout(x, 4, torch.Generator().manual_seed(0))
    assert ((holed == 0).flatten(1).sum(1) > 0).all() and holed.shape == x.shape
    train_set, test_set = sets(32, 16, 8)
    params = H.validate(synthetic.hyperparameters(n_train=32, size=8, epochs=2, augmentation_type="crop"))
    result = train(params, train_set, test_set, seed=0, threads=1,
                   recipe=Recipe(label_smoothing=0.1, cutout=4, mixup_alpha=0.2, ema_decay=0.9))
    assert len(result.epochs) == 2 and 0.0 <= result.epochs[-1]["validation:accuracy"] <= 1.0


def test_a_whitened_stem_decorrelates_the_training_images_patches():
    import torch.nn.functional as F

    from backend.local.training.model import build_resnet
    from backend.local.training.trainer import Recipe, whiten_stem

    gen = torch.Generator().manual_seed(0)
    x = F.avg_pool2d(torch.rand(64, 3, 18, 18, generator=gen), 3, 1)  # neighbouring pixels correlate
    model = build_resnet(20, 2, (3, 16, 16))
    whiten_stem(model, x, Recipe(whiten_stem="frozen", whiten_eps=0.0), gen)
    out = F.conv2d(x, model.stem.weight).permute(0, 2, 3, 1).reshape(-1, 16).double()
    cov = torch.cov(out.T)
    assert torch.allclose(cov, torch.eye(16, dtype=torch.float64), atol=1e-3)
    assert not model.stem.weight.requires_grad  # frozen; "init" leaves it to train
    train_set, test_set = sets(32, 16, 8)
    params = H.validate(synthetic.hyperparameters(n_train=32, size=8, epochs=1, augmentation_type="crop"))
    result = train(params, train_set, test_set, seed=0, threads=1, recipe=Recipe(whiten_stem="init"))
    assert len(result.epochs) == 1 and result.model.stem.weight.requires_grad


def test_weight_averaging_validates_and_returns_the_average_with_recomputed_batch_norm():
    from backend.local.training.trainer import Recipe

    train_set, test_set = sets(32, 16, 8)
    params = H.validate(synthetic.hyperparameters(n_train=32, size=8, epochs=3, augmentation_type="crop"))
    plain = train(params, train_set, test_set, seed=0, threads=1)
    averaged = train(params, train_set, test_set, seed=0, threads=1, recipe=Recipe(swa_start=2))
    # the same training, then the mean of epochs 2 and 3: other weights, and batch-norm statistics of its own
    assert not torch.equal(plain.model.fc.weight, averaged.model.fc.weight)
    assert not torch.equal(plain.model.bn.running_mean, averaged.model.bn.running_mean)
    assert averaged.model.bn.momentum == plain.model.bn.momentum  # restored after the recompute
    assert [e["train:loss"] for e in averaged.epochs] == pytest.approx([e["train:loss"] for e in plain.epochs], rel=0.05)


def test_cutmix_pastes_one_box_from_a_partner_and_weighs_the_labels_by_area():
    from backend.local.training.trainer import cutmix

    x = torch.arange(6, dtype=torch.float32)[:, None, None, None].expand(6, 3, 8, 8).contiguous()
    gen = torch.Generator().manual_seed(1)
    boxes = 0
    for _ in range(20):
        mixed, partner, own = cutmix(x, gen)
        assert sorted(partner.tolist()) == list(range(6)) and 0.0 <= own <= 1.0
        for i in range(6):
            from_partner = mixed[i] == x[partner[i]]
            if partner[i] != i:
                # each image keeps exactly `own` of its pixels; the rest is its partner's, at the same place
                assert float((mixed[i] == x[i]).float().mean()) == pytest.approx(own)
                assert float(from_partner.float().mean()) == pytest.approx(1 - own)
        boxes += own < 1.0
    assert boxes >= 15  # the box is almost never empty
    assert torch.equal(x, torch.arange(6, dtype=torch.float32)[:, None, None, None].expand(6, 3, 8, 8))  # input untouched


def test_training_with_cutmix_learns_the_synthetic_task():
    train_set, test_set = sets(64, 32, 8)
    params = H.validate(synthetic.hyperparameters(n_train=64, size=8, epochs=8, augmentation_type="crop", cutmix="1"))
    result = train(params, train_set, test_set, seed=0, threads=1)
    assert result.epochs[-1]["validation:accuracy"] > 0.9
    assert result.epochs[-1]["train:accuracy"] > 0.6  # every batch mixed: right by each label's share


def test_train_accuracy_counts_the_batches_left_unmixed(monkeypatch):
    import backend.local.training.trainer as T

    train_set, test_set = sets(64, 32, 8)
    params = H.validate(synthetic.hyperparameters(n_train=64, size=8, epochs=6, augmentation_type="crop", cutmix="0.5"))
    mixed_batches = []

    def whole_box(x, gen):  # the box covers the whole image: each image becomes its partner, labels included
        partner = torch.randperm(len(x), generator=gen)
        mixed_batches.append(partner)
        return x[partner], partner, 0.0

    monkeypatch.setattr(T, "cutmix", whole_box)
    result = train(params, train_set, test_set, seed=0, threads=1)
    assert mixed_batches
    # Scored against their own labels, the swapped images would be right about half the time and pull the
    # figure down to about 0.75; only the clean batches count, and the task is learned.
    assert result.epochs[-1]["train:accuracy"] > 0.9 and result.epochs[-1]["validation:accuracy"] > 0.9


def test_the_thread_governor_uses_all_cores_while_they_pay_and_one_thread_when_shared():
    from backend.local.training.trainer import ThreadGovernor

    quiet = ThreadGovernor(2)
    assert [quiet.step_done(t) for t in (0.002, 0.001, 0.001)] == [2, 2, 1]  # warm-up, then probe one thread
    assert [quiet.step_done(t) for t in (0.0019, 0.0017, 0.0017)] == [1, 1, 2]
    assert quiet.one_thread == 0.0017
    assert [quiet.step_done(0.001) for _ in range(20)] == [2] * 20

    shared = ThreadGovernor(2)
    for t in (0.002, 0.001, 0.001, 0.0017, 0.0017, 0.0017):
        shared.step_done(t)
    assert shared.step_done(0.01) == 2  # one slow step: a burst of another process (a page redrawn), perhaps
    assert shared.step_done(0.001) == 2  # and it was: all cores kept
    assert [shared.step_done(0.02) for _ in range(2)] == [2, 1]  # two in a row: another process stays busy
    assert [shared.step_done(0.0018) for _ in range(8)] == [1] * 7 + [2]  # 8 steps, then try again
    assert shared.one_thread == 0.0018  # the one-thread speed follows the load (its latest steps)
    assert shared.step_done(0.02) == 1 and shared.wait == 16  # still shared: one loss does, and it waits longer
    assert [shared.step_done(0.0018) for _ in range(16)] == [1] * 15 + [2]
    assert shared.step_done(0.001) == 2  # all cores won again: the next lone slow step is forgiven
    assert shared.step_done(0.02) == 2
    assert ThreadGovernor(1).step_done(0.001) == 1


def test_the_mirror_symmetric_network_answers_the_same_for_an_image_and_its_mirror_image():
    from backend.local.training.architectures import architecture
    from backend.local.training.flipnet import FlipResNet
    from backend.local.training.model import build_resnet
    from backend.local.training.trainer import Recipe

    torch.manual_seed(0)
    net = FlipResNet(architecture(20), 2)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        net.train()
        for _ in range(3):  # running statistics of their own in each channel of a pair
            net(torch.cat([x[:3], torch.randn(3, 3, 32, 32) * 2]))
        net.eval()
        one, mirrored = net(x), net(x.flip(3))
    assert (one[:, 0] - one[:, 1]).abs().max() > 1e-4  # not a constant answer
    torch.testing.assert_close(one, mirrored, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in net.parameters()) < 0.6 * sum(p.numel() for p in build_resnet(20, 2).parameters())
    train_set, test_set = sets(32, 16, 8)
    params = H.validate(synthetic.hyperparameters(n_train=32, size=8, epochs=1, augmentation_type="crop"))
    result = train(params, train_set, test_set, seed=0, threads=1, recipe=Recipe(flip_equivariant=True))
    assert isinstance(result.model, FlipResNet) and len(result.epochs) == 1
