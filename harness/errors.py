"""Exceptions the CLI maps to exit codes: usage/config errors exit 2."""

import difflib
from collections.abc import Iterable


class ScorebenchError(Exception):
    """Base class of the harness's own errors."""


class UsageError(ScorebenchError):
    """Bad input from the user (unknown name, malformed config, missing data): exit code 2."""


class ConfigError(UsageError):
    """A configuration file or override is invalid."""


class DataError(UsageError):
    """A data set is missing or fails its checksum."""


def did_you_mean(kind: str, name: str, available: Iterable[str]) -> str:
    """The message for an unknown name: closest matches first, then everything that exists."""
    available = sorted(available)
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    msg = f"unknown {kind} {name!r}"
    if close:
        msg += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    msg += f" available: {', '.join(available) if available else '(none)'}"
    return msg
