"""``statecast``: serve, mint tokens, and whatever commands installed packages add.

Other packages add subcommands through the ``statecast.commands`` entry-point
group: each entry is a callable that takes the subparsers object and adds its
parser (the load harness registers ``bench`` and ``bench-actions`` this way).
The server never imports them, so it installs and runs without them; an entry
whose package is missing or broken is left out with a warning on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from statecast.server.config import add_arguments, load_config

COMMANDS_GROUP = "statecast.commands"


def _serve(args: argparse.Namespace) -> int:
    from statecast.server.app import App, StartupError
    from statecast.server.logging import configure_logging

    try:
        config = load_config(args)
    except ValueError as exc:
        sys.stderr.write(f"statecast: {exc}\n")
        return 2
    configure_logging(config.log_level, config.log_format)
    if config.workers > 1:
        from statecast.server.workers import refusal, supervise

        reason = refusal(config)
        if reason is not None:
            sys.stderr.write(f"statecast: {reason}\n")
            return 2
        return supervise(config, args.serve_argv)
    if config.store.startswith("sqlite:"):
        from pathlib import Path

        Path(config.store.removeprefix("sqlite:")).parent.mkdir(parents=True, exist_ok=True)
    try:
        app = App(config)
    except ValueError as exc:  # e.g. --auth jwt without a usable key
        sys.stderr.write(f"statecast: {exc}\n")
        return 2
    run: Any = asyncio.run
    if config.uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            run = uvloop.run
    try:
        run(app.serve_forever())
    except StartupError as exc:
        sys.stderr.write(f"statecast: {exc}\n")
        return 2
    return 0


def add_plugin_commands(sub: Any, group: str = COMMANDS_GROUP) -> list[str]:
    """Let every ``group`` entry point add its subcommand; return the names added."""
    added = []
    for entry in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            register = entry.load()
            register(sub)
        except Exception as exc:  # a broken add-on must not take the server's CLI down
            sys.stderr.write(f"statecast: command {entry.name!r} unavailable: {exc}\n")
            continue
        added.append(entry.name)
    return added


def build_parser(group: str = COMMANDS_GROUP) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statecast",
        description="statecast: serve rooms, mint tokens, and the commands installed packages add",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    add_arguments(serve)
    serve.set_defaults(func=_serve)
    from statecast.server.token_cli import register as register_token

    register_token(sub)
    add_plugin_commands(sub, group)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.serve_argv = _without_workers(list(sys.argv[1:] if argv is None else argv)[1:])
    return int(args.func(args))


def _without_workers(argv: list[str]) -> list[str]:
    """A worker's own command line: the supervisor's, less ``--workers``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
