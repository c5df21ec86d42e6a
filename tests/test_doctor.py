"""`scorebench doctor`: an exit code that reflects problems, short MISSING lines, a warning on a loaded machine."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from click.testing import CliRunner

from harness.cli import cli


def _doctor(*args):
    return CliRunner().invoke(cli, ["doctor", *map(str, args)], catch_exceptions=False)


@pytest.fixture
def quiet_machine(monkeypatch):
    """A load average well below the cores, so that only what a test sets up shows."""
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)


def test_all_fine_exits_0(tmp_path, quiet_machine):
    r = _doctor("--data-root", tmp_path, "--datasets", "ring8,digits")
    assert r.exit_code == 0, r.output
    assert "0 problems found" in r.output and "warning" not in r.output


def test_missing_data_exits_1_with_short_lines(tmp_path, quiet_machine):
    """Before: exit 0, and the where-to-look and how-to-get text repeated on every MISSING line."""
    r = _doctor("--data-root", tmp_path / "empty")
    assert r.exit_code == 1, r.output
    missing = [line for line in r.output.splitlines() if line.strip().startswith("MISSING")]
    assert [line.split()[1] for line in missing] == ["cifar10:", "fashion_mnist:", "mnist:"]
    for line in missing:
        assert str(tmp_path / "empty") in line and "--download" not in line and len(line) < 250, line
    assert r.output.count("--download") == 1  # how to get the data: once
    assert "3 problems found" in r.output
    rep = json.loads(_doctor("--json", "--data-root", tmp_path / "empty").output)
    assert rep["problems"] == ["data set cifar10: missing", "data set fashion_mnist: missing",
                               "data set mnist: missing"]
    assert "--download" in rep["datasets"]["mnist"]["detail"]  # the JSON keeps the full message


def test_bad_checksum_exits_1(tmp_path, monkeypatch, quiet_machine):
    """A tiny CIFAR-10 in the binary layout with its MD5s patched in, then one file corrupted."""
    import plugins.datasets as D

    folder = tmp_path / D.CIFAR10_BIN_FOLDER
    folder.mkdir()
    for i, name in enumerate(D.CIFAR10_BIN_MD5):
        data = bytes([i % 10]) * D.CIFAR10_RECORD
        (folder / name).write_bytes(data)
        monkeypatch.setitem(D.CIFAR10_BIN_MD5, name, hashlib.md5(data).hexdigest())
    assert _doctor("--data-root", tmp_path, "--datasets", "cifar10").exit_code == 0
    (folder / "data_batch_3.bin").write_bytes(b"\0" * D.CIFAR10_RECORD)
    r = _doctor("--data-root", tmp_path, "--datasets", "cifar10")
    assert r.exit_code == 1 and "BAD MD5 cifar10" in r.output and "data_batch_3.bin" in r.output, r.output
    assert "1 problem found: data set cifar10: checksum mismatch" in r.output


def test_unknown_dataset_name_is_a_usage_error(tmp_path):
    r = _doctor("--data-root", tmp_path, "--datasets", "ring9")
    assert r.exit_code == 2 and "did you mean 'ring8'" in r.output


@pytest.mark.parametrize("load, cores, warned", [(3.5, {0, 1}, True), (1.5, {0, 1}, False), (1.5, {0}, True),
                                                 (2.0, {0, 1}, False)])
def test_load_above_the_usable_cores_is_a_warning(tmp_path, monkeypatch, load, cores, warned):
    """The warning compares the 1-minute load average with the cores this process may use (its affinity), and
    never changes the exit code."""
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cores, raising=False)
    r = _doctor("--data-root", tmp_path, "--datasets", "ring8")
    assert r.exit_code == 0
    assert ("warning: the 1-minute load average" in r.output) is warned, r.output
    if warned:
        assert f"{load:.2f} already exceeds the {len(cores)} cores" in r.output
    rep = json.loads(_doctor("--json", "--data-root", tmp_path, "--datasets", "ring8").output)
    assert rep["load"] == {"load_1min": load, "cores": len(cores), "overloaded": warned}
    assert bool(rep["warnings"]) is warned
