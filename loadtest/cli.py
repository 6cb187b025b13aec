"""``statecast bench``: the side-by-side comparison of polling, push and the floor."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("bench", help="run the load harness")
    parser.set_defaults(func=lambda args: 2)
