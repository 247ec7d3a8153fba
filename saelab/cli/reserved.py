"""Subcommands whose implementation lands with later issues: listed in --help, refuse to run.

A module that implements one registers it with @command and is imported before this one in commands.py."""

import argparse

from saelab.cli.main import _COMMANDS, command
from saelab.errors import SaelabError
from saelab.workspace import Workspace

_RESERVED = {
    "cache": "cache activations of model hook sites to disk",
    "train": "train sparse autoencoders on activations",
    "eval": "evaluate a trained SAE (core metrics, dashboards)",
    "circuits": "run circuit-identification methods on a task",
    "app": "start the web app over the workspace",
}


def _reserved(name: str):
    def run(args: argparse.Namespace, workspace: Workspace) -> int:
        raise SaelabError(f"`saelab {name}` is not available in this version yet")

    return run


for _name, _help in _RESERVED.items():
    if _name not in _COMMANDS:
        command(_name, f"{_help} (not available yet)")(_reserved(_name))
