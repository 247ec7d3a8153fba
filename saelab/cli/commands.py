"""Imports each subcommand module so it registers itself. A new subcommand adds its module here;
`reserved` comes last and fills in the names no module has registered yet."""

from saelab.cli import app, cache, circuits, demo, eval, models, train  # noqa: F401
from saelab.cli import reserved  # noqa: F401  (keep last)
