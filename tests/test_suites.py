"""The standard suites, configs/mnist.toml and configs/cifar10.toml (issue 11): the real files, unchanged, resolve and
validate at full scale, and run end to end on CPU at a tiny scale through `--set`, every record complete.

Both need the shared offline data (MNIST, Fashion-MNIST, CIFAR-10; conftest's `data_root`) and skip without it.
The first use of each data set in a session computes its exact diameter (VE's σ_max rule, cached on disk for the
session): about 45 s for the three, paid once by whichever test comes first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUITES = {"mnist": ["mnist", "fashion_mnist"], "cifar10": ["cifar10"]}
METHODS = ["dsm", "mdsm", "sde", "ssm", "walk_jump"]
EXECUTION_KEYS = {"precision", "compile", "channels_last", "tf32", "cuda_graphs"}

# parameters of each method's model at full scale, as the configs' comments state them: noise-conditional score
# networks (sde, ssm) carry the noise-level embedding, the others (and mdsm's "norm" energy head) do not
PARAMS = {"mnist": {"sde": 1_477_761, "ssm": 1_477_761, "dsm": 1_325_025, "walk_jump": 1_325_025, "mdsm": 1_325_025},
          "cifar10": {"sde": 8_226_947, "ssm": 8_226_947, "dsm": 7_453_891, "walk_jump": 7_453_891,
                      "mdsm": 7_453_891}}

# Fields the suites set on purpose away from the method's Config defaults; every other field the suites name
# restates the method's own image default (README, "Rescaling the papers' defaults"), which the validation test
# checks by resolving each method both ways.
DEPARTURES = {"walk_jump": {"protocol", "chains", "burn_in"}}

# The tiny scale: a few steps, four samples, an 8-channel U-Net, every sampler a few steps long, every metric on a
# few images, short mixing chains. Training stops by steps (seconds = 0: no time limit).
TINY = [
    "train.steps=2", "train.seconds=0", "train.batch_size=8", "train.warmup_steps=1", "train.checkpoint_every=0",
    "eval.n_samples=4", "eval.sample_batch=4",
    # untrained networks: sde's 2-step sampler leaves samples at its prior's scale σ_max (~34-107 on these data),
    # beyond the default divergence check of 100 data ranges; nothing here measures quality
    "eval.divergence_factor=1e6",
    "backbones.unet.ch=8", "backbones.unet.ch_mult=[1,2]", "backbones.unet.num_res_blocks=1",
    "methods.dsm.steps=2", "methods.sde.steps=2", "methods.ssm.steps_per_level=1",
    "methods.mdsm.hot_steps=2", "methods.mdsm.cool_steps=2", "methods.mdsm.final_steps=2",
    "methods.walk_jump.chains=2", "methods.walk_jump.burn_in=2", "methods.walk_jump.jump_every=1",
    "metrics.fid_inception.n=4", "metrics.fid_cnn.n=4", "metrics.nfe_curve.n=4", "metrics.nll.n=4",
    "metrics.mixing.n_chains=4", "metrics.mixing.superchains=2", "metrics.mixing.burn_in=2", "metrics.mixing.steps=20",
]
# Metrics the tiny run skips, to stay within a few minutes on a 2-core CI machine:
# - MNIST suite: Inception (each call costs ~6 s on CPU whatever n, in its 2048-d Fréchet bootstraps; the CIFAR-10
#   tiny run covers it), and every metric on fashion_mnist (the domain classifier would cost ~50 s more to train;
#   its settings are the same top-level tables mnist runs). mnist runs "auto": fid_cnn, class_kl, nfe_curve,
#   mixing, nll.
# - CIFAR-10 suite: only Inception FID. fid_cnn, class_kl, nfe_curve and mixing on images all need the CIFAR-10
#   domain classifier, trained on first use: minutes on CPU.
TINY_SKIPS = {
    "mnist": ["metrics.fid_inception.enabled=false", "datasets.fashion_mnist.eval.metrics=[]"],
    "cifar10": ["eval.metrics=[fid_inception]"],
}
# what the tiny run must record per data set: (metric key, methods that have it)
STATIONARY = {"dsm", "mdsm", "ssm", "walk_jump"}  # methods with a stationary chain (mixing applies)
EXPECTED = {
    "mnist": [("fid_cnn", set(METHODS)), ("class_kl", set(METHODS)), ("fid_cnn_at_0.1x_sampler", set(METHODS)),
              ("iat", STATIONARY), ("nll", {"sde"})],
    "fashion_mnist": [],
    "cifar10": [("fid_inception", set(METHODS))],
}


@pytest.fixture
def suite_root(request, data_root):
    """The shared data root, with CIFAR-10 too for the cifar10 suite (else skip)."""
    if request.node.callspec.params["name"] == "cifar10" and not any(
            (data_root / d).is_dir() for d in ("cifar-10-batches-bin", "cifar-10-batches-py")):
        pytest.skip(f"no CIFAR-10 under {data_root}")
    return data_root


def _host_and_suite(name: str, root: Path, sets: list[str] = ()):
    from harness.config import load_suite
    from harness.plugins import get_plugin_host
    from harness.runner import find_config

    host = get_plugin_host()
    path = find_config(name)
    suite = load_suite(path, [*sets, f"suite.data_root={json.dumps(str(root))}"],
                       all_methods=host.registries["methods"].names())
    return host, path, suite


def test_suites_are_packaged_with_one_copy():
    """`scorebench run mnist` and `configs/mnist.toml` name one file, as for quick."""
    from harness.runner import find_config, packaged_configs

    for name in SUITES:
        link = REPO / "configs" / f"{name}.toml"
        assert link.is_symlink(), f"{link} should be a symlink to harness/configs/{name}.toml"
        assert name in packaged_configs()
        assert find_config(name).resolve() == link.resolve() == (REPO / "harness" / "configs" / f"{name}.toml")


def test_readme_smoke_command_is_the_tested_one():
    """README, "Standard suites": its tiny CPU command carries exactly this test's overrides."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Standard suites"):]
    section = section[:section.index("\n## ", 3)]
    command = section[section.index("scorebench run mnist --device cpu"):]
    command = command[:command.index("```")]
    quoted = [f"--set {item}" if not any(c in item for c in "[]") else f"--set '{item}'"
              for item in [*TINY, *TINY_SKIPS["mnist"]]]
    assert all(q in command for q in quoted), [q for q in quoted if q not in command]
    assert command.count("--set ") == len(quoted)
    assert all(f"--set '{item}'" in section for item in TINY_SKIPS["cifar10"])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SUITES))
