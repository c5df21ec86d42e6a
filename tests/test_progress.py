"""Long work shows that it is alive: every built-in sampler's step loop draws a progress bar while the runner has
progress on, and draws nothing (and samples exactly the same) while it is off."""

from __future__ import annotations

import pytest
import torch
from test_cost_accounting import CASES, N, build

from harness import progress

# the ODE sampler is adaptive (no step count to show); every fixed-length sampler has a bar
BAR_CASES = [c for c in CASES if c != "sde-ode"]


@pytest.mark.parametrize("case", BAR_CASES)
def test_sampler_loops_show_a_bar_only_when_progress_is_on(case, capsys):
    method, model = build(case)
    name = CASES[case][0].name
    quiet = method.sample(model, N, torch.Generator().manual_seed(0)).samples
    assert capsys.readouterr().err == ""
    with progress.active(True, log=lambda m: None):
        shown = method.sample(model, N, torch.Generator().manual_seed(0)).samples
    err = capsys.readouterr().err
    assert f"{name}:" in err, err
    assert torch.equal(quiet, shown)  # progress changes what is shown, never what is drawn
