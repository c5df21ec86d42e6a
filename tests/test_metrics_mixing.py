"""Mixing diagnostics against known answers: AR(1) processes have τ = (1 + ρ)/(1 − ρ), ESS ≈ N/τ and a sign-change
rate arccos(ρ)/π; emcee's `integrated_time` is the reference implementation of Sokal's window."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from harness.method import Chain, randn
from harness.metrics import mixing as M


def ar1(rho: float, chains: int, steps: int, seed: int) -> np.ndarray:
    """Stationary AR(1): x_t = ρ x_{t−1} + sqrt(1 − ρ²) ε_t, started from N(0, 1) (exact stationary start)."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((chains, steps))
    x0 = rng.standard_normal(chains)
    x, _ = lfilter([math.sqrt(1 - rho**2)], [1, -rho], eps, axis=1, zi=(rho * x0)[:, None])
    return x


@pytest.mark.parametrize("rho, chains, steps", [(0.5, 1, 400_000), (0.9, 32, 100_000)])
def test_ar1_tau_within_5_percent(rho, chains, steps):
    x = ar1(rho, chains, steps, seed=1)
    tau = M.integrated_autocorr_time(x[0] if chains == 1 else x)
    exact = (1 + rho) / (1 - rho)
    assert abs(tau / exact - 1) < 0.05, (tau, exact)


@pytest.mark.parametrize("rho, chains", [(0.3, 1), (0.7, 4), (0.95, 8)])
def test_matches_emcee_integrated_time(rho, chains):
    emcee = pytest.importorskip("emcee", reason="emcee is a test-only dependency (pip install emcee)")
    x = ar1(rho, chains, 20_000, seed=2)
    ours = M.integrated_autocorr_time(x)
    ref = emcee.autocorr.integrated_time(x.T[:, :, None], c=5, quiet=True)[0]  # emcee: [steps, walkers, dims]
    assert ours == pytest.approx(ref, rel=1e-10)
    if chains == 1:
        assert M.integrated_autocorr_time(x[0]) == pytest.approx(ref, rel=1e-10)


def test_autocorrelation_is_linear_not_circular():
    x = np.sin(np.arange(64) * 0.3) + np.random.default_rng(0).standard_normal(64)
    x = x - x.mean()
    direct = np.array([np.dot(x[: 64 - t], x[t:]) for t in range(64)]) / np.dot(x, x)
    np.testing.assert_allclose(M.autocorrelation_1d(x), direct, atol=1e-12)


def test_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\[chains, steps\]"):
        M.integrated_autocorr_time(np.zeros((2, 3, 4)))


def test_label_changes_per_1k():
    labels = np.array([[0, 0, 1, 1, 0], [2, 2, 2, 2, 2]])  # 2 changes in 2 chains × 4 transitions
    assert M.label_changes_per_1k(labels) == pytest.approx(1000 * 2 / 8)
    assert M.label_changes_per_1k(labels, every=5) == pytest.approx(1000 * 2 / 40)  # labels 5 steps apart


def test_autocorr_time_stderr_follows_madras_sokal_on_ar1():
    """The spread of τ̂ over independent AR(1) chains agrees with var τ̂ ≈ 2(2M + 1)τ²/N."""
    rho, n = 0.8, 20_000
    est = [M.autocorr_time_and_window(ar1(rho, 1, n, seed=s)) for s in range(40)]
    taus = np.array([t for t, _ in est])
    predicted = np.mean([M.autocorr_time_stderr(t, m, n) for t, m in est])
    assert np.std(taus, ddof=1) == pytest.approx(predicted, rel=0.3)


class AR1Chain(Chain):
    """A 2-D AR(1) chain: stationary N(0, I), τ = (1 + ρ)/(1 − ρ) per coordinate; optional offset start."""

    stationary = True
    nfe_per_step = 3

    def __init__(self, rho: float, start: float | None = None):
        self.rho, self.start = rho, start

    def init(self, n, g):
        if self.start is None:
            return randn((n, 2), g)
        return torch.linspace(-self.start, self.start, n)[:, None].repeat(1, 2)

    def step(self, x, g):
        return self.rho * x + math.sqrt(1 - self.rho**2) * randn(x.shape, g)

    def readout(self, x):
        return x


