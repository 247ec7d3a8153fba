"""What the app opens: the workspace named on its command line, the store (read-only), SAE directories."""

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from saelab.db import ResultsStore
from saelab.db.queries import SaeRow
from saelab.errors import SaelabError
from saelab.workspace import Workspace

APP_LOCK_TIMEOUT_S = 15.0
"""How long a page waits for a writer (a trainer mid-batch) before saying the store is busy."""


class MissingArtifactError(SaelabError):
    """A row of the store points at a file that is not there."""


class AppContext(NamedTuple):
    """The workspace the app shows and its store (None when the workspace has no results store yet)."""

    workspace: Workspace
    store: ResultsStore | None


def workspace_from_argv(argv: Sequence[str]) -> Workspace:
    """The workspace from `--workspace DIR` among the app script's arguments, else $SAELAB_WORKSPACE or the
    default (unknown arguments are left alone: Streamlit and test runners add their own)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workspace", default=None)
    known, _ = parser.parse_known_args(list(argv))
    return Workspace.resolve(known.workspace)


def open_context(workspace: Workspace) -> AppContext:
    """The store of `workspace`, to be read only; None when no results store exists yet."""
    if not workspace.db_path.is_file():
        return AppContext(workspace, None)
    return AppContext(workspace, ResultsStore(workspace.db_path, lock_timeout_s=APP_LOCK_TIMEOUT_S))


def resolve_sae_dir(workspace: Workspace, sae: SaeRow) -> Path:
    """The directory of a stored SAE; MissingArtifactError names it (and the fix) when it is gone."""
    directory = Path(sae.path) if Path(sae.path).is_absolute() else workspace.absolute(sae.path)
    if not (directory / "cfg.json").is_file():
        raise MissingArtifactError(
            f"SAE {sae.sae_id!r}: no saved SAE at {directory} (the store row points there); "
            "train it again with `saelab train` or restore the directory"
        )
    return directory


def dashboards_command(workspace: Workspace, sae: SaeRow) -> str:
    """The exact `saelab eval` command that computes the dashboards of `sae` into this workspace's store."""
    from saelab.cli.eval import eval_command

    directory = Path(sae.path) if Path(sae.path).is_absolute() else workspace.absolute(sae.path)
    return eval_command(directory, sae.sae_id, workspace.root)
