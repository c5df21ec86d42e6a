"""`python -m harness ...` is the `scorebench` command line; torchrun starts it as a module:

    torchrun --nproc-per-node N -m harness run CONFIG ...

Every process runs the same command. In a data-parallel run the ranks other than 0 run `run` with `--quiet` and
their standard output discarded (rank 0 prints the progress, the per-job lines and the summary; errors still reach
standard error), and every process destroys its process group on the way out.
"""

from __future__ import annotations

import os
import sys

from harness import distributed
from harness.cli import main


def _quiet_other_ranks(argv: list[str]) -> list[str]:
    """argv for this process: unchanged, except `run` on a rank other than 0 of a data-parallel job gets --quiet."""
    if distributed.world_size() > 1 and distributed.rank() > 0 and len(argv) > 1 and argv[1] == "run":
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
        return [*argv, "--quiet"]
    return argv


def run() -> None:
    sys.argv = _quiet_other_ranks(["scorebench", *sys.argv[1:]])
    try:
        main()
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    run()
