"""Progress for long work, shown only when a run turns it on.

Samplers, chains and metrics call `track` around their step loops; it shows a bar (steps, s/step) on standard
error while the runner has `active(True)` in force, and is a plain pass-through otherwise (tests, library use,
`--quiet`, no terminal). `phase` brackets a piece of work with a line naming it and the seconds it took.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_state = {"enabled": False, "log": None}


@contextmanager
def active(enabled: bool = True, log=None) -> Iterator[None]:
    """Turn progress output on (or off) for the duration; `log` prints phase lines (default: standard error)."""
    saved = dict(_state)
    _state.update(enabled=enabled, log=log)
    try:
        yield
    finally:
        _state.update(saved)


def is_active() -> bool:
    return bool(_state["enabled"])


def _log(message: str) -> None:
    log = _state["log"]
    if log is not None:
        log(message)
    else:
        print(message, file=sys.stderr, flush=True)


def track(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "step",
          **postfix) -> Iterator[T]:
    """Iterate, with a progress bar (count, rate, time per `unit`) on standard error when progress is active."""
    if not _state["enabled"]:
        yield from iterable
        return
    from tqdm import tqdm

    if total is None:
        total = len(iterable) if hasattr(iterable, "__len__") else None
    with tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr,
              mininterval=0.5) as bar:
        if postfix:
            bar.set_postfix(**postfix)
        yield from bar


@contextmanager
def phase(name: str) -> Iterator[dict]:
    """Announce `name` when progress is active and report its wall time when it ends (also on failure).
    Yields a dict whose "seconds" holds the elapsed time after the block."""
    info: dict = {"seconds": None}
    t0 = time.perf_counter()
    if _state["enabled"]:
        _log(f"    {name} ...")
    ok = False
    try:
        yield info
        ok = True
    finally:
        info["seconds"] = time.perf_counter() - t0
        if _state["enabled"]:
            _log(f"    {name}: {'done' if ok else 'stopped'} in {info['seconds']:.1f} s")
