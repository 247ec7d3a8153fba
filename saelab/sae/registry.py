"""The architecture registry: every SAE architecture, by name (adding one is registering it here, from its
module)."""

from saelab.registry import Registry
from saelab.sae.types import Architecture

ARCHITECTURES: Registry[Architecture] = Registry("SAE architecture")


def register_architecture(architecture: Architecture) -> Architecture:
    """Add an architecture under its name; a second one with the same name is refused."""
    return ARCHITECTURES.register(architecture.name, architecture)


def get_architecture(name: str) -> Architecture:
    """The registered architecture called `name`."""
    return ARCHITECTURES.lookup(name)
