"""``statecast token``: mint a JWT from the configured secret."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("token", help="mint a JWT (see --auth jwt)")
    parser.set_defaults(func=lambda args: 2)
