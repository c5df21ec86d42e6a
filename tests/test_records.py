"""Run records: file modes from the umask, git dirtiness that ignores the results being written, and the effective
status of a `running` record whose process is gone."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from harness import records


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o027, 0o640)])
def test_atomic_writes_get_the_mode_from_the_umask(tmp_path, umask, expected):
    """mkstemp creates 0600 files; records, checkpoints, plots and reports must be readable like any file."""
    saved = os.umask(umask)
    try:
        records.write_record(tmp_path, {"a": 1})
        records.atomic_write(tmp_path / "blob.bin", lambda f: f.write(b"x"), mode="wb")
    finally:
        os.umask(saved)
    for name in ("record.json", "blob.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                   check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    """A git work tree with a tracked source file and tracked reference results under results/."""
    root = tmp_path / "clone"
    (root / "results" / "runs" / "a").mkdir(parents=True)
    (root / "src.py").write_text("x = 1\n")
    (root / "results" / "runs" / "a" / "record.json").write_text("{}\n")
    (root / "results" / "leaderboard.md").write_text("old\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "init")
    return root


def test_git_dirty_ignores_the_results_folder_being_written(repo, monkeypatch):
    assert records.git_state(repo, exclude=repo / "results") == {"commit": records.git_state(repo)["commit"],
                                                                 "dirty": False}
    # regenerating the committed reference results rewrites tracked files under the out folder
    (repo / "results" / "runs" / "a" / "record.json").write_text('{"new": 1}\n')
    (repo / "results" / "leaderboard.md").write_text("new\n")
    assert records.git_state(repo)["dirty"] is True  # without the exclusion: dirty, as before
    assert records.git_state(repo, exclude=repo / "results")["dirty"] is False
    monkeypatch.chdir(repo)  # a relative --out, as the CLI passes it
    assert records.git_state(repo, exclude="results")["dirty"] is False
    assert records.git_state(repo, exclude="results/local")["dirty"] is True  # a different folder: still seen
    # any other change does make the tree dirty
    (repo / "src.py").write_text("x = 2\n")
    assert records.git_state(repo, exclude=repo / "results")["dirty"] is True


def test_git_state_with_an_out_folder_outside_the_tree(repo, tmp_path):
    assert records.git_state(repo, exclude=tmp_path / "elsewhere")["dirty"] is False
    (repo / "src.py").write_text("x = 2\n")
    assert records.git_state(repo, exclude=tmp_path / "elsewhere")["dirty"] is True


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _running(**fields):
    return {"status": "running", "started_utc": records.utc_now(), "heartbeat_utc": records.utc_now(), **fields}


def test_a_running_record_whose_process_is_gone_is_interrupted():
    here = records.hostname()
    assert records.effective_status(_running(host=here, pid=_dead_pid())) == "interrupted"
    assert records.effective_status(_running(host=here, pid=os.getpid())) == "running"
    for status in ("ok", "diverged", "failed", "interrupted"):
        assert records.effective_status({"status": status, "host": here, "pid": _dead_pid()}) == status
    assert "interrupted" in records.STATUSES


def test_another_hosts_record_goes_stale_with_its_heartbeat():
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

    def beat(seconds_ago):
        return (now - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")

    rec = _running(host="elsewhere.example", pid=1, heartbeat_utc=beat(60))
    assert records.effective_status(rec, now=now) == "running"
    rec["heartbeat_utc"] = beat(records.STALE_AFTER_SECONDS + 1)
    assert records.effective_status(rec, now=now) == "interrupted"
    # an old record without host, pid or heartbeat: its start time is all there is
    assert records.effective_status({"status": "running", "started_utc": beat(10)}, now=now) == "running"
    assert records.effective_status({"status": "running", "started_utc": beat(86400)}, now=now) == "interrupted"
