"""`saelab app`: serve the web app (Streamlit) over the workspace; the app only reads the results store."""

import argparse

from saelab.cli.main import command
from saelab.workspace import Workspace


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")


@command("app", "start the web app over the workspace", _arguments)
def run_app(args: argparse.Namespace, workspace: Workspace) -> int:
    from rich.console import Console

    from saelab.app_support.launch import run_server, streamlit_command

    cmd = streamlit_command(workspace, host=args.host, port=args.port)
    console = Console(stderr=True)
    if not workspace.db_path.is_file():
        console.print(f"[yellow]no results store in {workspace.root} yet; the app will say how to fill it")
    console.print(f"saelab app: http://{args.host}:{args.port} (workspace {workspace.root}); Ctrl-C stops it")
    return run_server(cmd)
