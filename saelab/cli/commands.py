"""Imports each subcommand module so it registers itself. A new subcommand adds its module here."""

from saelab.cli import app, cache, circuits, demo, eval, graph, models, train  # noqa: F401
