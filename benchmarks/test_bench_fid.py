"""Speed of our FID pipeline (uint8 images in memory → features in our batch loop → float64 `GaussianStats` →
torch-fidelity's Fréchet distance) against torch-fidelity's own `calculate_metrics` on the same in-memory images
(its DataLoader, `fid_features_to_statistics`, the same Fréchet distance), each group in the same run:

    pytest benchmarks/test_bench_fid.py --benchmark-enable --benchmark-columns=mean,stddev,rounds

Ratio = mean(torch_fidelity) / mean(ours) in a group (goal ≥ 0.95: ours no slower than 5%). Inception upsamples
the 8×8 digits to 299×299 in both (torch-fidelity's TF-1.x bilinear); on one CPU thread it runs at a few images per
second, so the CPU case is 16 + 16 digits. torch-fidelity runs with ``save_cpu_ram=True`` (no DataLoader worker
processes), as we call it; the CUDA cases (skipped without a GPU) use 2,048 + 2,048 digits and the same batch size
on both sides.
"""

import pytest
import torch

from harness.metrics import fid as F

CASES = {"cpu": 16, "cuda": 2048}  # images per side


def _digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint sets of n scikit-learn 8×8 digits as uint8 [n, 1, 8, 8] (repeated if n > 898)."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images, dtype=torch.float64)[:, None] / 16 * 255
    x = x.round().to(torch.uint8)
    x = x.repeat((2 * n + x.shape[0] - 1) // x.shape[0], 1, 1, 1)
    return x[:n].contiguous(), x[n: 2 * n].contiguous()


def _space(name: str) -> F.FeatureSpace:
    if name == "inception":
        from harness.metrics.inception import InceptionUnavailable

        try:
            return F.inception_space()
        except InceptionUnavailable as exc:
            pytest.skip(f"no Inception weights: {exc}")
    from plugins.datasets import Digits

    return F.cnn_space(Digits())  # the digits classifier: trained once and cached (scorebench's cache folder)


def _run(benchmark, device: str, space_name: str, pipeline: str, rounds: int):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from threadpoolctl import threadpool_limits

    space = _space(space_name)
    gen, ref = _digits(CASES[device] if space_name == "inception" else 8 * CASES[device])
    cuda = device == "cuda"
    batch = F.default_batch_size(cuda)
    benchmark.group = f"fid-{space_name}-{device}"
    benchmark.extra_info.update({"images_per_side": gen.shape[0], "batch_size": batch})

    def ours():
        return F.fidelity(gen, ref, space, cuda=cuda, kid=False, prc=False, batch_size=batch)

    def theirs():
        import torch_fidelity

        return torch_fidelity.calculate_metrics(
            input1=F.UInt8Images(gen), input2=F.UInt8Images(ref), cuda=cuda, fid=True, batch_size=batch,
            feature_extractor=space.extractor, feature_extractor_weights_path=space.weights_path, cache=False,
            verbose=False, save_cpu_ram=True)

    fn = ours if pipeline == "ours" else theirs
    with threadpool_limits(1):  # numpy's BLAS too (the 2048×2048 eigvals of the Fréchet distance)
        out = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)  # one-time loads excluded
    assert out["frechet_inception_distance"] > 0


@pytest.mark.parametrize("device", CASES)
@pytest.mark.parametrize("pipeline", ["ours", "torch_fidelity"])
def test_fid_inception_pipeline(benchmark, device, pipeline):
    _run(benchmark, device, "inception", pipeline, rounds=3)


@pytest.mark.parametrize("device", CASES)
@pytest.mark.parametrize("pipeline", ["ours", "torch_fidelity"])
def test_fid_cnn_pipeline(benchmark, device, pipeline):
    """The domain CNN (cheap extractor: the loop and the statistics, not the network, dominate)."""
    _run(benchmark, device, "cnn", pipeline, rounds=10)
