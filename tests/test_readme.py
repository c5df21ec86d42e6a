"""The README's promises: its minimal plugin runs as written, and its two set-up commands are the real ones."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner
from conftest import REPO

from harness.cli import cli

README = (REPO / "README.md").read_text()


def _python_block_after(marker: str) -> str:
    start = README.index(marker)
    return re.search(r"```python\n(.*?)```", README[start:], re.S).group(1)


def test_minimal_plugin_from_the_readme_runs(tmp_path):
    folder = tmp_path / "my_plugins"
    folder.mkdir()
    (folder / "toy_dsm.py").write_text(_python_block_after("A complete minimal plugin"))
    runner = CliRunner()
    listed = runner.invoke(cli, ["list", "methods", "--plugins-dir", str(folder)])
    assert "toy_dsm" in listed.output and "Minimal example" in listed.output
    r = runner.invoke(cli, ["run", str(REPO / "configs" / "quick.toml"), "--plugins-dir", str(folder),
                            "--methods", "toy_dsm", "--datasets", "ring8", "--out", str(tmp_path / "res"),
                            "--set", "train.steps=20", "--set", "eval.n_samples=64", "--quiet"])
    assert r.exit_code == 0, r.output
    (rec,) = tmp_path.glob("res/runs/*/record.json")
    rec = json.loads(rec.read_text())
    assert rec["status"] == "ok" and rec["method"] == "toy_dsm" and rec["nfe"] == 100


def test_quick_start_commands_are_the_documented_ones():
    assert 'pip install -e ".[dev]" && scorebench run configs/quick.toml' in README
    assert 'pip install -e ".[dev]" && pytest' in README
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[dev]"' in ci and ci.rstrip().endswith("pytest")
