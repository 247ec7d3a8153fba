"""Imports each subcommand module so it registers itself."""

from saelab.cli import demo, models, reserved  # noqa: F401
