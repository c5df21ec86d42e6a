"""Execution options of a run: how the same mathematics is executed on the device (compile, memory format, TF32,
CUDA graphs). None of them belongs to a method; each is off by default where it changes numerics, and what was
asked for and what was actually used (with the reason when they differ) goes into the run record
(``record["execution"]``).

CUDA graphs for sampling (`cuda_graph_sampling`) capture the *network evaluations* of a sampler's steps, not its
random draws: every fixed-shape call of a backbone network (``forward``) or of an energy model's score (forward and
input gradient, ``EnergyModel.score``) is captured once per input signature and replayed afterwards, while the
noise of Langevin, walk-jump, predictor-corrector and Euler–Maruyama steps is still drawn eagerly from the run's
generator. The samples are therefore those of the eager sampler from the same generator state, up to the float
differences of kernels chosen under capture; what a graph saves is the launch overhead of the network's many small
kernels, which dominates small models at moderate batch sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from harness.backbones import EnergyModel

GRAPH_WARMUP_CALLS = 3  # eager calls on a side stream before capture (cuBLAS/cuDNN workspaces, lazy init)


# training-side options -------------------------------------------------------------------------------------

def option_entry(requested: bool, used: bool, note: str = "") -> dict[str, Any]:
    return {"requested": bool(requested), "used": bool(used), "note": note}


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TensorFloat-32 for CUDA matmuls and cuDNN convolutions inside the block (restored afterwards)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def channels_last(model: nn.Module, image: bool) -> bool:
    """Convert an image model's 4-D parameters and buffers to NHWC in place; True when done."""
    if not image:
        return False
    model.to(memory_format=torch.channels_last)
    return True


def batch_format(x: Tensor, nhwc: bool) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if nhwc and x.dim() == 4 else x


def compile_targets(model: nn.Module) -> list[nn.Module]:
    """What `train.compile` compiles: the backbone networks inside the model (methods reach them through
    ``score``, ``estimates``, ``denoise``..., not always through the model's own call, which would then never run
    compiled), or the model itself where it has none."""
    nets = [m for m in model.modules() if getattr(m, "_scorebench_backbone", False)]
    return nets or [model]


def compile_model(model: nn.Module) -> list[nn.Module]:
    """``nn.Module.compile`` in place on `compile_targets`: parameters, state-dict keys and checkpoints are those of
    the eager model. Returns the modules compiled."""
    targets = compile_targets(model)
    for m in targets:
        m.compile()
    return targets


def uncompile_model(model: nn.Module) -> None:
    """Back to eager after a failed compilation (``nn.Module.compile`` only sets the compiled call)."""
    for m in model.modules():
        m._compiled_call_impl = None


# CUDA graphs of network evaluations -------------------------------------------------------------------------

def _signature(*tensors: Tensor | None) -> tuple:
    return tuple(None if t is None else (tuple(t.shape), t.dtype, t.device, t.stride()) for t in tensors)


class _Graphed:
    """One captured call ``fn(x, c)`` per input signature; later calls copy their inputs into the static buffers,
    replay, and return a copy of the static output (the next replay overwrites it)."""

    def __init__(self, fn: Callable[[Tensor, Tensor | None], Tensor], pool):
        self.fn, self.pool = fn, pool
        self.graphs: dict[tuple, tuple[Any, Tensor, Tensor | None, Tensor]] = {}
        self.replays = 0

    def __call__(self, x: Tensor, c: Tensor | None) -> Tensor:
        key = _signature(x, c)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, c)
        graph, sx, sc, out = self.graphs[key]
        sx.copy_(x)
        if sc is not None:
            sc.copy_(c)
        graph.replay()
        self.replays += 1
        return out.clone()

    def _capture(self, x: Tensor, c: Tensor | None):
        sx = x.detach().clone()
        sc = c.detach().clone() if c is not None else None
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_CALLS):
                self.fn(sx, sc)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self.fn(sx, sc)
        return graph, sx, sc, out


def _needs_autograd(x: Tensor, c: Tensor | None) -> bool:
    """A call whose result must carry a graph (an input wants gradients: an energy's forward under its input
    gradient) is not replayable; parameters are frozen for the block."""
    return torch.is_grad_enabled() and (x.requires_grad or (isinstance(c, Tensor) and c.requires_grad))


def graphable_modules(model: nn.Module) -> tuple[list[nn.Module], list[EnergyModel]]:
    """The backbone networks (built by `BackboneFactory`, tagged ``_scorebench_backbone``) and the energy models
    inside `model`: the modules whose evaluations a sampler step repeats."""
    nets = [m for m in model.modules() if getattr(m, "_scorebench_backbone", False)]
    energies = [m for m in model.modules() if isinstance(m, EnergyModel)]
    return nets, energies


@contextmanager
def cuda_graph_sampling(model: nn.Module, enabled: bool, device: torch.device) -> Iterator[dict[str, Any]]:
    """Within the block, fixed-shape evaluations of `model`'s backbone networks and energy scores replay CUDA graphs
    (see the module docstring). Yields the record entry {requested, used, note, graphs, replays} (graphs and replays
    filled in on exit). A no-op with a note off CUDA or when `model` has nothing to capture."""
    entry = option_entry(enabled, False)
    if not enabled:
        yield entry
        return
    if device.type != "cuda":
        entry["note"] = f"CUDA graphs need a CUDA device; sampled eagerly on {device.type}"
        yield entry
        return
    nets, energies = graphable_modules(model)
    if not nets and not energies:
        entry["note"] = "no backbone network or energy model to capture; sampled eagerly"
        yield entry
        return
    pool = torch.cuda.graph_pool_handle()
    frozen = [p for p in model.parameters() if p.requires_grad]  # sampling needs no parameter gradients
    for p in frozen:
        p.requires_grad_(False)
    patched: list[tuple[nn.Module, str]] = []
    wrappers: list[_Graphed] = []

    def graphed_forward(eager: Callable) -> Callable:
        g = _Graphed(lambda x, c: eager(x, c), pool)
        wrappers.append(g)

        def forward(x, c=None):
            if not isinstance(x, Tensor) or x.device.type != "cuda" or _needs_autograd(x, c):
                return eager(x, c)
            return g(x, c)
        return forward

    def graphed_score(eager: Callable) -> Callable:
        g = _Graphed(lambda x, c: eager(x, c, create_graph=False), pool)
        wrappers.append(g)

        def score(x, c=None, create_graph=False):
            if create_graph or x.device.type != "cuda":
                return eager(x, c, create_graph=create_graph)
            return g(x, c)
        return score

    try:
        for m in energies:
            m.score = graphed_score(m.score)
            patched.append((m, "score"))
        for m in nets:
            m.forward = graphed_forward(m.forward)
            patched.append((m, "forward"))
        entry["used"] = True
        entry["note"] = (f"network evaluations captured: {len(nets)} backbone network(s), {len(energies)} energy "
                         "score(s); noise drawn eagerly")
        yield entry
    finally:
        for m, name in patched:
            del m.__dict__[name]
        for p in frozen:
            p.requires_grad_(True)
        entry["graphs"] = sum(len(w.graphs) for w in wrappers)
        entry["replays"] = sum(w.replays for w in wrappers)
        if entry["used"] and entry["replays"] == 0:
            entry["used"] = False
            entry["note"] = "nothing was replayed: every evaluation needed autograd or ran off the GPU"
