"""`saelab app`: serve the web app (Streamlit) over the workspace; the app only reads the results store. How
the app is started (`streamlit_command`, `run_server`) lives here; `saelab demo` starts it the same way."""

import argparse
import signal
import subprocess
import sys
import threading
from pathlib import Path

from saelab.cli.main import command
from saelab.errors import SaelabError
from saelab.paths import app_dir
from saelab.workspace import Workspace


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")


@command("app", "start the web app over the workspace", _arguments)
def run_app(args: argparse.Namespace, workspace: Workspace) -> int:
    from rich.console import Console

    cmd = streamlit_command(workspace, host=args.host, port=args.port)
    console = Console(stderr=True)
    if not workspace.db_path.is_file():
        console.print(f"[yellow]no results store in {workspace.root} yet; the app will say how to fill it")
    console.print(f"saelab app: http://{args.host}:{args.port} (workspace {workspace.root}); Ctrl-C stops it")
    return run_server(cmd)


def app_main_script() -> Path:
    """`app/main.py`, from the source tree or the installed wheel (`saelab.paths.app_dir`)."""
    script = app_dir() / "main.py"
    if not script.is_file():
        raise SaelabError(
            f"the web app is missing from this installation (looked for {script}); "
            "reinstall saelab (`pip install .` or a built wheel)"
        )
    return script


def streamlit_command(workspace: Workspace, host: str = "127.0.0.1", port: int = 8501,
                      python: str = sys.executable) -> list[str]:
    """The command line that serves the app over `workspace` on host:port, headless, without telemetry."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    if not host or any(ch.isspace() for ch in host):
        raise ValueError(f"host must be an address such as 127.0.0.1, got {host!r}")
    return [
        python,
        "-m",
        "streamlit",
        "run",
        str(app_main_script()),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--",
        "--workspace", str(workspace.root),
    ]


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_server(cmd: list[str], stop_timeout_s: float = 15.0) -> int:
    """Run the server command until it exits; when this process is interrupted or terminated, stop the
    server too (so `kill` on `saelab app` leaves no orphaned Streamlit behind). Returns its exit status."""
    server = subprocess.Popen(cmd)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main_thread else None
    try:
        return server.wait()
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
