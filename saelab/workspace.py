"""A workspace: the one directory saelab writes to (`saelab.duckdb`, activations, SAEs, checkpoints)."""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from saelab.errors import SaelabError

DEFAULT_WORKSPACE = "saelab-workspace"
WORKSPACE_ENV = "SAELAB_WORKSPACE"


@dataclass(frozen=True)
class Workspace:
    """Paths inside one workspace. Building the value touches no disk; `create()` makes the folders."""

    root: Path
    """The workspace directory; every file saelab writes lies below it."""

    @classmethod
    def resolve(cls, explicit: str | os.PathLike | None = None) -> "Workspace":
        """`explicit` if given, else `$SAELAB_WORKSPACE`, else `./saelab-workspace`."""
        chosen = explicit or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
        return cls(Path(chosen).expanduser().resolve())

    @property
    def db_path(self) -> Path:
        return self.root / "saelab.duckdb"

    @property
    def activations_dir(self) -> Path:
        return self.root / "activations"

    def activations_for(self, model: str) -> Path:
        """The folder one model's cached sites live in."""
        return self.activations_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", model).strip("_.") or "model")

    @property
    def saes_dir(self) -> Path:
        return self.root / "saes"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    def create(self) -> "Workspace":
        """Make the workspace folders; an unwritable or blocked path is a one-line SaelabError."""
        for folder in (self.root, self.activations_dir, self.saes_dir, self.checkpoints_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SaelabError(
                    f"cannot use workspace {str(self.root)!r}: {exc.strerror or exc} at {folder}; "
                    "pass a writable directory with --workspace"
                ) from None
        return self

    def relative(self, path: str | os.PathLike) -> str:
        """A workspace-relative path for storing in the results store."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def absolute(self, relative_path: str) -> Path:
        """The absolute path of a workspace-relative path read from the store."""
        return self.root / relative_path