def test_run_chain_diagnostics_on_ar1_chain():
    rho, C, K = 0.8, 8, 5000
    stats = M.coordinate_statistics(2)
    diag = M.run_chain_diagnostics(AR1Chain(rho), C, 50, K, stats, labeler=lambda x: (x[:, 0] > 0).long(),
                                   generator=torch.Generator().manual_seed(0))
    tau = (1 + rho) / (1 - rho)
    assert diag.names == ["x0", "x1"]
    for t in diag.tau:
        assert t == pytest.approx(tau, rel=0.1)
    for e in diag.ess_bulk:  # ESS ≈ C·K/τ
        assert e == pytest.approx(C * K / tau, rel=0.2)
    assert max(diag.rhat) < 1.01
    # sign changes of a stationary Gaussian AR(1): P(sign x_t ≠ sign x_{t+1}) = arccos(ρ)/π
    assert diag.mode_hops_per_1k == pytest.approx(1000 * math.acos(rho) / math.pi, rel=0.05)
    s = diag.summary()
    assert diag.nfe == C * K * 3
    assert s["ess_bulk_per_1k_nfe"] == pytest.approx(1000 * s["ess_bulk"] / (C * K * 3))
    assert s["ess_bulk_per_second"] > 0 and s["reliable"] and not s["tau_lower_bound"]
    assert max(diag.nested_rhat) < 1.01 and diag.superchains == 4  # 8 chains: 4 superchains of 2


def test_rhat_flags_chains_that_do_not_mix():
    """Chains started far apart with ρ ≈ 1 stay apart: split-R̂ ≫ 1 and ESS ≪ number of draws."""
    diag = M.run_chain_diagnostics(AR1Chain(0.9999, start=5.0), 4, 0, 400, M.coordinate_statistics(2),
                                   generator=torch.Generator().manual_seed(0))
    assert min(diag.rhat) > 1.5
    assert max(diag.ess_bulk) < 0.05 * 4 * 400
    assert not diag.summary()["reliable"] and diag.summary()["tau_lower_bound"]


def test_projection_statistics_fixed_and_unit():
    a, b = M.projection_statistics(5, 3, seed=0), M.projection_statistics(5, 3, seed=0)
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a(x), b(x))
    eye = torch.eye(5)
    u = a(eye).T  # rows: the directions
    torch.testing.assert_close(u.norm(dim=1), torch.ones(3, dtype=torch.float64))


def test_tau_from_a_chain_shorter_than_50_tau_is_a_lower_bound():
    """emcee's rule: with ρ = 0.99 (τ = 199) 2,000 steps are < 50 τ; with ρ = 0.5 (τ = 3) they are not."""
    for rho, bound in ((0.99, True), (0.5, False)):
        diag = M.run_chain_diagnostics(AR1Chain(rho), 4, 0, 2000, M.coordinate_statistics(2),
                                       generator=torch.Generator().manual_seed(3))
        assert diag.summary()["tau_lower_bound"] is bound


# nested R̂ (Margossian et al. 2024) ---------------------------------------------------------------------------

def test_superchains_are_equal_groups_of_consecutive_chains():
    np.testing.assert_array_equal(M.superchain_ids(8, 4), [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(M.superchain_ids(6, 4), [0, 0, 1, 1, 2, 2])  # 3 superchains: 4 does not divide 6
    np.testing.assert_array_equal(M.superchain_ids(4, 2), [0, 0, 1, 1])
    assert M.superchain_ids(5, 4) is None and M.superchain_ids(1, 4) is None


def test_nested_rhat_is_one_on_iid_draws_of_many_short_chains():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 50))  # 64 chains of 50 draws; 4 superchains of 16
    assert M.nested_rhat(x, 4) == pytest.approx(1.0, abs=0.01)


def test_nested_rhat_flags_superchains_stuck_in_different_modes():
    """4 superchains of 4 short chains each, every superchain stuck in its own mode (±3): R̂ν ≫ 1. The same chains
    arranged so that each superchain holds both modes (alternating) leave the superchain means equal: the nested
    statistic compares superchains, not chains, and stays near 1 while plain R̂ flags the chains."""
    rng = np.random.default_rng(1)
    modes = np.array([3.0, 3.0, 3.0, 3.0, -3.0, -3.0, -3.0, -3.0] * 2)
    stuck = np.sort(modes)[::-1][:, None] + rng.standard_normal((16, 40))  # superchains 0, 1: +3; 2, 3: −3
    assert M.nested_rhat(stuck, 4) > 1.5  # rank-normalised: bounded, and far above the ~1.01 threshold
    mixed = np.tile([3.0, -3.0], 8)[:, None] + rng.standard_normal((16, 40))  # each superchain: 2 at +3, 2 at −3
    assert M.nested_rhat(mixed, 4) < 1.05
    assert M.ess_rhat(mixed)["rhat"] > 1.5


