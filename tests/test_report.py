"""The HTML report: built from real runs of the fake plugin (and hand-written failed/broken records), its pieces
against known answers (Pareto front, autocorrelation), and the page itself in headless Chromium: no console errors,
every image loaded, the tables present, a screenshot that is not blank."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import select
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from harness import report
from harness.records import write_record

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


# known answers ---------------------------------------------------------------------------------------------------

def test_pareto_front_by_hand():
    xs = [1.0, 2.0, 3.0, 4.0, 2.0, float("nan")]
    ys = [5.0, 3.0, 3.0, 1.0, 6.0, 0.0]  # lower is better
    assert report.pareto_front(xs, ys, higher_is_better=False) == [True, True, False, True, False, False]
    assert report.pareto_front(xs, ys, higher_is_better=True) == [True, False, False, False, True, False]
    assert report.pareto_front([1.0, 1.0], [2.0, 2.0], False) == [True, True]  # ties dominate nobody


def test_mean_acf_of_ar1_is_rho_to_the_lag():
    rng = np.random.default_rng(0)
    rho, n = 0.8, 20000
    x = np.zeros((4, n))
    noise = rng.standard_normal((4, n))
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + noise[:, t]
    acf = report.mean_acf(x, 10)
    assert acf[0] == pytest.approx(1.0)
    # 4 × 20000 draws: the standard error of ρ̂(k) is below 0.01 for these lags
    assert np.allclose(acf, rho ** np.arange(11), atol=0.03)


# a results folder from real runs ---------------------------------------------------------------------------------

REPORT_CONFIG = """
[suite]
methods = ["tiny"]
datasets = ["gauss2"]
seeds = [0, 1]
device = "cpu"

[train]
steps = 30
batch_size = 32
warmup_steps = 2

[eval]
n_samples = 128
metrics = ["mmd", "energy_distance", "nfe_curve", "mixing"]

[metrics.mixing]
n_chains = 2
burn_in = 10
steps = 100

