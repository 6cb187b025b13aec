"""``statecast token``: mint a JWT from the configured secret (or an RS256 private key).

    STATECAST_JWT_SECRET=... statecast token --sub bot-1 --role agent --rooms 'game-*' --ttl 1h

The token goes to stdout with nothing else, so it can be captured by a shell.
Prefer the environment variable to ``--secret``: a flag is visible in the
process list.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, cast

from statecast.protocol.messages import ROLES, Role
from statecast.protocol.views import check_prefixes
from statecast.server.jwt_auth import HMAC_ALGORITHMS, KEY_ALGORITHMS, MIN_SECRET_BYTES, mint

_TTL = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` as seconds (> 0)."""
    match = _TTL.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30m, 1h, 7d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the ttl must be positive")
    return seconds


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "token", help="mint a JWT (see --auth jwt)", description=__doc__
    )
    parser.add_argument("--sub", required=True, help="the client id the token acts as")
    parser.add_argument("--role", required=True, choices=sorted(ROLES))
    parser.add_argument(
        "--rooms",
        action="append",
        required=True,
        metavar="PATTERN",
        help="room name or glob; repeatable or comma-separated",
    )
    parser.add_argument(
        "--view",
        action="append",
        type=_prefix,
        metavar="JSON",
        help='a path prefix the holder may read, as a JSON list of keys (\'["players", "p7"]\'; '
        "repeatable); without it, the whole room (docs/protocol.md §5.12)",
    )
    parser.add_argument("--ttl", type=parse_ttl, default=3600.0, help="lifetime (default 1h)")
    parser.add_argument(
        "--secret", help="HMAC secret (default: STATECAST_JWT_SECRET; the flag shows in ps)"
    )
    parser.add_argument(
        "--algorithm",
        default=os.environ.get("STATECAST_JWT_ALGORITHM", "HS256"),
        help="HS256 (default) or RS256 and the like with --private-key",
    )
    parser.add_argument("--private-key", type=Path, help="PEM private key for RS256 and the like")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    algorithm: str = args.algorithm
    if algorithm in HMAC_ALGORITHMS:
        key = args.secret or os.environ.get("STATECAST_JWT_SECRET")
        if not key:
            return _fail("no secret: set STATECAST_JWT_SECRET or pass --secret")
        if len(key.encode()) < MIN_SECRET_BYTES:
            return _fail(f"the secret must be at least {MIN_SECRET_BYTES} bytes")
    elif algorithm in KEY_ALGORITHMS:
        if args.private_key is None:
            return _fail(f"{algorithm} needs --private-key PEM")
        key = args.private_key.read_text()
    else:
        return _fail(f"unsupported algorithm {algorithm!r}")
    rooms = [p.strip() for arg in args.rooms for p in arg.split(",") if p.strip()]
    if not rooms:
        return _fail("--rooms needs at least one name or pattern")
    token = mint(
        key,
        sub=args.sub,
        role=cast(Role, args.role),
        rooms=rooms,
        ttl=args.ttl,
        algorithm=algorithm,
        view=args.view,
    )
    sys.stdout.write(token + "\n")
    return 0


def _prefix(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    try:
        return check_prefixes([value], "--view")[0]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a JSON list of map keys, e.g. \'["players", "p7"]\''
        ) from None


def _fail(message: str) -> int:
    sys.stderr.write(f"statecast token: {message}\n")
    return 2