# honest cost: trace diagnosed, readouts only where the protocol pays them -----------------------------------------

class PaidReadoutChain(AR1Chain):
    """AR(1) state x with a paid readout (counts its calls) and a free trace; readout every `every` steps."""

    nfe_per_step, readout_nfe, grad_evals_per_step = 3, 2, 1

    def __init__(self, rho: float, every: int | None, clock: dict | None = None):
        super().__init__(rho)
        self.readout_every, self.clock, self.reads = every, clock, 0

    def step(self, x, g):
        if self.clock is not None:
            self.clock["t"] += 1.0
        return super().step(x, g)

    def trace(self, x):
        return x

    def readout(self, x):
        self.reads += 1
        if self.clock is not None:
            self.clock["t"] += 10.0
        return torch.zeros_like(x) + 1e3  # a deterministic function of x: statistics of it would show no mixing


def test_mixing_is_diagnosed_on_the_trace_and_readouts_are_charged_apart():
    rho, C, K, k = 0.8, 8, 5000, 5
    chain = PaidReadoutChain(rho, k)
    labels = []

    def labeler(x):
        labels.append(x.shape[0])
        return (x[:, 0] > 0).long()

    diag = M.run_chain_diagnostics(chain, C, 20, K, M.coordinate_statistics(2), labeler,
                                   generator=torch.Generator().manual_seed(0))
    tau = (1 + rho) / (1 - rho)
    assert diag.tau == pytest.approx([tau, tau], rel=0.1)  # the trace's AR(1), not the constant readout
    assert chain.reads == diag.n_readouts == K // k
    assert diag.nfe == C * K * 3 and diag.readout_nfe_total == C * (K // k) * 2
    assert diag.grad_evals_per_step == 1 and diag.readout_every == k
    assert diag.summary()["ess_bulk_per_1k_nfe"] == pytest.approx(1000 * min(diag.ess_bulk) / (C * K * 3))
    # labels of the paid readouts (constant here: no hops), k steps apart; never one readout per step
    assert diag.label_source == "readouts" and diag.label_every == k and diag.mode_hops_per_1k == 0.0
    assert set(labels) == {C}


def test_labels_of_readouts_k_steps_apart_hop_at_the_lag_k_rate():
    """Readouts = the state: sign changes between draws k steps apart of a stationary Gaussian AR(1) occur with
    probability arccos(ρᵏ)/π, i.e. 1000·arccos(ρᵏ)/(πk) per 1,000 steps."""
    rho, k = 0.8, 4
    chain = PaidReadoutChain(rho, k)
    chain.readout = lambda x: x
    diag = M.run_chain_diagnostics(chain, 8, 20, 20_000, M.coordinate_statistics(2),
                                   lambda x: (x[:, 0] > 0).long(), generator=torch.Generator().manual_seed(1))
    assert diag.recording.labels.shape == (8, 5000)
    assert diag.mode_hops_per_1k == pytest.approx(1000 * math.acos(rho**k) / (math.pi * k), rel=0.05)


def test_a_chain_that_reads_out_at_the_end_pays_one_readout_and_labels_its_trace():
    chain = PaidReadoutChain(0.5, None)
    diag = M.run_chain_diagnostics(chain, 4, 5, 300, M.coordinate_statistics(2), lambda x: (x[:, 0] > 0).long(),
                                   generator=torch.Generator().manual_seed(2))
    assert chain.reads == diag.n_readouts == 1 and diag.readout_nfe_total == 4 * 2
    assert diag.label_source == "trace" and diag.recording.labels.shape == (4, 300)
    assert diag.recording.readouts.shape == (1, 2) and diag.recording.readout_steps == [300]


def test_chain_steps_and_readouts_are_timed_apart(monkeypatch):
    from harness.metrics import throughput as TP

    clock = {"t": 0.0}
    monkeypatch.setattr(TP.time, "perf_counter", lambda: clock["t"])

    def stats(x):  # statistics are not timed
        clock["t"] += 1000.0
        return x.to(torch.float64)

    chain = PaidReadoutChain(0.5, 10, clock)
    diag = M.run_chain_diagnostics(chain, 2, 7, 100, stats, generator=torch.Generator().manual_seed(0))
    assert diag.seconds == 100.0  # 1 s per recorded step; burn-in excluded
    assert diag.readout_seconds == 10 * 10.0  # 10 readouts of 10 s


def test_a_paid_readout_without_a_trace_is_refused():
    class NoTrace:
        stationary, nfe_per_step, readout_nfe = True, 1, 1

        def init(self, n, g):
            return torch.zeros(n, 2)

        def step(self, x, g):
            return x

        def readout(self, x):
            return x

    with pytest.raises(NotImplementedError, match="must define trace"):
        M.run_chain_diagnostics(NoTrace(), 2, 0, 10, M.coordinate_statistics(2),
                                generator=torch.Generator().manual_seed(0))


# chain.npz: what the report's mixing plots read ------------------------------------------------------------------

def test_chain_npz_schema(tmp_path):
    rho, C, K, k = 0.7, 4, 5000, 7
    chain = PaidReadoutChain(rho, k)
    chain.readout = lambda x: 2 * x
    diag = M.run_chain_diagnostics(chain, C, 10, K, M.coordinate_statistics(2), lambda x: (x[:, 0] > 0).long(),
                                   generator=torch.Generator().manual_seed(4))
    path = tmp_path / "run" / "chain.npz"
    M.save_chain_npz(path, diag)
    assert [p.name for p in path.parent.iterdir()] == ["chain.npz"]  # written atomically, no temporary left
    with np.load(path, allow_pickle=False) as z:
        f = {key: z[key] for key in z.files}
    assert set(f) == {"trace", "trace_every", "names", "acf", "labels", "label_every", "readouts", "readout_every",
                      "nfe_per_step", "readout_nfe"}
    every = math.ceil(K / 2000)
    assert int(f["trace_every"]) == every == 3
    assert f["trace"].dtype == np.float32 and f["trace"].shape == (C, math.ceil(K / every), 2)
    np.testing.assert_allclose(f["trace"], diag.recording.trace[:, ::every].astype(np.float32))
    assert list(f["names"]) == ["x0", "x1"]
    assert f["acf"].dtype == np.float64 and f["acf"].shape == (2, 201)
    np.testing.assert_allclose(f["acf"][:, 0], 1.0)
    np.testing.assert_allclose(f["acf"][:, 1], rho, atol=0.03)  # unthinned: lag 1 of the AR(1), not lag 3
    np.testing.assert_allclose(f["acf"][0], M.mean_autocorrelation(diag.recording.trace[:, :, 0], 200))
    R = K // k
    assert f["labels"].dtype == np.int64 and f["labels"].shape == (C, R) and int(f["label_every"]) == k
    assert f["readouts"].dtype == np.float32 and f["readouts"].shape == (64, 2)  # 64 evenly spaced of R = 714
    steps = np.array(diag.recording.readout_steps)
    assert steps[0] == k and steps[-1] == R * k and np.all(np.diff(steps) % k == 0)
    np.testing.assert_allclose(np.diff(steps), (R - 1) * k / 63, atol=k)  # evenly spaced
    assert (int(f["readout_every"]), int(f["nfe_per_step"]), int(f["readout_nfe"])) == (k, 3, 2)


def test_chain_npz_without_labeler_or_in_chain_readouts():
    diag = M.run_chain_diagnostics(AR1Chain(0.5), 2, 0, 50, M.coordinate_statistics(2),
                                   generator=torch.Generator().manual_seed(0))
    f = M.chain_arrays(diag)
    assert "labels" not in f and int(f["readout_every"]) == 0 and f["acf"].shape == (2, 50)
    assert f["readouts"].shape == (1, 2)  # the one readout at the end


def test_chain_npz_is_readable_by_the_report(tmp_path):
    report = pytest.importorskip("harness.report")
    if not hasattr(report, "load_chain"):
        pytest.skip("the report has no load_chain")
    diag = M.run_chain_diagnostics(PaidReadoutChain(0.5, 5), 2, 0, 100, M.coordinate_statistics(2),
                                   lambda x: (x[:, 0] > 0).long(), generator=torch.Generator().manual_seed(0))
    M.save_chain_npz(tmp_path / "chain.npz", diag)
    run = type("Run", (), {"dir": tmp_path, "record": {"artifacts": {"chain.npz": "x"}}, "label": "r"})()
    data = report.load_chain(run)
    assert not isinstance(data, str), data
    assert data.trace.shape == (2, 100, 2) and data.readout_every == 5 and data.labels.shape == (2, 20)
