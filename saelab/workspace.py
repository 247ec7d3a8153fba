"""A workspace: the one directory saelab writes to (`saelab.duckdb`, activations, SAEs, checkpoints)."""

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
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

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    def create(self) -> "Workspace":
        """Make the workspace folders; an unwritable or blocked path is a one-line SaelabError."""
        for folder in (self.root, self.activations_dir, self.saes_dir, self.checkpoints_dir):
            _make_folder(self.root, folder)
        return self

    @contextmanager
    def lock(self, name: str) -> Iterator[Path]:
        """Hold the exclusive lock `name` (e.g. a run id) while the block runs. When another process holds it,
        a one-line WorkspaceBusyError names that process. The lock file (holding this process's id) is removed
        on release; the lock itself is the kernel's, so a killed holder never leaves it taken."""
        _make_folder(self.root, self.locks_dir)
        path = self.locks_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.lock"
        fd = _locked_fd(path, name)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield path
        finally:
            path.unlink(missing_ok=True)
            os.close(fd)

    def relative(self, path: str | os.PathLike) -> str:
        """A workspace-relative path for storing in the results store. A path below the workspace counts as
        such even where a workspace folder is a symbolic link to another disk."""
        absolute = Path(os.path.abspath(path))
        if absolute.is_relative_to(self.root):
            return absolute.relative_to(self.root).as_posix()
        return absolute.resolve().relative_to(self.root).as_posix()

    def absolute(self, relative_path: str) -> Path:
        """The absolute path of a workspace-relative path read from the store."""
        return self.root / relative_path


class WorkspaceBusyError(SaelabError):
    """Another process holds a lock this command needs."""


def _make_folder(root: Path, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SaelabError(
            f"cannot use workspace {str(root)!r}: {exc.strerror or exc} at {folder}; "
            "pass a writable directory with --workspace"
        ) from None


def _locked_fd(path: Path, name: str) -> int:
    """An open descriptor of `path` holding its exclusive lock (retrying if the holder removed the file
    between our open and our lock)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise WorkspaceBusyError(
                f"{name} is in use by process {holder} (lock {path}); wait for it to finish, or stop it and "
                "run "
                "the command again (it resumes)"
            ) from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
