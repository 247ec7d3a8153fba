"""The architecture registry: a dict that refuses duplicate names."""

from saelab.sae.types import Architecture

ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(architecture: Architecture) -> Architecture:
    """Add an architecture under its name; a second one with the same name is refused."""
    if architecture.name in ARCHITECTURES:
        raise ValueError(f"SAE architecture {architecture.name!r} is already registered")
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def get_architecture(name: str) -> Architecture:
    """The registered architecture called `name`."""
    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown SAE architecture {name!r}; choose one of: {known}")
    return ARCHITECTURES[name]
