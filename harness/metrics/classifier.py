"""Fast domain features for image data sets: a small CNN classifier trained deterministically on the train split.

Inception-v3 runs at a few images per second on a small CPU, so each labelled image data set also gets its own
classifier, trained once by the harness (seeded initialisation and batch order, fixed recipe), cached on disk with
its test accuracy and SHA-256, and registered as a torch-fidelity feature extractor (`CNN_EXTRACTOR`). FID/KID
computed in its feature space go through the same torch-fidelity code path as Inception FID but are reported under
their own names (``fid_cnn``, ``kid_cnn``, ...): the two feature spaces are never mixed. The same classifier gives
class coverage (`class_kl`) and labels chain states for mode hopping.

The classifier sees what the metrics see: uint8 images (rounded by `Dataset.to_uint8`) mapped back to model space,
so training and evaluation inputs are quantised identically.

Feature space (`EXTRACTOR_VERSION`; see `SmallCNN.features_and_logits`): the last layer alone is trained to ignore
what does not change the class, so it cannot see pixel noise (FID of salt-and-pepper digits at 20% of the pixels:
0.63 against a floor of 0.21, while the same digits blurred by σ = 1 px gave 8.7). The features therefore join
local texture, the spatial mean and root mean square of every channel of the first two convolutions (a noise speck
or a saturated pixel in the background drives an edge filter where a clean digit never does; both statistics grow
with the area affected, so the value grades the disturbance, where a spatial maximum jumps to its ceiling at the
first speck: MNIST salt-and-pepper FID 795 at 2% of the pixels, 1,220 at 20%), with the penultimate layer (the class
evidence), and every feature is standardised by its mean and standard deviation over the train split: a value is then
counted in units of its natural variation between real images, so texture that real images hold nearly constant
counts when samples move it. `harness.metrics.validity` checks the result against Gaussian noise,
salt-and-pepper, blur, saturation and dropped classes (Heusel et al. 2017, Fig. 1).

Recipes per data set (`RECIPES`, `recipe_for`): digits, MNIST and Fashion-MNIST use the default `ClassifierRecipe`
(the version-4 SmallCNN, test accuracy 0.97 / 0.98 / 0.86); CIFAR-10 needs a stronger net (the default reaches 0.56
and fails validity) and gets `CIFAR10_RECIPE` (0.835): the same layout (conv1, stride-2 conv2, a deeper trunk,
pooled fc penultimate, head), wider, with BatchNorm before every ReLU, trained with SGD (Nesterov momentum, weight
decay), a warm-up + cosine learning rate, label smoothing and random-crop + horizontal-flip augmentation. Its
features are of the same kind: per-channel mean and RMS of the conv1 and conv2 activations (after BatchNorm and
ReLU, running statistics in eval mode) and the penultimate layer, z-scored on the train split. Unknown image data
sets get the default recipe.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.datasets import default_cache_dir

if TYPE_CHECKING:
    from harness.datasets import Dataset

CNN_EXTRACTOR = "scorebench-cnn"  # torch-fidelity feature extractor name
CLASSIFIER_VERSION = 4  # bump when the architecture, training loop or features change (part of the cache key)
# the feature space of fid_cnn/kid_cnn/...: in every metric's protocol and in the classifier's cache key
EXTRACTOR_VERSION = "cnn4-texture-z: conv1+conv2 mean,rms | penultimate; z-scored on train"
FEATURE_STD_FLOOR = 0.1  # a feature's std is at least this fraction of its block's median std (dead channels)


class ClassifierUnavailable(RuntimeError):
    """The data set cannot have a domain classifier (not images, or no labels)."""


V4_FIELDS = ("width", "feat_dim", "pool", "batch_size", "lr", "epochs", "min_steps", "max_steps", "seed")
NORMS = ("none", "batch")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")
AUGMENTS = ("none", "crop_flip")


@dataclass(frozen=True)
class ClassifierRecipe:
    """Architecture and training recipe; every field is part of the cache key and of the metric protocol.
    Steps = epochs × ⌈N/batch⌉ clamped to [min_steps, max_steps] (small data sets still get enough steps).

    Fields after `seed` came after version 4; `as_dict` lists them only when they differ from their defaults, so the
    default recipe (and the digits/MNIST/Fashion-MNIST classifiers) keeps its version-4 cache key, checkpoint bytes
    and protocol. `trunk`: the convolutions after conv2 as (width multiple of `width`, stride) pairs."""

    width: int = 16
    feat_dim: int = 64
    pool: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    epochs: int = 3
    min_steps: int = 300
    max_steps: int = 1500
    seed: int = 0
    trunk: tuple[tuple[int, int], ...] = ((2, 1), (2, 2))
    norm: str = "none"  # "batch": BatchNorm2d (no conv bias) before every ReLU of the convolutions
    optimizer: str = "adam"  # "sgd": Nesterov momentum
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"  # "cosine": linear warm-up over `warmup` of the steps, then cosine to 0
    warmup: float = 0.0
    augment: str = "none"  # "crop_flip": random crop after reflection padding by `crop_pad` + horizontal flip
    crop_pad: int = 4
    label_smoothing: float = 0.0

    def __post_init__(self):
        for name, valid in (("norm", NORMS), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                            ("augment", AUGMENTS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"ClassifierRecipe.{name} = {getattr(self, name)!r}; valid: {', '.join(valid)}")
        object.__setattr__(self, "trunk", tuple((int(m), int(s)) for m, s in self.trunk))

    def steps(self, n_train: int) -> int:
        return min(self.max_steps, max(self.min_steps, self.epochs * math.ceil(n_train / self.batch_size)))

    def as_dict(self) -> dict[str, Any]:
        """The recipe for the cache key, the checkpoint and the protocol: the version-4 fields, then every later
        field that differs from its default (trunk as lists, as JSON has it)."""
        d, default = asdict(self), asdict(ClassifierRecipe())
        out = {k: d[k] for k in V4_FIELDS}
        out.update({k: v for k, v in d.items() if k not in V4_FIELDS and v != default[k]})
        if "trunk" in out:
            out["trunk"] = [list(t) for t in out["trunk"]]
        return out

    def arch(self) -> dict[str, Any]:
        """The architecture arguments of `SmallCNN` (the version-4 ones, then later ones where not default)."""
        d = self.as_dict()
        return {k: d[k] for k in ("width", "feat_dim", "pool", "trunk", "norm") if k in d}


# CIFAR-10: 32×32 colour needs more capacity than the digits net. 3→32 @32², 32→32/2 @16², 32→64 @16², 64→64/2 @8²,
# 64→128 @8², 128→128/2 @4², pooled to 2×2, fc 512→128, head; label smoothing 0.1 (tighter class clusters in the
# penultimate layer, Müller et al. 2019). 6 epochs = 2,346 steps: test accuracy 0.835 in 447 s on one CPU thread
# (0.829 without label smoothing; the default recipe: 0.56).
CIFAR10_RECIPE = ClassifierRecipe(
    width=32, feat_dim=128, pool=2, batch_size=128, lr=0.1, epochs=6, min_steps=300, max_steps=100_000, seed=0,
    trunk=((2, 1), (2, 2), (4, 1), (4, 2)), norm="batch", optimizer="sgd", momentum=0.9, weight_decay=5e-4,
    schedule="cosine", warmup=0.15, augment="crop_flip", crop_pad=4, label_smoothing=0.1)

# data set name → recipe; an image data set not listed here gets the default `ClassifierRecipe()`
RECIPES: dict[str, ClassifierRecipe] = {
    "digits": ClassifierRecipe(),  # version-4 recipe: test accuracy 0.97 (8×8 digits, 300 steps)
    "mnist": ClassifierRecipe(),  # 0.981
    "fashion_mnist": ClassifierRecipe(),  # 0.856
    "cifar10": CIFAR10_RECIPE,  # 0.835
}


def recipe_for(dataset_name: str) -> ClassifierRecipe:
    """The data set's classifier recipe (`RECIPES`), the default recipe for any other data set."""
    return RECIPES.get(dataset_name, ClassifierRecipe())


