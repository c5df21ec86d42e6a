"""Per-data-set recipes of the domain classifier (`harness.metrics.classifier`): the mapping, the version-4 cache key
of the default recipe, the BatchNorm variant of SmallCNN, the cosine schedule and the crop + flip augmentation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.metrics import classifier as C

V4_RECIPE = {"width": 16, "feat_dim": 64, "pool": 3, "batch_size": 128, "lr": 0.002, "epochs": 3, "min_steps": 300,
             "max_steps": 1500, "seed": 0}
# the digits classifier's cache file before per-data-set recipes existed (CLASSIFIER_VERSION 4): its key, and so the
# meaning of committed results that name it, must not change unless the version is bumped on purpose
DIGITS_V4_FILE = "digits-a42199c086bdb550.pt"


@pytest.fixture(scope="module")
def digits():
    from plugins.datasets import Digits

    return Digits()


def test_default_recipe_keeps_its_version_4_key(digits):
    assert C.ClassifierRecipe().as_dict() == V4_RECIPE  # later fields at their defaults are not listed
    assert list(C.ClassifierRecipe().as_dict()) == list(V4_RECIPE)  # same order: same checkpoint bytes
    assert C.ClassifierRecipe().arch() == {"width": 16, "feat_dim": 64, "pool": 3}
    assert C.recipe_for("digits") == C.ClassifierRecipe()
    assert C.classifier_path(digits, C.recipe_for("digits"), cache_dir=None)[0].name == DIGITS_V4_FILE


def test_recipes_per_data_set():
    for name in ("digits", "mnist", "fashion_mnist", "some_new_images"):
        assert C.recipe_for(name) == C.ClassifierRecipe()
    cifar = C.recipe_for("cifar10")
    assert cifar is C.CIFAR10_RECIPE and cifar != C.ClassifierRecipe()
    d = cifar.as_dict()
    assert {k: d[k] for k in V4_RECIPE} != V4_RECIPE  # wider, longer
    assert d["norm"] == "batch" and d["augment"] == "crop_flip" and d["schedule"] == "cosine"
    assert d["trunk"] == [list(t) for t in cifar.trunk]  # JSON-shaped: lists, as a checkpoint's meta holds them
    assert cifar.arch()["norm"] == "batch"


def test_recipe_rejects_unknown_choices():
    with pytest.raises(ValueError, match=r"ClassifierRecipe.norm = 'layer'; valid: none, batch"):
        C.ClassifierRecipe(norm="layer")
    with pytest.raises(ValueError, match=r"augment.*valid: none, crop_flip"):
        C.ClassifierRecipe(augment="mixup")


def test_cosine_schedule_warms_up_then_decays_to_zero():
    r = C.ClassifierRecipe(schedule="cosine", warmup=0.2)
    steps = 102  # warm-up: ⌈20.4⌉ = 21 steps, then the cosine over steps 21..101 (80 intervals)
    f = [C.lr_factor(s, steps, r) for s in range(steps)]
    assert f[0] == pytest.approx(1 / 21) and f[20] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:21], f[1:21], strict=False))  # rises linearly
    assert f[21] == pytest.approx(1.0) and f[61] == pytest.approx(0.5) and f[-1] == pytest.approx(0.0, abs=1e-12)
    assert f[41] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert C.lr_factor(7, steps, C.ClassifierRecipe()) == 1.0  # constant


def test_crop_flip_takes_a_window_of_the_padded_image_maybe_flipped():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    x = x.repeat(20, 1, 1, 1)
    out = C.crop_flip(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out, C.crop_flip(x, 2, torch.Generator().manual_seed(0)))  # deterministic
    xp = F.pad(x, (2, 2, 2, 2), mode="reflect")
    flips = 0
    for i in range(x.shape[0]):
        windows = [xp[i, :, a: a + 6, b: b + 6] for a in range(5) for b in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        flipped = any(torch.equal(out[i], w.flip(-1)) for w in windows)
        assert plain or flipped, i
        flips += flipped and not plain
    assert 5 <= flips <= 35  # about half of 40
    same = C.crop_flip(x, 0, torch.Generator().manual_seed(1))  # no padding: the image itself or its mirror
    assert all(torch.equal(same[i], x[i]) or torch.equal(same[i], x[i].flip(-1)) for i in range(x.shape[0]))


def test_batchnorm_net_features_are_conv1_conv2_statistics_and_penultimate():
    torch.manual_seed(0)
    net = C.SmallCNN(3, 10, width=8, feat_dim=16, pool=2, trunk=((2, 1), (4, 2)), norm="batch").eval()
    assert net.feature_dim == 4 * 8 + 16
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.body) == 4
    x = torch.randn(5, 3, 16, 16)
    feats, logits = net.raw_features_and_logits(x)
    b = net.body
    a1 = F.relu(b[1](b[0](x)))
    a2 = F.relu(b[4](b[3](a1)))
    assert a2.shape == (5, 8, 8, 8)
    want = torch.cat([a1.mean((2, 3)), a2.mean((2, 3)), a1.square().mean((2, 3)).sqrt(),
                      a2.square().mean((2, 3)).sqrt()], 1)
    assert torch.allclose(feats[:, :32], want, atol=1e-6)
    assert logits.shape == (5, 10) and torch.allclose(net.head(feats[:, 32:]), logits, atol=1e-6)


def test_get_classifier_trains_the_data_sets_recipe(digits, monkeypatch, tmp_path):
    """A tiny BatchNorm + SGD + cosine + crop/flip recipe for digits, through the whole cache path: trained
    deterministically, stored with its recipe, reloaded to the same features, reported in the protocol."""
    tiny = C.ClassifierRecipe(width=8, feat_dim=8, pool=2, lr=0.1, min_steps=60, max_steps=60, trunk=((2, 2),),
                              norm="batch", optimizer="sgd", weight_decay=5e-4, schedule="cosine", warmup=0.2,
                              augment="crop_flip", crop_pad=1)
    monkeypatch.setitem(C.RECIPES, "digits", tiny)
    clf = C.get_classifier(digits, cache_dir=tmp_path / "a")
    again = C.get_classifier(digits, cache_dir=tmp_path / "b")  # trained from scratch elsewhere
    assert clf.sha256 == again.sha256 and clf.path.name == again.path.name != DIGITS_V4_FILE
    assert clf.meta["recipe"] == tiny.as_dict() and clf.meta["steps"] == 60
    assert clf.config["norm"] == "batch" and clf.config["trunk"] == [[2, 2]]
    p = clf.protocol()
    assert p["classifier_recipe"]["augment"] == "crop_flip"
    assert p["classifier_test_accuracy"] == clf.meta["test_accuracy"] > 0.4  # 0.64 (flips hurt digits); chance 0.1
    x = digits.split("test")[0][:50]
    loaded = C.load_classifier(clf.path)
    assert torch.equal(loaded.features_and_logits(x)[0], clf.features_and_logits(x)[0])
