"""CUDA-graph sampler steps against eager (issue 11; CUDA only, skipped elsewhere): walk-jump's walk and the
Langevin chains of dsm and ssm at batch 256 on the CIFAR-10 U-Net of configs/cifar10.toml, with `eval.cuda_graphs`'
mechanism (`harness.accel.cuda_graph_sampling`: network evaluations captured and replayed, noise drawn eagerly).
Goal: ≥ 2× the eager steps/s.

    pytest benchmarks/test_bench_sampling_graphs.py --benchmark-enable \
        --benchmark-json=results/benchmarks/<device>-issue11-sampling-graphs-<date>.json -q

One round is `STEPS` chain steps from the same state, then one synchronisation; the eager case is the group's
baseline (``extra_info["baseline"]``), and benchmarks/conftest.py writes the speed ratio into the JSON. Before
timing, the graphed steps are checked to give the eager samples from the same generator state.
"""

from __future__ import annotations

import pytest
import torch
from test_bench_training import cifar10_method_and_model  # benchmarks/ is on sys.path (pytest, rootdir mode)

from harness import accel
from harness.metrics import throughput as T

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs: no CUDA device here")

CHAINS = 256
STEPS = 20  # chain steps per round
CASES = {"walk_jump-walk": "walk_jump", "dsm-langevin": "dsm", "ssm-langevin": "ssm"}


def _chain(method_name: str, device: torch.device):
    method, model, source = cifar10_method_and_model(method_name, device)
    model.eval()
    return model, method.chain(model), source


def _run(chain, state, g: torch.Generator, seed: int):
    """STEPS steps from `state` with the generator at `seed`; the final state, after one synchronisation."""
    g.manual_seed(seed)
    for _ in range(STEPS):
        state = chain.step(state, g)
    T.synchronize(g.device)
    return state


def _tensors(state) -> list[torch.Tensor]:
    return [state] if isinstance(state, torch.Tensor) else [state.y, state.v]


@pytest.mark.parametrize("mode", ["eager", "cuda_graphs"])
@pytest.mark.parametrize("case", CASES)
def test_sampler_steps(benchmark, case, mode):
    graph_case(benchmark, case, mode, torch.device("cuda"), CHAINS)


def graph_case(benchmark, case: str, mode: str, dev: torch.device, chains: int) -> None:
    model, chain, source = _chain(CASES[case], dev)
    g = torch.Generator(dev).manual_seed(0)
    state = chain.init(chains, g)
    benchmark.group = f"sampler-steps-{case}-cifar10-unet-{chains}chains-{STEPS}steps"
    benchmark.extra_info.update(unet=source, chains=chains, steps_per_round=STEPS, baseline=mode == "eager",
                                nfe_per_step=chain.nfe_per_step)
    if mode == "eager":
        benchmark.pedantic(_run, args=(chain, state, g, 1), rounds=10, warmup_rounds=2, iterations=1)
        return
    eager = _run(chain, state, g, 1)
    with accel.cuda_graph_sampling(model, True, dev) as entry:
        graphed = _run(chain, state, g, 1)  # captures, then replays
        for a, b in zip(_tensors(graphed), _tensors(eager), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)  # the eager samples, to float tolerance
        benchmark.pedantic(_run, args=(chain, state, g, 1), rounds=10, warmup_rounds=2, iterations=1)
    benchmark.extra_info.update(cuda_graphs=dict(entry))