[backbones.mlp]
width = 16
depth = 1
"""


@pytest.fixture
def results(host, tmp_path):
    import tomllib

    from harness.config import resolve_suite
    from harness.runner import run_suite

    raw = tomllib.loads(REPORT_CONFIG)
    for sets in ([], ["methods.tiny.sigma=0.3"]):
        suite = resolve_suite(raw, "report.toml", sets, None, host.registries["methods"].names())
        run_suite(host, suite, out=tmp_path / "results", progress=False, log=lambda *a: None)
    res = tmp_path / "results"
    some = json.loads(next(res.glob("runs/*/record.json")).read_text())
    failed = {**some, "run_id": "tiny-gauss2-s9-failed", "seed": 9, "status": "failed", "metrics": {},
              "error": {"type": "RuntimeError", "message": "boom"}, "artifacts": {}, "timings": {}}
    write_record(res / "runs" / failed["run_id"], failed)
    (res / "runs" / "truncated").mkdir()
    (res / "runs" / "truncated" / "record.json").write_text('{"schema_version": 1, "run')
    return res


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.tables, self.ids, self.text = [], 0, set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        self.tables += tag == "table"
        if "id" in a:
            self.ids.add(a["id"])

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text())
    p.text = " ".join(p.text)
    return p


def test_report_has_every_section_and_its_images(results):
    log = []
    index, problems = report.build_report(results, chain_steps=200, log=log.append)
    assert sum("re-running the chain" in m for m in log) == 2  # asked for: both variants have a stationary chain
    assert index == results / "report" / "index.html"
    assert any("runs/truncated/record.json" in p for p in problems)
    page = parse(index)
    assert {"leaderboards", "ds-gauss2", "environment"} <= page.ids
    for title in ("Samples", "Quality against training time, NFE and FLOPs", "Mixing of stationary chains",
                  "Throughput", "Environment 1"):
        assert title in page.text, title
    assert "tiny [method.sigma=0.3]" in page.text and "tiny [method.sigma=0.5]" in page.text  # two variants
    assert "1 failed" in page.text and "Skipped records" in page.text
    assert page.tables >= 2  # leaderboard + environment
    for src in page.imgs:  # every image is a file beside the page, none from the network
        assert not src.startswith(("http:", "https:", "/")) and (index.parent / src).is_file(), src
    names = {Path(s).name for s in page.imgs}
    assert {"gauss2_tradeoff_0.png", "gauss2_nfe_curves.png", "gauss2_throughput.png", "gauss2_acf_traces.png"} <= names
    assert sum(s.startswith("img/samples/") for s in page.imgs) == 2  # one per variant
    assert "http" not in index.read_text().replace("http-equiv", "")


def test_report_without_chain_data_says_so(results, tmp_path):
    for f in [*results.glob("runs/*/checkpoint.pt"), *results.glob("runs/*/chain.npz")]:
        f.unlink()
    log = []
    index, _ = report.build_report(results, tmp_path / "rep", chain_steps=200, log=log.append)
    text = parse(index).text
    assert "No autocorrelation or trace data" in text and "no chain.npz" in text and "no checkpoint" in text
    assert not any("re-running" in m for m in log)  # nothing to re-run from
    assert (tmp_path / "rep" / "img" / "plots" / "gauss2_mixing_summary.png").is_file()  # τ from the records
    index, _ = report.build_report(results, tmp_path / "rep", chain_steps=0, log=lambda *a: None)
    assert "Missing chain data" in parse(index).text
    assert not (tmp_path / "rep" / "img" / "plots" / "gauss2_acf_traces.png").exists()  # stale images removed


def test_report_of_an_empty_folder(tmp_path):
    index, problems = report.build_report(tmp_path / "nothing", log=lambda *a: None)
    assert problems == [] and "No run records found." in parse(index).text


def test_report_command(results):
    from harness.cli import cli

    r = CliRunner().invoke(cli, ["report", "--results", str(results), "--chain-steps", "50"],
                           catch_exceptions=False)
    assert r.exit_code == 0 and "wrote " in r.stdout and "truncated" in r.stderr
    assert (results / "report" / "index.html").is_file()
    assert "re-running the chain of tiny" in r.stderr
    r = CliRunner().invoke(cli, ["report", "--results", str(results)], catch_exceptions=False)
    assert r.exit_code == 0 and "re-running" not in r.stderr  # the default re-runs nothing
    assert (results / "report" / "img" / "plots" / "gauss2_acf_traces.png").is_file()  # from the runs' chain.npz


def test_report_help_states_the_chain_steps_default():
    from harness.cli import cli

    text = " ".join(CliRunner().invoke(cli, ["report", "--help"]).stdout.split())
    assert "[default: 0;" in text and "chain.npz" in text


# synthetic records: a run with a recorded chain.npz and no checkpoint, a chainless run, validity.json ------------

def _record(run_id, method, *, metrics, artifacts=None, timings=None, chain=None):
    rec = {"schema_version": 1, "run_id": run_id, "method": method, "dataset": "gauss2", "seed": 0, "status": "ok",
           "config": {"method": {}, "backbone": {}, "train": {}}, "budget": {"steps": 10, "seconds": 0.0},
           "metrics": metrics, "metric_errors": {}, "artifacts": artifacts or {}, "nfe": 100,
           "timings": {"train_seconds": 1.0, "nfe_per_sample": 100, **(timings or {})}}
    if chain is not None:
        rec["metrics"]["iat"]["details"]["chain"] = chain
    return rec


def _entry(value, *, stderr=None, lower_bound=False, higher_is_better=False, details=None):
    return {"value": value, "stderr": stderr, "lower_bound": lower_bound, "higher_is_better": higher_is_better,
            "floor": None, "protocol": {"n": 100}, "details": details or {}}


def _ar1(rng, rho, chains, steps):
    x = np.zeros((chains, steps))
    for t in range(1, steps):
        x[:, t] = rho * x[:, t - 1] + rng.standard_normal(chains)
    return x


@pytest.fixture
def synthetic(tmp_path):
    """A walk-jump-like energy run with chain.npz (long-chain readouts every 10 steps), τ a lower bound, and no
    checkpoint; an sde-like run with no chain; both with GFLOPs and standard errors recorded."""
    res = tmp_path / "results"
    rng = np.random.default_rng(0)
    trace = np.stack([_ar1(rng, 0.9, 3, 400), _ar1(rng, 0.5, 3, 400)], axis=2).astype(np.float32)  # [C, K', S]
    acf = np.stack([report.mean_acf(trace[:, :, j], 50) for j in range(2)])
    labels = (np.arange(40)[None, :] // 7 % 3 + np.zeros((3, 1), dtype=np.int64)).astype(np.int64)  # [C, R]
    readouts = rng.uniform(-1, 1, (20, 1, 8, 8)).astype(np.float32)
    chain = {"stationary": True, "nfe_per_step": 1, "grad_evals_per_step": 1, "readout_nfe": 1,
             "readout_every": 10}
    wj = _record("wj-gauss2-s0", "walk_jump", metrics={
        "mmd": _entry(0.0311, stderr=0.001),
        "iat": _entry(1228.0, lower_bound=True, details={"reliable": False}),
        "ess_per_1k_nfe": _entry(2.5, higher_is_better=True)}, artifacts={"chain.npz": "mixing chains"},
        timings={"sample_gflops_per_sample": 1.5}, chain=chain)
    sde = _record("sde-gauss2-s0", "sde", metrics={"mmd": _entry(0.0250, stderr=0.002)},
                  timings={"sample_gflops_per_sample": 0.4})
    for rec in (wj, sde):
        write_record(res / "runs" / rec["run_id"], rec)
    np.savez(res / "runs" / "wj-gauss2-s0" / "chain.npz", trace=trace, names=np.array(["x0", "x1"]), acf=acf,
             trace_every=np.int64(1), labels=labels, label_every=np.int64(10), readouts=readouts,
             readout_every=np.int64(10), nfe_per_step=np.int64(1), readout_nfe=np.int64(1))
    return res


def test_report_from_recorded_chain_without_checkpoint(synthetic, tmp_path):
    log = []
    index, problems = report.build_report(synthetic, chain_steps=0, log=log.append)
    assert problems == []
    page = parse(index)
    names = {Path(s).name for s in page.imgs}
    assert {"gauss2_acf_traces.png", "gauss2_mode_hopping.png", "gauss2_chain_strip.png",
            "gauss2_mixing_summary.png"} <= names, names
    for src in page.imgs:
        assert (index.parent / src).is_file(), src
    assert not any("re-running" in m for m in log)
    assert "recorded chain.npz" in page.text and "sde" in page.text.split("No stationary chain")[1]
    assert "Missing chain data" not in page.text
    # asked to re-run: the run with a chain has no checkpoint, the chainless one is never re-run
    log.clear()
    index, _ = report.build_report(synthetic, tmp_path / "rep", chain_steps=100, log=log.append)
    assert not any("re-running" in m for m in log), log
    assert "gauss2_acf_traces.png" in {Path(s).name for s in parse(index).imgs}  # the recorded chain instead


def test_recorded_chain_is_read_back_with_its_spacing(synthetic):
    run = report.Run(report.iter_records(synthetic)[0][1], "walk_jump")
    assert run.run_id == "wj-gauss2-s0"
    c = report.load_chain(run)
    assert c.trace.shape == (3, 400, 2) and c.labels.shape == (3, 40) and c.readouts.shape == (20, 1, 8, 8)
    assert (c.label_every, c.readout_every, c.names) == (10, 10, ["x0", "x1"])
    assert report.has_stationary_chain(run.record)


def test_chainless_and_unknown_runs_are_never_rerun(synthetic):
    sde = report.iter_records(synthetic)[0][0]
    assert sde["method"] == "sde" and not report.has_stationary_chain(sde)
    log = []
    assert report.choose_chain(None, report.Run(sde, "sde"), 500, log.append) is None and log == []


def test_costs_bounds_and_intervals(synthetic):
    from harness import leaderboard as lb

    records, _ = report.iter_records(synthetic)
    runs, values, _ = lb.load_runs(synthetic)
    metric, groups = report.frontier_groups("gauss2", records, runs, values, None)
    assert metric == "mmd" and len(groups) == 1
    pts = {p.label: p for p in groups[0][2]}
    assert pts["walk_jump"].gflops == 1.5 and pts["sde"].gflops == 0.4
    assert pts["walk_jump"].unit == "fwd+bwd" and pts["sde"].unit == "fwd"
    assert pts["sde"].yerr == pytest.approx(1.96 * 0.002, rel=1e-4) and pts["sde"].err_kind == "se"  # one seed
    # several seeds: the t interval over seeds (t_{0.975, 2} = 4.303), not the stderr
    mean, half, kind = report.quality_interval([1.0, 2.0, 3.0], [0.01, 0.01, 0.01])
    assert (mean, kind) == (2.0, "ci") and half == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)
    assert report.value_text(records[1]["metrics"]["iat"]) == "> 1228"
    assert report.value_text(records[1]["metrics"]["mmd"]) == "0.0311 ± 0.002"
    index, _ = report.build_report(synthetic, log=lambda *a: None)
    text = parse(index).text
    assert "mmd 0.0311 ± 0.002" in text and "no sampling FLOPs recorded" not in text


VALIDITY = {"schema": 1, "results": [
    {"dataset": "digits", "extractor": "cnn_multilayer", "extractor_version": 2, "n": 500, "floor": 0.2,
     "passed": True, "disturbances": {"gaussian_noise": {"levels": [0.0, 0.1, 0.2], "values": [0.2, 1.0, 3.0],
                                                         "monotone": True},
                                      "blur": {"levels": [0, 1, 2], "values": [0.2, 0.5, 0.9], "monotone": True}}},
    {"dataset": "digits", "extractor": "cnn_last", "extractor_version": 1, "n": 500, "floor": 0.2, "passed": False,
     "disturbances": {"salt_pepper": {"levels": [0.0, 0.1], "values": [0.2, 0.1], "monotone": False}}}]}


def test_validity_section_when_validity_json_exists(synthetic):
    index, _ = report.build_report(synthetic, log=lambda *a: None)
    assert "validity" not in parse(index).ids  # no file: no section
    (synthetic / "validity.json").write_text(json.dumps(VALIDITY))
    index, _ = report.build_report(synthetic, log=lambda *a: None)
    page = parse(index)
    assert "validity" in page.ids and "Metric validity" in page.text
    assert "passed" in page.text and "FAILED" in page.text and "salt_pepper" in page.text
    shots = [s for s in page.imgs if s.startswith("img/validity/")]
    assert len(shots) == 2 and all((index.parent / s).is_file() for s in shots)
    (synthetic / "validity.json").write_text('{"schema": 7}')
    index, _ = report.build_report(synthetic, log=lambda *a: None)
    assert "expected" in parse(index).text  # a bad file is named, not dropped


# headless Chromium through the DevTools protocol over a pipe (no extra Python dependency) -----------------------

class Chromium:
    """Chromium with --remote-debugging-pipe: requests go to its fd 3, NUL-separated JSON replies come on fd 4."""

    def __init__(self, timeout: float = 60.0):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()

        def wire():  # in the child: the pipes become fds 3 and 4 (dup first: the numbers may collide)
            a, b = os.dup(to_child), os.dup(from_child)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                      "--remote-debugging-pipe", "about:blank"], preexec_fn=wire,
                                     close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self.timeout, self._buf, self._id, self.events = timeout, b"", 0, []

    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from Chromium")
            ready, _, _ = select.select([self._r], [], [], 0.5)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise EOFError("Chromium closed the DevTools pipe")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._next(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for m in self.events:
            if m.get("method") == method:
                return m
        while True:
            m = self._next(deadline)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (OSError, EOFError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)
        shutil.rmtree(self.profile, ignore_errors=True)


IMAGES_JS = "JSON.stringify([...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]))"


def load_in_chromium(page: Path) -> dict:
    """Open `page` from disk; return console errors, uncaught exceptions, failed loads, image states, the number
    of table elements, and a PNG screenshot of the full page."""
    browser = Chromium()
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable", session=s)
        browser.call("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1,
                                                             "mobile": False}, session=s)
        browser.call("Page.navigate", {"url": page.resolve().as_uri()}, session=s)
        browser.wait_for("Page.loadEventFired")

        def evaluate(expr):
            return browser.call("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                                session=s)["result"]["value"]

        images = json.loads(evaluate(IMAGES_JS))
        tables = evaluate("document.querySelectorAll('table').length")
        shot = browser.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=s)
        errors = []
        for ev in browser.events:
            method, p = ev.get("method"), ev.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value")) for a in p.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                errors.append("exception: " + p["exceptionDetails"].get("text", ""))
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                errors.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        return {"errors": errors, "images": images, "tables": tables, "png": base64.b64decode(shot["data"])}
    finally:
        browser.close()


def pixel_std(png: bytes) -> float:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return float(img.std())


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                                             "chromium); .ci/run installs it")


@needs_chromium
def test_the_checker_catches_broken_pages(tmp_path):
    """Control: a page with a missing image and a console error must be reported as such (the test can fail)."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body style="background:white"><img src="missing.png">'
                   "<script>console.error('boom')</script></body></html>")
    got = load_in_chromium(bad)
    assert any("boom" in m for m in got["errors"]) and any("missing.png" in m for m in got["errors"])
    assert got["images"] == [["missing.png", True, 0]] and got["tables"] == 0
    assert pixel_std(got["png"]) < 5.0  # white, but for the small broken-image icon: blank


@needs_chromium
def test_report_in_headless_chromium(results, tmp_path):
    index, _ = report.build_report(results, chain_steps=200, log=lambda *a: None)
    got = load_in_chromium(index)
    assert got["errors"] == []
    assert len(got["images"]) >= 5
    broken = [src for src, complete, width in got["images"] if not (complete and width > 0)]
    assert broken == [], broken
    assert got["tables"] >= 2
    (tmp_path / "report.png").write_bytes(got["png"])
    assert pixel_std(got["png"]) > 10.0, "the screenshot is blank"
    assert not math.isnan(pixel_std(got["png"]))
