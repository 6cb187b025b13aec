"""``statecast``: serve, mint tokens, run the benchmark."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from statecast.server.config import add_arguments, load_config


def _serve(args: argparse.Namespace) -> int:
    from statecast.server.app import App
    from statecast.server.logging import configure_logging

    try:
        config = load_config(args)
    except ValueError as exc:
        sys.stderr.write(f"statecast: {exc}\n")
        return 2
    configure_logging(config.log_level, config.log_format)
    if config.store.startswith("sqlite:"):
        from pathlib import Path

        Path(config.store.removeprefix("sqlite:")).parent.mkdir(parents=True, exist_ok=True)
    try:
        app = App(config)
    except ValueError as exc:  # e.g. --auth jwt without a usable key
        sys.stderr.write(f"statecast: {exc}\n")
        return 2
    if config.uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(app.serve_forever())
            return 0
    asyncio.run(app.serve_forever())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="statecast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    add_arguments(serve)
    serve.set_defaults(func=_serve)
    from statecast.loadtest.cli import register as register_bench
    from statecast.loadtest.throughput import register as register_bench_actions
    from statecast.server.token_cli import register as register_token

    register_token(sub)
    register_bench(sub)
    register_bench_actions(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
