"""The conformance kit: a correct method passes; each kind of broken method fails the check meant for it, with a
message naming the fault; the stationarity test passes exact (oracle) chains on the Gaussian and fails annealed,
drifting and wrongly scaled ones."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from harness.method import Chain, Method, MethodConfig, SampleResult, rand, randn
from harness.testing import GAUSS_MEAN, GAUSS_STD, GaussianData, check_chain, check_method
from harness.toy import GaussianMixture

TARGET = GaussianMixture(torch.tensor([GAUSS_MEAN]), GAUSS_STD)
MU = torch.tensor(GAUSS_MEAN)


# oracle chains on the kit's Gaussian ---------------------------------------------------------------------------

class Langevin(Chain):
    """x ← x + (ε/2) ∇log p(x − v k) + sqrt(ε T_k) ξ at step k: Langevin at temperature T_k for a target whose
    centre moves by v per step; optional Metropolis correction (MALA) against log p (for T = 1, v = 0)."""

    stationary = True

    def __init__(self, target, eps=0.05, mala=False, temperature=lambda k: 1.0, velocity=0.0):
        self.target, self.eps, self.mala, self.temperature, self.v = target, eps, mala, temperature, velocity

    def init(self, n, g):
        return {"x": 8 * rand((n, 2), g) - 4, "k": 0}

    def step(self, s, g):
        x, k = s["x"], s["k"]
        mean = x + 0.5 * self.eps * self.target.score(x - self.v * k)
        y = mean + math.sqrt(self.eps * self.temperature(k)) * randn(x.shape, g)
        if self.mala:  # log q(x | y) − log q(y | x) with the Gaussian proposal of variance ε
            back = y + 0.5 * self.eps * self.target.score(y)
            log_a = (self.target.log_prob(y) - self.target.log_prob(x)
                     - ((x - back) ** 2).sum(1) / (2 * self.eps) + ((y - mean) ** 2).sum(1) / (2 * self.eps))
            accept = torch.log(rand((x.shape[0],), g)) < log_a
            y = torch.where(accept[:, None], y, x)
        return {"x": y, "k": k + 1}

    def readout(self, s):
        return s["x"]


def test_oracle_mala_chain_passes_and_matches_the_target_moments():
    res = check_chain(Langevin(TARGET, eps=0.1, mala=True), MU, GAUSS_STD)
    assert res.ok_invariant and res.ok_target, res.messages
    mean, std = torch.tensor(res.means[-1]), torch.tensor(res.stds[-1])
    # 1024 chains: the standard error of a mean is 0.7/32 ≈ 0.022, of a std ≈ 0.016; 4 SE bounds
    assert torch.allclose(mean, MU, atol=0.09) and torch.allclose(std, torch.full((2,), GAUSS_STD), atol=0.065)


def test_unadjusted_oracle_langevin_passes():
    res = check_chain(Langevin(TARGET, eps=0.02), MU, GAUSS_STD)
    assert res.ok_invariant and res.ok_target, res.messages


def test_annealed_chain_marked_stationary_fails():
    # temperature falls from 1 to 0 over 3000 steps: the law keeps contracting, then collapses to the mode
    annealed = Langevin(TARGET, eps=0.05, temperature=lambda k: max(0.0, 1 - k / 3000))
    res = check_chain(annealed, MU, GAUSS_STD)
    assert not (res.ok_invariant and res.ok_target)
    assert any("std" in m for m in res.messages), res.messages


def test_drifting_chain_fails_invariance():
    res = check_chain(Langevin(TARGET, eps=0.05, velocity=0.0005), MU, GAUSS_STD)  # the law follows the centre
    assert not res.ok_invariant and any("mean" in m for m in res.messages), res.messages


def test_wrongly_scaled_oracle_is_stationary_but_fails_anchoring():
    wide = GaussianMixture(torch.tensor([GAUSS_MEAN]), 3 * GAUSS_STD)  # stationary for N(μ, 9 s²I)
    res = check_chain(Langevin(wide, eps=0.2, mala=True), MU, GAUSS_STD)
    assert res.ok_invariant and not res.ok_target, res.messages
    assert any("readout std" in m for m in res.messages)


# a correct minimal method and broken variants -----------------------------------------------------------------

@dataclass
class GoodConfig(MethodConfig):
    sigma: float = 0.3
    steps: int = 200
    step_size: float = 0.01


class GoodChain(Chain):
    stationary = True

    def __init__(self, method, model):
        self.method, self.model = method, model

    def init(self, n, g):
        return 2 * randn((n, *self.method.spec.shape), g)

    @torch.no_grad()
    def step(self, x, g):
        eps = self.method.config.step_size
        return x + 0.5 * eps * self.method.score(self.model, x) + math.sqrt(eps) * randn(x.shape, g)

    @torch.no_grad()
    def readout(self, x):
        return x + self.method.config.sigma**2 * self.method.score(self.model, x)


class Good(Method):
    """Single-noise DSM with a Langevin chain and a Tweedie read-out (correct)."""

    name = "good"
    Config = GoodConfig

    def build_model(self, backbone):
        return backbone(conditional=False)

    def score(self, model, x):
        return model(x, None) / self.config.sigma

    def loss(self, model, batch, g):
        eps = randn(batch.shape, g)
        return (model(batch + self.config.sigma * eps, None) + eps).flatten(1).pow(2).sum(1)

    def chain(self, model):
        return GoodChain(self, model)

    @torch.no_grad()
    def sample(self, model, n, g):
        c = self.chain(model)
        x = c.init(n, g)
        for _ in range(self.config.steps):
            x = c.step(x, g)
        return SampleResult(c.readout(x), self.config.steps + 1)

    def score_fn(self, model):
        return (lambda x: self.score(model, x)), self.config.sigma


def failed(report):
    return {r.name: r.message for r in report.failures}


def test_correct_method_passes_every_check_on_vectors_and_images():
    rep = check_method(Good, config={"steps": 30})
    assert rep.ok, rep.summary()
    names = {r.name for r in rep.results if r.status == "pass"}
    assert {"vector: stationary chain leaves the target invariant", "vector: score_fn capability",
            "image: sampler output shape", "image: chain contract"} <= names
    assert rep.info["vector: score relative squared error"] < 0.25


def test_failures_raise_assertion_error_listing_them():
    class ScalarLoss(Good):
        name = "scalar_loss"

        def loss(self, model, batch, g):
            return super().loss(model, batch, g).mean()

    with pytest.raises(AssertionError, match=r"FAIL  vector: loss per example: loss must have shape \[B\] = \[8\]"):
        check_method(ScalarLoss, kinds=("vector",), train_steps=0)


class NoChain(Good):
    """Broken variants below skip the chain so each test isolates one fault."""

    def chain(self, model):
        return None

    @torch.no_grad()
    def sample(self, model, n, g):
        return SampleResult(randn((n, 2), g), 1)

    def score_fn(self, model):
        return None


def _broken(name, **methods):
    return type(name, (NoChain,), {"name": name, **methods})


BROKEN = {
    "loss finite with finite gradients": (
        _broken("nan_loss", loss=lambda self, m, b, g: NoChain.loss(self, m, b, g) * float("nan")), "non-finite"),
    "loss deterministic under a seed": (
        _broken("global_rng_loss", loss=lambda self, m, b, g: NoChain.loss(self, m, b, g) + torch.rand(b.shape[0])),
        "global RNG"),
    "sampler output shape": (
        _broken("wrong_shape", sample=lambda self, m, n, g: SampleResult(randn((n, 3), g), 1)), "expected (64, 2)"),
    "NFE reported": (
        _broken("float_nfe", sample=lambda self, m, n, g: SampleResult(randn((n, 2), g), 1.0)), "must be an int"),
    "sampler deterministic under a seed": (
        _broken("global_rng_sampler", sample=lambda self, m, n, g: SampleResult(torch.randn(n, 2), 1)),
        "global RNG"),
    "sampling leaves parameters and their gradients alone": (
        _broken("grad_leak", sample=lambda self, m, n, g: (m(torch.zeros(1, 2), None).sum().backward(),
                                                             SampleResult(randn((n, 2), g), 1))[1]),
        "accumulated parameter gradients"),
    "samples finite and in range": (
        _broken("far_samples", sample=lambda self, m, n, g: SampleResult(1e4 + randn((n, 2), g), 1)),
        "divergence limit"),
}


@pytest.mark.parametrize("check", sorted(BROKEN))
def test_each_broken_method_fails_its_check(check):
    cls, fragment = BROKEN[check]
    rep = check_method(cls, kinds=("vector",), train_steps=20 if "range" in check else 0, raise_on_failure=False)
    fails = failed(rep)
    assert set(fails) == {f"vector: {check}"}, rep.summary()  # that check, and only that one
    assert fragment in fails[f"vector: {check}"]


def test_annealed_chain_marked_stationary_fails_the_kit():
    class AnnealedChain(GoodChain):
        def init(self, n, g):
            return {"x": super().init(n, g), "k": 0}

        def step(self, s, g):  # the noise is switched off after 600 steps: deterministic ascent to the mode
            eps = self.method.config.step_size
            noise = math.sqrt(eps) * randn(s["x"].shape, g) * (s["k"] < 600)
            with torch.no_grad():
                x = s["x"] + 0.5 * eps * self.method.score(self.model, s["x"]) + noise
            return {"x": x, "k": s["k"] + 1}

        def readout(self, s):
            return super().readout(s["x"])

    class Annealed(Good):
        name = "annealed"

        def chain(self, model):
            return AnnealedChain(self, model)

        def sample(self, model, n, g):
            return SampleResult(randn((n, 2), g), 1)

    rep = check_method(Annealed, kinds=("vector",), raise_on_failure=False, chain_options={"max_burn_in": 2000})
    assert set(failed(rep)) == {"vector: stationary chain leaves the target invariant"}, rep.summary()
    assert "readout std" in failed(rep)["vector: stationary chain leaves the target invariant"]


def test_score_fn_declaring_the_wrong_noise_level_fails():
    class WrongLevel(Good):
        name = "wrong_level"

        def score_fn(self, model):  # learned at σ = 0.3, declared at 2.0
            return (lambda x: self.score(model, x)), 2.0

    rep = check_method(WrongLevel, kinds=("vector",), raise_on_failure=False)
    assert set(failed(rep)) == {"vector: score_fn capability"}, rep.summary()
    assert "relative squared error" in failed(rep)["vector: score_fn capability"]


class WithOracle(Good):
    """Good, with the exact net σ ∇log p_σ in its model slot as its oracle."""

    name = "with_oracle"
    oracle_level = None  # None: the method's own σ (correct)

    def oracle(self, target):
        from harness.oracles import FixedScoreNet

        level = self.config.sigma if self.oracle_level is None else self.oracle_level
        return FixedScoreNet(target, level, self.config.sigma)


def test_the_kit_uses_the_oracle_instead_of_training_and_holds_it_to_float_tolerance():
    rep = check_method(WithOracle, kinds=("vector",))
    assert rep.ok, rep.summary()
    names = {r.name for r in rep.results if r.status == "pass"}
    assert {"vector: oracle capability", "vector: stationary chain leaves the target invariant"} <= names
    assert "vector: brief training stays finite" not in {r.name for r in rep.results}  # no training
    assert rep.info["vector: model"] == "oracle"
    assert rep.info["vector: score relative squared error"] < 1e-10
    plain = check_method(Good, kinds=("vector",), train_steps=0, raise_on_failure=False)
    assert "vector: oracle capability" not in {r.name for r in plain.results}  # the path without an oracle


def test_an_oracle_at_the_wrong_level_fails_the_score_check():
    class Off(WithOracle):  # exact, but for the data smoothed at 0.35 instead of σ = 0.3
        name = "off_oracle"
        oracle_level = 0.35

    rep = check_method(Off, kinds=("vector",), raise_on_failure=False)
    assert "vector: score_fn capability" in failed(rep), rep.summary()
    assert "relative squared error" in failed(rep)["vector: score_fn capability"]


def test_kit_data_is_the_documented_gaussian():
    x = GaussianData().split("train")[0]
    assert x.shape == (2048, 2)
    assert torch.allclose(x.mean(0), MU, atol=4 * GAUSS_STD / math.sqrt(2048))
    assert torch.allclose(x.std(0), torch.full((2,), GAUSS_STD), atol=0.05)


# the command line ----------------------------------------------------------------------------------------------

GOOD_PLUGIN = '''
import sys
sys.path.insert(0, {tests!r})
from test_testing_kit import Good

from harness.hookspecs import hookimpl


class Good2(Good):
    name = "good2"
    description = "a conforming test method"


@hookimpl
def register_methods(register):
    register(Good2)
'''


def test_check_plugin_command(tmp_path):
    from click.testing import CliRunner

    from harness.cli import cli

    folder = tmp_path / "plugs"
    folder.mkdir()
    (folder / "goodplug.py").write_text(GOOD_PLUGIN.format(tests=str(__import__("pathlib").Path(__file__).parent)))
    group = cli
    runner = CliRunner()
    r = runner.invoke(group, ["check-plugin", "goodplug", "--plugins-dir", str(folder), "--set", "steps=20",
                              "--kinds", "vector"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "conformance of method 'good2'" in r.output and "0 failed" in r.output
    r = runner.invoke(group, ["check-plugin", "goood2", "--plugins-dir", str(folder)])
    assert r.exit_code == 2 and "did you mean 'good2'" in r.output


# every built-in method (slow: about 5-20 s each on 2 CPU cores) -------------------------------------------------

KNOWN_FAILURES: dict[str, str] = {}  # method -> reason, run as strict xfail


def _builtin_methods():
    from harness.plugins import BUILTIN_PLUGINS, PluginHost

    host = PluginHost(entry_points=False, builtins=BUILTIN_PLUGINS)
    return [pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_FAILURES[n], strict=True))
            if n in KNOWN_FAILURES else n for n in host.registries["methods"].names()]


@pytest.mark.slow
@pytest.mark.parametrize("name", _builtin_methods())
def test_builtin_method_conforms(name):
    from harness.plugins import get_plugin_host

    rep = check_method(get_plugin_host().registries["methods"].get(name))
    assert rep.info["vector: model"] == "oracle"  # every built-in has one: the kit checks it, not a brief training
    assert rep.info.get("vector: score relative squared error", 0.0) < 1e-6
