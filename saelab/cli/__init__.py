"""The `saelab` command."""

from saelab.cli.main import main

__all__ = ["main"]
