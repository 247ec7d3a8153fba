"""`saelab models`: list the bundled models."""

import argparse

from saelab.cli.main import command
from saelab.workspace import Workspace


@command("models", "list the bundled models (name, size, what each was trained on)")
def run_models(args: argparse.Namespace, workspace: Workspace) -> int:
    from rich.console import Console
    from rich.table import Table

    from saelab.models import bundled_models

    table = Table("name", "size", "trained on", "available")
    for model in bundled_models():
        table.add_row(
            model.name, model.description, model.trained_on, "yes" if model.available else "no (not trained)"
        )
    Console().print(table)
    return 0
