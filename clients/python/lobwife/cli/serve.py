"""``lobwife serve``: run the server in this process (it needs the ``[server]`` extra)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from lobwife.cli._args import Subcommands

SERVER_MISSING = "the server is not installed: pip install 'lobwife[server]'"


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    # Everything after `serve` belongs to the server, which parses it itself.
    commands.add_parser(
        "serve",
        help="run the server (flags: --state-dir --grpc-port --http-port --host --log-level --grace)",
        add_help=False,
    )


def serve(argv: list[str]) -> int:
    """Run the server (imported only now: clients do not install its dependencies)."""
    try:
        app = importlib.import_module("lobwife_server.app")
    except ModuleNotFoundError as e:
        # Missing: the server package itself or one of its third-party dependencies.
        # A module missing *inside* the server package is a bug; let it show.
        if e.name and e.name.startswith("lobwife_server.") and e.name != "lobwife_server.app":
            raise
        print(SERVER_MISSING, file=sys.stderr)
        print(f"(missing module: {e.name})", file=sys.stderr)
        return 2
    server_main: Callable[[list[str] | None], int] = app.main
    return int(server_main(argv) or 0)