def test_full_scale_suite_resolves_and_validates(name, suite_root):
    """The real config, no overrides: every job validates (names, options of every metric and method, data), runs
    all methods on the suite's data sets under one budget and one backbone, with 10,000 samples, Inception FID
    on 10,000 against the training split, and walk_jump on the papers' long-chain protocol."""
    import torch

    from harness.backbones import count_parameters
    from harness.runner import build_components, load_dataset, validate_suite

    host, _, suite = _host_and_suite(name, suite_root)
    validate_suite(host, suite)
    assert sorted(host.registries["methods"].names()) == METHODS  # "all" below is exactly these
    assert {(j.method, j.dataset) for j in suite.jobs} == {(m, d) for m in METHODS for d in SUITES[name]}
    assert len(suite.jobs) == len(METHODS) * len(SUITES[name])
    assert suite.suite.device == "auto"  # the GPU where there is one
    first = suite.jobs[0]
    for job in suite.jobs:
        assert job.train == first.train, "one budget for every method"
        assert job.train.steps > 0 and job.train.seconds > 0, "budget stated in both steps and seconds"
        assert job.backbone_options == first.backbone_options, "one shared backbone"
        assert job.eval.n_samples == 10_000 and job.eval.metrics == ["auto"]
        fid = job.metric_options["fid_inception"]
        assert fid["enabled"] is True and fid["n"] == 10_000 and fid["reference"] == "train"
        assert job.metric_options["fid_cnn"]["n"] == 10_000 and job.metric_options["fid_cnn"]["reference"] == "train"
        assert {"mixing", "nfe_curve"} <= set(job.metric_options)
        assert job.metric_options["nfe_curve"]["reference"] == "train"  # the same reference as fid_cnn
    wj = [j for j in suite.jobs if j.method == "walk_jump"]
    assert all(j.method_options["protocol"] == "long_chain" for j in wj)

    for job in suite.jobs:
        # the paper settings the config restates equal the method's own image defaults, derived from the data
        cls = host.registries["methods"].get(job.method)
        spec = load_dataset(host, job).spec
        named = cls(cls.make_config(job.method_options), spec).resolved_config()
        keep = {k: v for k, v in job.method_options.items() if k in DEPARTURES.get(job.method, set())}
        derived = cls(cls.make_config(keep), spec).resolved_config()
        assert named == derived, f"{job.method} on {job.dataset}: {set(named.items()) ^ set(derived.items())}"
        if job.dataset in PARAMS:  # the parameter counts the comments state (fashion_mnist: as mnist)
            comp = build_components(host, job, torch.device("cpu"))
            assert count_parameters(comp.model) == PARAMS[job.dataset][job.method], (job.method, job.dataset)


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/record.json"))]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SUITES))
def test_tiny_suite_runs_on_cpu(name, suite_root, tmp_path):
    """The real config at a tiny scale through --set, as CI runs it: every job ok, and every record holds the
    parameter count, NFE, FLOPs per training step and per sample, the limit that stopped training, the execution
    options, and the metrics its data set asked for, FIDs against the training split."""
    from harness.runner import run_config

    lines: list[str] = []
    code = run_config(name, sets=[*TINY, *TINY_SKIPS[name]], device="cpu", out=str(tmp_path), data_root=str(suite_root),
                      threads=1, quiet=True, log=lambda *a: lines.append(" ".join(map(str, a))))
    recs = _records(tmp_path)
    assert code == 0, "\n".join(lines) + "\n" + "\n".join(f"{r['run_id']}: {r['error']}" for r in recs)
    assert {(r["method"], r["dataset"]) for r in recs} == {(m, d) for m in METHODS for d in SUITES[name]}
    for r in recs:
        job = f"{r['method']} on {r['dataset']}"
        assert r["status"] == "ok", (job, r["error"])
        assert r["params"] > 0 and r["nfe"] > 0, job
        assert r["config"]["eval"]["n_samples"] == 4 and r["train"]["steps"] == 2, job
        t = r["timings"]
        assert t["sample_gflops_per_sample"] > 0, (job, t.get("flops_method"))
        assert t["train_gflops_per_step"] > 0, (job, t.get("train_flops_method"))
        assert r["train"]["stopped_by"] == "steps", job  # seconds = 0: no time limit in the tiny run
        assert EXECUTION_KEYS <= set(r["execution"]), (job, r["execution"])
        assert r["execution"]["precision"] == "fp32"
        assert r["metric_errors"] == {}, (job, r["metric_errors"])
        for key, methods in EXPECTED[r["dataset"]]:
            if r["method"] in methods:
                assert key in r["metrics"], (job, key, sorted(r["metrics"]))
        for key in ("fid_cnn", "fid_inception"):
            if key in r["metrics"]:
                assert r["metrics"][key]["protocol"]["reference"]["split"] == "train", (job, key)
        if r["method"] == "walk_jump":
            assert r["sampling"]["protocol"] == "long_chain", job