def _conv_layers(c_in: int, c_out: int, stride: int, norm: str) -> list[nn.Module]:
    if norm == "batch":
        return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU()]


class SmallCNN(nn.Module):
    """conv3×3(C→w) · conv3×3/2(w→w) · trunk (default: conv3×3(w→2w) · conv3×3/2(2w→2w)) · adaptive mean pool to
    p×p · fc(c·p²→f) · fc(f→K), ReLU (with `norm="batch"`: conv · BatchNorm · ReLU). `logits` are the K class scores;
    `features` (4w + f of them) the spatial mean and root mean square of the first two convolutions' activations and
    the penultimate activations (after ReLU), each standardised by `feature_mean` and `feature_std` (set after
    training from the train split). (A global mean, p = 1, before fc loses too much layout: MNIST test accuracy 0.88
    vs 0.97 with p = 3 after 700 steps.)"""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, feat_dim: int = 64, pool: int = 3,
                 trunk: tuple[tuple[int, int], ...] | list = ((2, 1), (2, 2)), norm: str = "none"):
        super().__init__()
        w = width
        layers = _conv_layers(in_channels, w, 1, norm)
        self._cut1 = len(layers)  # body[:cut1] gives conv1's activations, body[cut1:cut2] conv2's
        layers += _conv_layers(w, w, 2, norm)
        self._cut2 = len(layers)
        c = w
        for mult, stride in trunk:
            layers += _conv_layers(c, mult * w, stride, norm)
            c = mult * w
        self.body = nn.Sequential(*layers)
        self.pool = pool
        self.fc = nn.Linear(c * pool * pool, feat_dim)
        self.head = nn.Linear(feat_dim, num_classes)
        self.blocks = {"conv1_mean": w, "conv2_mean": w, "conv1_rms": w, "conv2_rms": w, "penultimate": feat_dim}
        self.feature_dim = sum(self.blocks.values())
        # standardisation of every feature, set after training from the train split: features are O(1) like
        # Inception's (KID's polynomial kernel is scale-sensitive) and counted in units of their natural spread
        self.register_buffer("feature_mean", torch.zeros(self.feature_dim))
        self.register_buffer("feature_std", torch.ones(self.feature_dim))

    def raw_features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Unstandardised features [N, feature_dim] (blocks in the order of `blocks`) and logits."""
        a1 = self.body[: self._cut1](x)
        a2 = self.body[self._cut1: self._cut2](a1)
        h = F.relu(self.fc(F.adaptive_avg_pool2d(self.body[self._cut2:](a2), self.pool).flatten(1)))
        rms1, rms2 = a1.square().mean((2, 3)).sqrt(), a2.square().mean((2, 3)).sqrt()
        feats = torch.cat([a1.mean((2, 3)), a2.mean((2, 3)), rms1, rms2, h], 1)
        return feats, self.head(h)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats, logits = self.raw_features_and_logits(x)
        return (feats - self.feature_mean) / self.feature_std, logits

    @torch.no_grad()
    def set_standardisation(self, raw: Tensor) -> None:
        """feature_mean/std from raw features of the train split; each std at least `FEATURE_STD_FLOOR` × the
        median std of its block (a channel constant on real images would otherwise divide by zero)."""
        std = raw.std(0)
        floors = torch.cat([torch.full((d,), float(s.median()) * FEATURE_STD_FLOOR)
                            for s, d in zip(std.split(list(self.blocks.values())), self.blocks.values(), strict=True)])
        self.feature_mean.copy_(raw.mean(0))
        self.feature_std.copy_(torch.maximum(std, floors.clamp_min(1e-12)))

    def forward(self, x: Tensor) -> Tensor:
        return self.features_and_logits(x)[1]


def from_uint8(x: Tensor, value_range: tuple[float, float], channels: int) -> Tensor:
    """uint8 [N, 3 or C, H, W] to model space [N, channels, H, W] (the inverse of `Dataset.to_uint8`)."""
    lo, hi = value_range
    return x[:, :channels].float() / 255 * (hi - lo) + lo


def quantise(dataset: Dataset, x: Tensor) -> Tensor:
    """Model space → uint8 (rounded) → model space: what every image metric sees."""
    return from_uint8(dataset.to_uint8(x), dataset.value_range, x.shape[1])


def _save_bytes(obj: Any, path: Path) -> None:
    buf = io.BytesIO()  # a buffer keeps the archive name, hence the file's SHA-256, independent of the path
    torch.save(obj, buf)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def train_classifier(x: Tensor, y: Tensor, num_classes: int, recipe: ClassifierRecipe) -> tuple[SmallCNN, dict]:
    """Adam on cross-entropy; seeded initialisation (forked global RNG) and batch order (own generator), on one
    CPU thread: the result does not depend on the machine's thread count (and a busy 2-core machine trains many
    times faster than with oversubscribed threads)."""
    with single_thread():
        return _train(x, y, num_classes, recipe)


@contextmanager
def single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def lr_factor(step: int, steps: int, recipe: ClassifierRecipe) -> float:
    """Multiplier of `recipe.lr` at optimiser step `step` (0-based) of `steps`: 1 for "constant"; for "cosine" a
    linear warm-up to 1 over the first ⌈warmup·steps⌉ steps, then ½(1 + cos(π t)), t from 0 to 1 at the last step
    (Loshchilov & Hutter 2017, SGDR, without restarts)."""
    if recipe.schedule == "constant":
        return 1.0
    warm = math.ceil(recipe.warmup * steps)
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, steps - 1 - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def crop_flip(x: Tensor, pad: int, g: torch.Generator) -> Tensor:
    """Random crop of x's size from x reflection-padded by `pad`, then a horizontal flip with probability ½, per image
    (draws from `g`: offsets dy, dx, then flips). Every output pixel is a pixel of its input image."""
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    rows = dy[:, None] + torch.arange(h)
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = xp[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # [n, h, w, C]
    return out.permute(0, 3, 1, 2).contiguous()


def _optimizer(net: nn.Module, recipe: ClassifierRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
                               weight_decay=recipe.weight_decay)
    if recipe.weight_decay:
        return torch.optim.Adam(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(net.parameters(), lr=recipe.lr)


def _train(x: Tensor, y: Tensor, num_classes: int, recipe: ClassifierRecipe) -> tuple[SmallCNN, dict]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = SmallCNN(x.shape[1], num_classes, **recipe.arch())
    g = torch.Generator().manual_seed(recipe.seed)
    opt = _optimizer(net, recipe)
    steps = recipe.steps(x.shape[0])
    net.train()
    t0 = time.perf_counter()
    perm, pos = torch.randperm(x.shape[0], generator=g), 0
    for step in range(steps):
        if pos + recipe.batch_size > x.shape[0]:
            perm, pos = torch.randperm(x.shape[0], generator=g), 0
        idx = perm[pos: pos + recipe.batch_size]
        pos += recipe.batch_size
        xb = crop_flip(x[idx], recipe.crop_pad, g) if recipe.augment == "crop_flip" else x[idx]
        if recipe.schedule != "constant":
            for group in opt.param_groups:
                group["lr"] = recipe.lr * lr_factor(step, steps, recipe)
        if recipe.label_smoothing:
            loss = F.cross_entropy(net(xb), y[idx], label_smoothing=recipe.label_smoothing)
        else:
            loss = F.cross_entropy(net(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        raw = torch.cat([net.raw_features_and_logits(x[i: i + 1000])[0] for i in range(0, x.shape[0], 1000)])
        net.set_standardisation(raw)
    return net, {"steps": steps, "final_loss": float(loss.detach()), "train_seconds": time.perf_counter() - t0}


@torch.no_grad()
def accuracy(net: nn.Module, x: Tensor, y: Tensor, batch: int = 1000) -> float:
    pred = torch.cat([net(x[i: i + batch]).argmax(1) for i in range(0, x.shape[0], batch)])
    return float((pred == y).float().mean())


class DomainClassifier:
    """A trained SmallCNN plus where it lives (`path`, `sha256`) and what it scored (`meta['test_accuracy']`)."""

    def __init__(self, net: SmallCNN, config: dict, meta: dict, path: Path):
        self.net, self.config, self.meta, self.path = net, config, meta, Path(path)
        self.sha256 = meta["sha256"]
        self.num_classes = config["num_classes"]

    @torch.no_grad()
    def features_and_logits(self, x: Tensor, batch: int = 500) -> tuple[Tensor, Tensor]:
        """Model-space images (any device) → (features, logits) on x's device."""
        dev = x.device
        net = self.net.to(dev)
        outs = [net.features_and_logits(x[i: i + batch].float()) for i in range(0, x.shape[0], batch)]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def logits(self, x: Tensor) -> Tensor:
        return self.features_and_logits(x)[1]

    def predict(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(1)

    def protocol(self) -> dict:
        return {"classifier_sha256": self.sha256, "classifier_test_accuracy": self.meta["test_accuracy"],
                "classifier_recipe": self.meta["recipe"], "classifier_version": CLASSIFIER_VERSION,
                "extractor_version": EXTRACTOR_VERSION}


def _split_digest(dataset: Dataset, split: str) -> tuple[Tensor, Tensor, str]:
    x, y = dataset.split(split)
    if y is None:
        raise ClassifierUnavailable(f"data set {dataset.name!r} has no labels: no domain classifier")
    u8 = dataset.to_uint8(x)
    h = hashlib.sha256(u8.numpy().tobytes())
    h.update(y.to(torch.int64).numpy().tobytes())
    return u8, y.to(torch.int64), h.hexdigest()


_LOADED: dict[str, DomainClassifier] = {}
_BUILD_SECONDS = [0.0]  # seconds spent training or loading classifiers since the last `pop_build_seconds`


def pop_build_seconds() -> float:
    """Seconds `get_classifier` spent training (or loading from the disk cache) since the last call, then reset:
    the runner charges them to the domain classifier, not to the metric that happened to need it first."""
    seconds, _BUILD_SECONDS[0] = _BUILD_SECONDS[0], 0.0
    return seconds


def classifier_path(dataset: Dataset, recipe: ClassifierRecipe, cache_dir: Path | None = None) -> tuple[Path, str]:
    _, _, digest = _split_digest(dataset, "train")
    key = hashlib.sha256(json.dumps({"dataset": dataset.name, "train": digest, "recipe": recipe.as_dict(),
                                     "version": CLASSIFIER_VERSION, "extractor": EXTRACTOR_VERSION},
                                    sort_keys=True).encode()).hexdigest()
    folder = Path(cache_dir or default_cache_dir() / "classifiers")
    return folder / f"{dataset.name}-{key[:16]}.pt", key


def get_classifier(dataset: Dataset, recipe: ClassifierRecipe | None = None,
                   cache_dir: Path | None = None) -> DomainClassifier:
    """The data set's classifier (recipe: `recipe_for(dataset.name)` unless given): loaded from the cache, or trained
    on the train split and cached with its test accuracy. The cache key covers the data set name, a SHA-256 of its
    uint8 train split and labels, the recipe (`ClassifierRecipe.as_dict`), `CLASSIFIER_VERSION` and
    `EXTRACTOR_VERSION`. The seconds spent training or loading are in
    ``meta["build_seconds"]`` and added to `pop_build_seconds` (an in-memory hit costs nothing)."""
    if dataset.kind != "image":
        raise ClassifierUnavailable(f"data set {dataset.name!r} is not an image data set")
    recipe = recipe_for(dataset.name) if recipe is None else recipe
    path, _ = classifier_path(dataset, recipe, cache_dir)
    if str(path) in _LOADED and path.is_file():
        return _LOADED[str(path)]
    t0 = time.perf_counter()
    if path.is_file():
        clf = load_classifier(path)
        clf.meta["loaded_from_cache"] = True
    else:
        u8, y, digest = _split_digest(dataset, "train")
        x = from_uint8(u8, dataset.value_range, u8.shape[1])
        num_classes = dataset.num_classes or int(y.max()) + 1
        net, info = train_classifier(x, y, num_classes, recipe)
        u8t, yt, _ = _split_digest(dataset, "test")
        acc = accuracy(net, from_uint8(u8t, dataset.value_range, u8t.shape[1]), yt)
        config = {"in_channels": int(x.shape[1]), "num_classes": num_classes, **recipe.arch(),
                  "value_range": [float(v) for v in dataset.value_range], "in_shape": [int(s) for s in x.shape[1:]]}
        seconds = info.pop("train_seconds")  # not in the checkpoint: its bytes (and SHA-256) stay deterministic
        meta = {"dataset": dataset.name, "test_accuracy": acc, "recipe": recipe.as_dict(), "train_sha256": digest,
                "version": CLASSIFIER_VERSION, "extractor_version": EXTRACTOR_VERSION, **info}
        path.parent.mkdir(parents=True, exist_ok=True)
        _save_bytes({"config": config, "state_dict": net.state_dict(), "meta": meta}, path)
        clf = load_classifier(path)
        clf.meta.update(loaded_from_cache=False, train_seconds=seconds)
    clf.meta["build_seconds"] = time.perf_counter() - t0
    _BUILD_SECONDS[0] += clf.meta["build_seconds"]
    _LOADED[str(path)] = clf
    return clf


def load_classifier(path: Path) -> DomainClassifier:
    from harness.metrics.inception import sha256_file

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    c = ckpt["config"]
    net = SmallCNN(c["in_channels"], c["num_classes"], c["width"], c["feat_dim"], c["pool"],
                   trunk=c.get("trunk", ((2, 1), (2, 2))), norm=c.get("norm", "none"))
    net.load_state_dict(ckpt["state_dict"])
    net.eval().requires_grad_(False)
    return DomainClassifier(net, c, {**ckpt["meta"], "sha256": sha256_file(path)}, path)


# torch-fidelity feature extractor --------------------------------------------------------------------------------

def _feature_extractor_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class ClassifierFeatureExtractor(FeatureExtractorBase):
        """torch-fidelity feature extractor over a cached `SmallCNN`; `feature_extractor_weights_path` names the
        classifier checkpoint. Input: uint8 [N, 3, H, W] (gray repeated); features: 'features', 'logits'."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            if feature_extractor_weights_path is None:
                raise ValueError(f"{CNN_EXTRACTOR} needs feature_extractor_weights_path (a classifier checkpoint)")
            clf = load_classifier(Path(feature_extractor_weights_path))
            self.net = clf.net
            self.channels = clf.config["in_channels"]
            self.value_range = tuple(clf.config["value_range"])
            self.requires_grad_(False).eval()

        def forward(self, x):
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"expected uint8 images [N, 3, H, W], got {x.dtype} {tuple(x.shape)}")
            feats, logits = self.net.features_and_logits(from_uint8(x, self.value_range, self.channels))
            out = {"features": feats, "logits": logits}
            return tuple(out[f] for f in self.features_list)

        @staticmethod
        def get_provided_features_list():
            return "features", "logits"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    return ClassifierFeatureExtractor


def register_with_torch_fidelity() -> None:
    """Register `CNN_EXTRACTOR` with torch-fidelity (idempotent)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if CNN_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(CNN_EXTRACTOR, _feature_extractor_class())


# class coverage ----------------------------------------------------------------------------------------------------

def class_histogram(labels: Tensor, num_classes: int, pseudo_count: float = 0.0) -> Tensor:
    """(counts + pseudo_count) / (n + K·pseudo_count), float64 [K]."""
    counts = torch.bincount(labels.cpu().to(torch.int64), minlength=num_classes).to(torch.float64)
    return (counts + pseudo_count) / (counts.sum() + num_classes * pseudo_count)


def class_kl(p_data: Tensor, sample_labels: Tensor, pseudo_count: float = 0.5) -> float:
    """KL(p_data ‖ q) = Σ_k p_k log(p_k / q_k), q the samples' predicted-class histogram with `pseudo_count`
    added to every class (Jeffreys prior), so a dropped class costs a large but finite penalty."""
    q = class_histogram(sample_labels, p_data.shape[0], pseudo_count)
    p = p_data.to(torch.float64)
    mask = p > 0
    return float((p[mask] * (p[mask] / q[mask]).log()).sum())
