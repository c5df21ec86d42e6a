"""`scorebench new-plugin`: the package it writes is a valid, lint-clean plugin that loads by path, declares the
entry point, and whose own test (the conformance kit) passes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.errors import UsageError
from harness.plugins import PluginHost
from harness.scaffold import class_name, new_plugin


@pytest.fixture
def package(tmp_path):
    folder, files = new_plugin("my_method", tmp_path / "pkg")
    return folder, files


def test_writes_the_package_files(package, tmp_path):
    folder, files = package
    assert folder == tmp_path / "pkg"
    assert sorted(p.relative_to(folder).as_posix() for p in files) == [
        "README.md", "my_method.py", "pyproject.toml", "tests/test_my_method.py"]
    meta = tomllib.loads((folder / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "scorebench-my-method"
    assert meta["project"]["entry-points"]["scorebench"] == {"my_method": "my_method"}
    assert meta["tool"]["setuptools"]["py-modules"] == ["my_method"]


def test_default_folder_and_refusing_to_overwrite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder, _ = new_plugin("other")
    assert folder == Path("scorebench-other") and (tmp_path / "scorebench-other" / "other.py").is_file()
    with pytest.raises(UsageError, match="not overwriting"):
        new_plugin("other")


@pytest.mark.parametrize("bad", ["My-Method", "class", "1abc", "MyMethod", "json", "torch"])
def test_rejects_names_that_cannot_be_module_and_method_names(bad, tmp_path):
    with pytest.raises(UsageError, match=repr(bad)):
        new_plugin(bad, tmp_path / "x")


def test_class_names():
    assert class_name("my_method") == "MyMethod" and class_name("dsm2") == "Dsm2"


def test_generated_code_is_lint_clean(package):
    folder, _ = package
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed beside this Python")
    r = subprocess.run([str(ruff), "check", "--no-cache", "--line-length", "120", "--select", "E,F,W,I,B,UP",
                        "--config", "lint.isort.known-first-party=['harness']", str(folder)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_generated_plugin_loads_by_path_and_registers_the_method(package):
    folder, _ = package
    host = PluginHost(plugins_dir=folder, entry_points=False)
    assert host.infos["my_method"].error is None
    entry = host.registries["methods"].entry("my_method")
    assert entry.provider == "my_method" and entry.obj.__name__ == "MyMethod"
    assert "Plugin template" in entry.description


def test_generated_test_passes_the_conformance_kit(package, monkeypatch):
    folder, _ = package
    monkeypatch.syspath_prepend(str(folder))  # what the generated pyproject's pytest `pythonpath = ["."]` does
    spec = importlib.util.spec_from_file_location("generated_test", folder / "tests" / "test_my_method.py")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
        mod.test_conforms_to_the_scorebench_method_contract()  # raises AssertionError listing failures
    finally:
        sys.modules.pop("my_method", None)


def test_new_plugin_command(tmp_path):
    from harness.cli import cli

    runner = CliRunner()
    r = runner.invoke(cli, ["new-plugin", "cmd_method", "--dir", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p" / "cmd_method.py").is_file() and "pip install --no-build-isolation -e" in r.output
    r = runner.invoke(cli, ["new-plugin", "Bad-Name", "--dir", str(tmp_path / "q")])
    assert r.exit_code == 2 and "lower-case Python identifier" in r.output
