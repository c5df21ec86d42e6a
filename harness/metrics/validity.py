"""Metric validity suite: does an image feature space see what a person sees? (Heusel et al. 2017, Fig. 1.)

Real test images are disturbed at increasing strength and compared by FID with a fixed real reference; a feature
space fit to rank generative models must give a value that rises with the strength of every disturbance and that
already leaves the real-vs-real floor at the mildest level.

Protocol (deterministic: every subset, noise field and class order is drawn from generators seeded with `seed`):
- reference: n train images (`fid.reference_images(dataset, "train", n, seed)`); disturbed set: the n test
  images of `fid.reference_images(dataset, "test", n, seed)`, disturbed in model space, then rounded to uint8 as
  every image metric sees its input (`Dataset.to_uint8`). Level 0 is no disturbance, so its value *is* the
  real-vs-real floor FID(train, test).
- one random field per disturbance, shared by its levels (common random numbers): the salt-and-pepper pixels at
  fraction p are a subset of those at any larger p, the Gaussian noise is one draw scaled by σ, the dropped classes
  at k are a subset of those at k + 1. Differences between levels are then the disturbance's, not resampling noise.
- noise of a value: the standard deviation `noise` of FID(train subset_j, test) over `N_NOISE_REFERENCES` train
  subsets drawn with seeds seed, seed + 1, ...: the spread of the floor from the choice of reference sample.
  Tolerance `tol = NOISE_FACTOR · noise`.
- a disturbance passes (its ``monotone`` flag) when its curve v_0 = floor, v_1, ..., v_L rises from the floor:
  (a) no step decreases by more than tol (v_{i+1} ≥ v_i − tol);
  (b) the mildest level leaves the floor: v_1 > floor + tol;
  (c) the mildest level stays near the floor on the scale of the curve: v_1 − floor ≤ `MILDEST_FRACTION` ·
      (v_L − floor), so the value grades the disturbance instead of jumping to its maximum at once.
  An extractor passes on a data set when every disturbance passes.

The feature extractors are the torch-fidelity extractors the metrics use (``fid_cnn``: the data set's domain
classifier, `harness.metrics.classifier`; ``fid_inception``: ``inception-v3-compat`` with the offline weights of
`harness.metrics.inception`), called directly on uint8 batches; FID is torch-fidelity's own
`fid_statistics_to_metric` on their `fid_features_to_statistics`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as Fn
from torch import Tensor

if TYPE_CHECKING:
    from harness.datasets import Dataset

SCHEMA = 1
EXTRACTORS = ("fid_cnn", "fid_inception")
N_NOISE_REFERENCES = 4
NOISE_FACTOR = 2.0
MILDEST_FRACTION = 0.5
DEFAULT_N = 300

# strength levels, level 0 = none. Units: Gaussian noise σ in model units (images span [-1, 1], width 2);
# salt-and-pepper: fraction of pixels set to an extreme; blur: Gaussian σ in pixels; saturation: weight a of the
# pushed image in (1 − a)·x + a·extreme(x); drop_classes: number of classes removed (replaced by other classes).
LEVELS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.0, 0.05, 0.1, 0.2, 0.4),
    "salt_and_pepper": (0.0, 0.02, 0.05, 0.1, 0.2),
    "blur": (0.0, 0.5, 1.0, 1.5, 2.0),
    "saturation": (0.0, 0.25, 0.5, 0.75, 1.0),
    "drop_classes": (0.0, 1.0, 2.0, 3.0, 5.0),
}


# disturbances: pure functions of model-space images [N, C, H, W] ----------------------------------------------------

def gaussian_noise(x: Tensor, sigma: float, z: Tensor, value_range: tuple[float, float]) -> Tensor:
    """x + σ·z, clipped to the value range (z: a fixed standard normal field)."""
    return (x + sigma * z).clamp(*value_range)


def salt_and_pepper(x: Tensor, p: float, u: Tensor, v: Tensor, value_range: tuple[float, float]) -> Tensor:
    """Pixels with u < p (u, v fixed uniform fields of x's shape without channels) set to the low (v < ½) or high
    extreme of the value range in every channel: the pixels hit at p are a subset of those hit at any p' > p."""
    lo, hi = value_range
    hit = (u < p).unsqueeze(1).expand_as(x)
    extreme = torch.where(v < 0.5, lo, hi).unsqueeze(1).expand_as(x)
    return torch.where(hit, extreme, x)


def gaussian_kernel(sigma: float) -> Tensor:
    """Normalised 1-D Gaussian kernel of radius ⌈3σ⌉."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with standard deviation σ pixels, edges replicated (σ = 0: unchanged)."""
    if sigma <= 0:
        return x.clone()
    k = gaussian_kernel(sigma)
    r, c = k.numel() // 2, x.shape[1]
    y = Fn.pad(x, (r, r, 0, 0), mode="replicate")
    y = Fn.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = Fn.pad(y, (0, 0, r, r), mode="replicate")
    return Fn.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def saturate(x: Tensor, a: float, value_range: tuple[float, float]) -> Tensor:
    """(1 − a)·x + a·e(x), e(x) the nearer extreme of the value range (values at the midpoint go high): a = 1
    turns every pixel black or white."""
    lo, hi = value_range
    extreme = torch.where(x >= (lo + hi) / 2, hi, lo)
    return (1 - a) * x + a * extreme


def drop_classes(x: Tensor, y: Tensor, k: int, order: Tensor, pool_x: Tensor, pool_y: Tensor,
                 g: torch.Generator) -> Tensor:
    """x with every image of the first k classes of `order` replaced by a distinct image of another class drawn
    from the pool (n stays fixed; the class histogram loses k classes)."""
    if k == 0:
        return x.clone()
    dropped = order[:k]
    out = x.clone()
    gone = torch.isin(y, dropped)
    keep = torch.nonzero(~torch.isin(pool_y, dropped)).flatten()
    pick = keep[torch.randperm(keep.numel(), generator=g)[: int(gone.sum())]]
    if pick.numel() < int(gone.sum()):
        raise ValueError(f"not enough pool images to replace {int(gone.sum())} images of {k} dropped classes")
    out[gone] = pool_x[pick]
    return out


def disturbed_sets(dataset: Dataset, x: Tensor, y: Tensor | None, pool_x: Tensor, pool_y: Tensor | None,
                   seed: int, levels: dict[str, tuple[float, ...]] = LEVELS) -> dict[str, list[Tensor]]:
    """Disturbance name → model-space image sets, one per level (level 0 = x). drop_classes needs labels and a
    pool of other labelled images (here: train images outside the reference); it is left out without labels."""
    vr = tuple(float(v) for v in dataset.value_range)
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = x.shape
    z = torch.randn(x.shape, generator=g)
    u, v = torch.rand((n, h, w), generator=g), torch.rand((n, h, w), generator=g)
    make: dict[str, Callable[[float], Tensor]] = {
        "gaussian_noise": lambda s: gaussian_noise(x, s, z, vr),
        "salt_and_pepper": lambda p: salt_and_pepper(x, p, u, v, vr),
        "blur": lambda s: blur(x, s),
        "saturation": lambda a: saturate(x, a, vr),
    }
    if y is not None and pool_y is not None:
        num_classes = int(max(int(y.max()), int(pool_y.max())) + 1)
        order = torch.randperm(num_classes, generator=g)
        gd = torch.Generator().manual_seed(seed + 1)
        seeds = torch.randint(0, 2**62, (1,), generator=gd)

        def drop(k: float) -> Tensor:  # the same replacement draw order at every k
            return drop_classes(x, y, int(k), order, pool_x, pool_y, torch.Generator().manual_seed(int(seeds)))

        make["drop_classes"] = drop
    return {name: [make[name](s) for s in lv] for name, lv in levels.items() if name in make}


# checks ---------------------------------------------------------------------------------------------------------

def curve_passes(values: list[float], floor: float, tol: float, mildest_fraction: float = MILDEST_FRACTION) -> bool:
    """(a) no step down by more than tol, (b) v_1 > floor + tol, (c) v_1 − floor ≤ fraction · (v_L − floor)."""
    steps_ok = all(b >= a - tol for a, b in zip(values, values[1:], strict=False))
    leaves = values[1] > floor + tol
    graded = values[1] - floor <= mildest_fraction * (values[-1] - floor)
    return bool(steps_ok and leaves and graded)


# feature spaces ---------------------------------------------------------------------------------------------------

def feature_space(dataset: Dataset, extractor: str):
    """(FeatureSpace, extractor version) for ``fid_cnn`` or ``fid_inception``."""
    from harness.metrics import fid

    if extractor == "fid_cnn":
        space = fid.cnn_space(dataset)
        return space, f"{space.info['extractor_version']}; sha256 {space.weights_sha256[:12]}"
    if extractor == "fid_inception":
        space = fid.inception_space()
        return space, f"{space.extractor} weights sha256 {space.weights_sha256[:12]}"
    from harness.errors import UsageError, did_you_mean

    raise UsageError(did_you_mean("extractor", extractor, EXTRACTORS))


def feature_function(space, batch: int = 50) -> Callable[[Tensor], Tensor]:
    """uint8 [N, C, H, W] → float64 features [N, d] from the torch-fidelity extractor of `space` (CPU), the layer
    torch-fidelity uses for FID."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.utils import create_feature_extractor

    layer = FEATURE_EXTRACTORS_REGISTRY[space.extractor].get_default_feature_layer_for_metric("fid")
    fe = create_feature_extractor(space.extractor, [layer], cuda=False,
                                  feature_extractor_weights_path=space.weights_path, verbose=False)

    @torch.no_grad()
    def features(u8: Tensor) -> Tensor:
        x3 = u8.expand(-1, 3, -1, -1).contiguous() if u8.shape[1] == 1 else u8
        return torch.cat([fe(x3[i: i + batch])[0] for i in range(0, x3.shape[0], batch)]).double()

    return features


def frechet(stats_a: dict, stats_b: dict) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return float(fid_statistics_to_metric(stats_a, stats_b, False)[KEY_METRIC_FID])


def statistics(features: Tensor) -> dict:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(features.cpu())


# the suite ------------------------------------------------------------------------------------------------------

def validate(dataset: Dataset, extractor: str, n: int = DEFAULT_N, seed: int = 0,
             levels: dict[str, tuple[float, ...]] = LEVELS, log: Callable[[str], None] | None = None
             ) -> dict[str, Any]:
    """One result entry of the schema: FID(train reference, disturbed test images) for every disturbance and level.
    n is capped by the test split's size."""
    from harness.metrics import fid
    from harness.metrics.classifier import from_uint8, single_thread

    x_test, y_test = dataset.split("test")
    n = min(n, x_test.shape[0])
    space, version = feature_space(dataset, extractor)
    with single_thread():
        features = feature_function(space)
        refs = [statistics(features(fid.reference_images(dataset, "train", n, seed + j)))
                for j in range(N_NOISE_REFERENCES)]
        test_u8 = fid.reference_images(dataset, "test", n, seed)
        idx = torch.randperm(x_test.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
        x = from_uint8(test_u8, dataset.value_range, x_test.shape[1])
        y = y_test[idx] if y_test is not None else None
        x_train, y_train = dataset.split("train")
        ref_idx = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
        outside = torch.ones(x_train.shape[0], dtype=torch.bool)
        outside[ref_idx] = False
        pool_x = from_uint8(dataset.to_uint8(x_train[outside]), dataset.value_range, x_train.shape[1])
        pool_y = y_train[outside] if y_train is not None else None
        sets = disturbed_sets(dataset, x, y, pool_x, pool_y, seed, levels)
        test_stats = statistics(features(test_u8))
        floors = [frechet(test_stats, r) for r in refs]
        floor = floors[0]
        noise = float(torch.tensor(floors).std())
        tol = NOISE_FACTOR * noise
        out = {}
        for name, imgs in sets.items():
            values = [floor] + [frechet(statistics(features(dataset.to_uint8(im))), refs[0]) for im in imgs[1:]]
            out[name] = {"levels": [float(v) for v in levels[name]], "values": values,
                         "monotone": curve_passes(values, floor, tol)}
            if log:
                log(f"{dataset.name} {extractor} {name}: " + " ".join(f"{v:.3g}" for v in values)
                    + f" (tol {tol:.3g}) {'ok' if out[name]['monotone'] else 'FAIL'}")
    return {"dataset": dataset.name, "extractor": extractor, "extractor_version": version, "n": int(n),
            "floor": float(floor), "passed": all(d["monotone"] for d in out.values()), "disturbances": out}


def run_suite(datasets: list[Dataset], extractors: list[str], n: int = DEFAULT_N, seed: int = 0,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """{"schema": 1, "results": [validate(d, e) for every data set and extractor]}."""
    return {"schema": SCHEMA, "results": [validate(d, e, n, seed, log=log) for d in datasets for e in extractors]}


def merge_results(path, result: dict[str, Any]) -> dict[str, Any]:
    """`result` plus the entries of an existing results file at `path` for data set × extractor pairs that
    `result` does not hold (a file of another schema, or unreadable, is replaced)."""
    import json
    from pathlib import Path

    try:
        old = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return result
    if not isinstance(old, dict) or old.get("schema") != SCHEMA:
        return result
    ran = {(r["dataset"], r["extractor"]) for r in result["results"]}
    kept = [r for r in old.get("results", []) if (r.get("dataset"), r.get("extractor")) not in ran]
    merged = sorted(kept + result["results"], key=lambda r: (r["dataset"], EXTRACTORS.index(r["extractor"])
                                                               if r["extractor"] in EXTRACTORS else 99))
    return {"schema": SCHEMA, "results": merged}


def format_table(result: dict[str, Any]) -> str:
    """One line per data set × extractor × disturbance: values by level and the verdict."""
    lines = []
    for r in result["results"]:
        lines.append(f"{r['dataset']} {r['extractor']} ({r['extractor_version']}), n={r['n']}, "
                     f"floor {r['floor']:.3g}: {'PASSED' if r['passed'] else 'FAILED'}")
        width = max(len(k) for k in r["disturbances"])
        for name, d in r["disturbances"].items():
            vals = "  ".join(f"{lv:g}:{v:.3g}" for lv, v in zip(d["levels"], d["values"], strict=True))
            lines.append(f"  {name:<{width}}  {vals}  {'ok' if d['monotone'] else 'FAIL'}")
    return "\n".join(lines)
