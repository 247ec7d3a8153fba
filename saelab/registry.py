"""One registry type for the "name -> entry" tables that code extends by registering (SAE architectures, hook
site kinds, CLI subcommands, ...): each refuses a second entry under a name and answers an unknown name with
one line that lists the known ones.

    ARCHITECTURES: Registry[Architecture] = Registry("SAE architecture")
    ARCHITECTURES.register("topk", TOPK)
    ARCHITECTURES.lookup("topk")    # ValueError "unknown SAE architecture 'x'; choose one of: ..." if absent
    "topk" in ARCHITECTURES, ARCHITECTURES.names(), ARCHITECTURES["topk"]   # a read-only Mapping otherwise
"""

from collections.abc import Iterator, Mapping
from typing import TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T]):
    """Entries of one kind under unique names, in registration order; read as a Mapping."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        """What an entry is, in words, for messages ("SAE architecture", "site kind")."""
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add `entry` under `name` and return it; a second entry under a name is refused (ValueError)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def lookup(self, name: str) -> T:
        """The entry called `name`; an unknown name is a ValueError naming it and listing the known names."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
