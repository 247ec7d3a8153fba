"""`saelab` command line: a thin layer that parses arguments and calls library functions.

Subcommands live in a registry (name -> Command); each module under saelab/cli adds its own.
"""

import argparse
import errno
import logging
import shutil
import sys
import traceback
from collections.abc import Callable
from typing import NamedTuple, NoReturn

from saelab.errors import SaelabError
from saelab.registry import Registry
from saelab.workspace import Workspace


class UsageError(Exception):
    """A bad flag or value on the command line (exit status 2)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


class Command(NamedTuple):
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Workspace], int]


_COMMANDS: Registry[Command] = Registry("subcommand")


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register `run(args, workspace) -> exit code` as the subcommand `name`."""

    def register(run: Callable[[argparse.Namespace, Workspace], int]):
        _COMMANDS.register(name, Command(name, help, add_arguments, run))
        return run

    return register


def build_parser() -> argparse.ArgumentParser:
    from saelab.cli import commands  # noqa: F401 - registers the subcommands

    parser = OneLineParser(
        prog="saelab",
        description="saelab: train sparse autoencoders, browse their features, identify circuits.",
    )
    parser.add_argument("--workspace", metavar="DIR",
                        help="workspace directory (default: $SAELAB_WORKSPACE or ./saelab-workspace)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for cmd in _COMMANDS.values():
        subparser = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        # --workspace is accepted before or after the subcommand; SUPPRESS keeps the global value otherwise.
        subparser.add_argument(
            "--workspace", metavar="DIR", default=argparse.SUPPRESS, help="workspace directory"
        )
        cmd.add_arguments(subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `saelab` command; its exit status."""
    return run_process(lambda: _run(argv))


def run_process(run: Callable[[], int]) -> int:
    """`run()`'s exit status; a process of a `torchrun` group ends here instead, after a traceback if `run`
    raised (`saelab.training.distributed.exit_process`: its interpreter's finalisation can abort)."""
    try:
        code = run()
    except SystemExit as exc:
        if not _joined_process_group():
            raise
        if exc.code is not None and not isinstance(exc.code, int):
            sys.stderr.write(f"{exc.code}\n")  # sys.exit("message"), as the interpreter would print it
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        if not _joined_process_group():
            raise
        traceback.print_exc()
        code = 1
    if _joined_process_group():
        from saelab.training.distributed import exit_process

        exit_process(code)
    return code


def _joined_process_group() -> bool:
    """Whether this command joined a `torchrun` process group (asked without importing torch)."""
    distributed = sys.modules.get("saelab.training.distributed")
    return distributed is not None and distributed.current_world().distributed


def _run(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        build_parser().print_help()
        return 0
    workspace = Workspace.resolve(args.workspace)
    from saelab.training.allocator import reuse_freed_memory

    # every command's process keeps freed step-sized blocks instead of faulting them in again
    reuse_freed_memory()
    try:
        return _COMMANDS[args.command].run(args, workspace)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    except SaelabError as exc:
        sys.stderr.write(f"saelab {args.command}: error: {exc}\n")
        return 1
    except ValueError as exc:
        # Library validation errors name the bad value; show them as one line, not a traceback.
        sys.stderr.write(f"saelab {args.command}: error: {exc}\n")
        return 1
    except Exception as exc:  # noqa: BLE001 - only the machine's errors are turned into a line; others re-raise
        message = system_error_message(exc, workspace)
        if message is None:
            raise
        sys.stderr.write(f"saelab {args.command}: error: {message}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"saelab {args.command}: interrupted\n")
        return 130


def system_error_message(exc: BaseException, workspace: Workspace) -> str | None:
    """One line for an error of the machine rather than of saelab (a full disk, a read-only or missing file,
    too little memory, the results store failing), naming the path; None for anything else (a bug: its
    traceback is worth seeing)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, OSError):
        return f"{exc.strerror or first} {_where(exc, workspace)}"
    duckdb = sys.modules.get("duckdb")
    if duckdb is not None and isinstance(exc, duckdb.Error):
        return f"results store {workspace.db_path}: {first}"
    if isinstance(exc, MemoryError) or "can't allocate memory" in first or "out of memory" in first.lower():
        return f"not enough memory ({first}); choose a smaller width, batch or token count"
    return None


def _where(exc: OSError, workspace: Workspace) -> str:
    """The path an OS error names; for a full disk that names none (a write into an open file), the workspace
    folder with the least free space."""
    if exc.filename:
        return f"at {exc.filename}"
    if exc.errno == errno.ENOSPC:
        folders = [f for f in (workspace.root, workspace.activations_dir, workspace.saes_dir,
                               workspace.checkpoints_dir) if f.is_dir()]
        if folders:
            fullest = min(folders, key=lambda folder: shutil.disk_usage(folder).free)
            return (
                f"under {fullest} ({shutil.disk_usage(fullest).free / 2**20:,.1f} MiB free); free some space"
            )
    return f"in workspace {workspace.root}"

