"""Named registries of methods, data sets, backbones and metrics, filled by plugin hooks.

Every registration goes through `Registry.register`, so naming, duplicate checks and type checks live in one
place. Errors name what was asked and what exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from harness.errors import UsageError, did_you_mean


class RegistrationError(Exception):
    """A plugin registered something invalid (wrong type, duplicate name)."""


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    description: str
    provider: str


class Registry:
    """One kind of component (``method``, ``dataset``, ...), keyed by name."""

    def __init__(self, kind: str, check: Callable[[Any], bool], expected: str):
        self.kind = kind
        self._check = check
        self._expected = expected
        self._entries: dict[str, Entry] = {}
        self.load_failures: list[str] = []  # summaries of plugins that failed to load, for error messages

    def register(self, obj: Any, provider: str, name: str | None = None, description: str | None = None) -> None:
        if not self._check(obj):
            raise RegistrationError(
                f"plugin {provider!r} registered {obj!r} as a {self.kind}; expected {self._expected}"
            )
        name = name or getattr(obj, "name", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise RegistrationError(
                f"plugin {provider!r} registered a {self.kind} with invalid name {name!r}; "
                "names must be Python identifiers such as 'walk_jump'"
            )
        if name in self._entries:
            other = self._entries[name].provider
            raise RegistrationError(
                f"{self.kind} {name!r} registered twice: by plugin {other!r} and by plugin {provider!r}"
            )
        doc = description or getattr(obj, "description", None) or (obj.__doc__ or "").strip()
        self._entries[name] = Entry(name, obj, (doc.splitlines() or [""])[0], provider)

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            msg = did_you_mean(self.kind, name, self._entries)
            if self.load_failures:
                msg += "; these plugins failed to load and may provide it: " + "; ".join(self.load_failures)
            raise UsageError(msg) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)
