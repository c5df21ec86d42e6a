"""The README's "Add a method as a plugin" section, executed command by command in a fresh folder: scaffold,
check, load by path, install into this environment (uninstalled afterwards), list, run a tiny suite, and find the
method's row in the leaderboard."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SECTION = "## Add a method as a plugin"
EXPECTED_STEPS = ("scorebench new-plugin my_method", "scorebench check-plugin my_method",
                  "scorebench list methods --plugins-dir my-method", "pip install", "scorebench list methods",
                  "scorebench run configs/quick.toml --methods my_method", "scorebench leaderboard")

def plugin_section() -> tuple[str, str]:
    readme = (REPO / "README.md").read_text()
    if SECTION in readme:
        rest = readme[readme.index(SECTION) + len(SECTION):]
        end = re.search(r"^## ", rest, re.M)
        return rest[: end.start()] if end else rest, "README.md"
    raise AssertionError(f"README.md lost its {SECTION!r} section")


def bash_commands(text: str) -> list[str]:
    """Every non-empty, non-comment line of the section's ```bash blocks, in order."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        out += [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    return out


def test_section_covers_every_step():
    cmds = bash_commands(plugin_section()[0])
    for step in EXPECTED_STEPS:
        assert any(c.startswith(step) for c in cmds), f"the README section lost the step {step!r}: {cmds}"


@pytest.mark.slow
def test_readme_plugin_steps_run_as_written(tmp_path):
    text, source = plugin_section()
    cmds = bash_commands(text)
    (tmp_path / "configs").symlink_to(REPO / "configs")  # the README runs from the repository root
    bindir = Path(sys.executable).parent
    path = [str(bindir), os.environ.get("PATH", "")]
    env = {**os.environ, "PATH": os.pathsep.join(path), "SCOREBENCH_LOAD_PLUGINS": "my_method",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    env.pop("PYTHONPATH", None)
    outputs: dict[str, str] = {}
    installed = False
    try:
        for cmd in cmds:
            installed = installed or cmd.startswith("pip install")
            r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=600)
            assert r.returncode == 0, f"{source}: `{cmd}` exited {r.returncode}\n{r.stdout}\n{r.stderr}"
            outputs[cmd] = r.stdout + r.stderr
    finally:
        if installed:
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "scorebench-my-method"],
                           env=env, capture_output=True, timeout=300)

    def output_of(prefix: str) -> str:
        return next(v for k, v in outputs.items() if k.startswith(prefix))

    assert "0 failed" in output_of("scorebench check-plugin my_method")
    assert re.search(r"my_method\s+Plugin template.*\[my_method\]", output_of("scorebench list methods --plugins")), \
        "the method loaded by path is not listed"
    listed = next(v for k, v in outputs.items() if k == "scorebench list methods")
    assert re.search(r"my_method\s+Plugin template.*\[my_method\]", listed), "the installed method is not listed"
    assert "warning" not in listed
    (record,) = (tmp_path / "results-my-method").glob("runs/*/record.json")
    rec = json.loads(record.read_text())
    assert rec["method"] == "my_method" and rec["status"] == "ok" and "mmd" in rec["metrics"]
    assert re.search(r"^\| 1 \| my_method \|", output_of("scorebench leaderboard"), re.M)
