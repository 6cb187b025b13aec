"""--auth jwt over WebSocket and HTTP, --public-spectators, and `statecast token`.

Conformance: docs/protocol.md §11 (tokens), §10.10, and the closes 4001 and 4003 of §8.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from statecast.protocol.errors import Unauthenticated
from statecast.server.config import Config
from statecast.server.jwt_auth import JwtAuth, load_key
from tests.helpers import TIMEOUT, RunningServer, bare, http_session, make_room, running_server

SECRET = "statecast-test-secret-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]


def token(
    sub: str = "bot-1",
    role: str = "agent",
    rooms: Any = ("game-*",),
    ttl: float = 3600,
    key: str = SECRET,
    algorithm: str = "HS256",
    **extra: Any,
) -> str:
    now = int(time.time())
    claims = {"sub": sub, "role": role, "rooms": list(rooms), "exp": now + int(ttl), **extra}
    return jwt.encode(claims, key, algorithm=algorithm)


def jwt_server(**settings: Any) -> Any:
    return running_server(auth="jwt", jwt_secret=SECRET, **settings)


async def refused(srv: RunningServer, room: str, role: str, **fields: Any) -> int | None:
    """HELLO and return the close code the server answers with."""
    async with bare(srv.room_url(room)) as ws:
        await ws.send([1, {"v": 1, "role": role, **fields}])
        return await ws.closed()


# --- WebSocket -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "fields"),
    [
        ("missing", {}),
        ("malformed", {"token": "not.a.jwt"}),
        ("garbage", {"token": "x"}),
        ("bad signature", {"token": token(key="another-secret-of-at-least-32-bytes!!")}),
        ("expired", {"token": token(ttl=-3600)}),
        ("no exp", {"token": jwt.encode({"sub": "a", "role": "agent", "rooms": ["*"]}, SECRET)}),
        ("bad role claim", {"token": token(role="admin")}),
        (
            "rooms not a list",
            {
                "token": jwt.encode(
                    {"sub": "a", "role": "agent", "rooms": "game-1", "exp": 2**40}, SECRET
                )
            },
        ),
        ("alg none", {"token": jwt.encode({"sub": "a"}, None, algorithm="none")}),
    ],
)
async def test_hello_without_a_valid_token_closes_4001(case: str, fields: dict[str, Any]) -> None:
    """A missing, malformed, badly signed or expired token closes the connection with 4001."""
    async with jwt_server() as srv:
        assert await refused(srv, "game-1", "agent", **fields) == 4001, case


async def test_token_for_another_room_closes_4003() -> None:
    """A valid token that does not grant the room closes with 4003."""
    async with jwt_server() as srv:
        assert await refused(srv, "lobby", "agent", token=token(rooms=["game-*"])) == 4003
        assert await refused(srv, "lobby", "spectator", token=token(rooms=["game-*"])) == 4003


async def test_spectator_token_cannot_hello_as_agent() -> None:
    """A spectator token asking for the agent role closes with 4003."""
    async with jwt_server() as srv:
        spectator = token(role="spectator")
        assert await refused(srv, "game-1", "agent", token=spectator) == 4003


async def test_agent_acts_as_its_token_subject() -> None:
    """An agent's client id is its token's sub, whatever its HELLO claims."""
    async with jwt_server() as srv, bare(srv.room_url("game-1")) as ws:
        welcome = await ws.hello("agent", token=token(sub="bot-7"), client="someone-else")
        assert welcome["client"] == "bot-7" and welcome["role"] == "agent"
        await ws.recv_type(3)
        await ws.send([4, 1, "patch", [[0, ["x"], 1]]])
        assert await ws.recv_type(7) == [7, 1, 1]
        assert srv.app.rooms.rooms["game-1"].feed.acked == {"bot-7": 1}


async def test_agent_token_may_spectate_but_a_spectator_cannot_act() -> None:
    """An agent token grants reading; a spectator session's ACTION gets ERROR forbidden."""
    async with jwt_server() as srv, bare(srv.room_url("game-1")) as ws:
        await make_room(srv, "game-1")
        welcome = await ws.hello("spectator", token=token(role="agent"))
        assert welcome["role"] == "spectator"
        await ws.recv_type(3)
        await ws.send([4, 1, "patch", [[0, ["x"], 1]]])
        assert (await ws.recv_type(8))[:3] == [8, 1, "forbidden"]
        assert srv.app.rooms.rooms["game-1"].feed.head == 0


async def test_resume_is_checked_like_any_hello() -> None:
    """A HELLO with resume and an expired or wrong-room token is refused like a fresh one."""
    async with jwt_server() as srv:
        async with bare(srv.room_url("game-1")) as ws:
            welcome = await ws.hello("agent", token=token())
            await ws.recv_type(3)
        resume = [welcome["epoch"], welcome["seq"]]
        assert await refused(srv, "game-1", "agent", token=token(ttl=-60), resume=resume) == 4001
        assert await refused(srv, "game-1", "agent", resume=resume) == 4001
        other_room = token(rooms=["other"])
        assert await refused(srv, "game-1", "agent", token=other_room, resume=resume) == 4003
        async with bare(srv.room_url("game-1")) as ws:
            again = await ws.hello("agent", token=token(), resume=resume)
            assert again["sync"] == "current"


async def test_refused_hello_leaves_other_clients_served() -> None:
    """A refused client changes nothing for a client already in the room."""
    async with jwt_server() as srv, bare(srv.room_url("game-1")) as ok:
        await ok.hello("agent", token=token())
        await ok.recv_type(3)
        assert await refused(srv, "game-1", "agent", token="bad") == 4001
        await ok.send([4, 1, "patch", [[0, ["x"], 1]]])
        assert await ok.recv_type(7) == [7, 1, 1]


# --- HTTP ----------------------------------------------------------------------------------


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def _seed(srv: RunningServer) -> None:
    async with bare(srv.room_url("game-1")) as ws:
        await ws.hello("agent", token=token(sub="seed"))
        await ws.send([4, 1, "patch", [[0, ["x"], 1]]])
        await ws.recv_type(7)


READS = ["/state", "/head", "/changes?epoch=E&since=0", "/clients/bot-1"]


@pytest.mark.parametrize("path", READS)
async def test_http_reads_need_a_token(path: str) -> None:
    """Every read answers 401 without a valid token and 403 for a room it does not grant."""
    async with jwt_server() as srv:
        await _seed(srv)
        url = f"{srv.http_url}/rooms/game-1{path}"
        async with http_session() as http:
            for headers in ({}, bearer("garbage"), bearer(token(ttl=-60)), {"Authorization": "x"}):
                async with http.get(url, headers=headers) as resp:
                    assert resp.status == 401
                    assert (await resp.json())["code"] == "unauthenticated"
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            async with http.get(url, headers=bearer(token(rooms=["lobby"]))) as resp:
                assert resp.status == 403
                assert (await resp.json())["code"] == "forbidden"
            async with http.get(url, headers=bearer(token(role="spectator"))) as resp:
                assert resp.status in (200, 410)


async def test_http_auth_is_checked_before_the_room_is_looked_up() -> None:
    """An unknown room answers 401/403 like a known one, so tokens are needed to probe names."""
    async with jwt_server() as srv, http_session() as http:
        url = f"{srv.http_url}/rooms/game-nope/state"
        async with http.get(url) as resp:
            assert resp.status == 401
        async with http.get(url, headers=bearer(token(rooms=["lobby"]))) as resp:
            assert resp.status == 403
        async with http.get(url, headers=bearer(token())) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == "no_such_room"


async def test_http_action_needs_an_agent_token_and_acts_as_its_subject() -> None:
    """POST /actions: 401 without a token, 403 for a spectator token; the client id is sub."""
    async with jwt_server() as srv, http_session() as http:
        url = f"{srv.http_url}/rooms/game-1/actions"
        body = {"client": "claimed", "aid": 1, "name": "patch", "args": [[0, ["x"], 1]]}
        async with http.post(url, json=body) as resp:
            assert resp.status == 401 and (await resp.json())["code"] == "unauthenticated"
        async with http.post(url, json=body, headers=bearer(token(role="spectator"))) as resp:
            assert resp.status == 403 and (await resp.json())["code"] == "forbidden"
        async with http.post(url, json=body, headers=bearer(token(rooms=["x"]))) as resp:
            assert resp.status == 403
        assert "game-1" not in srv.app.rooms.rooms
        async with http.post(url, json=body, headers=bearer(token(sub="bot-9"))) as resp:
            assert resp.status == 200 and await resp.json() == {"seq": 1}
        client_url = f"{srv.http_url}/rooms/game-1/clients/bot-9"
        async with http.get(client_url, headers=bearer(token(role="spectator"))) as resp:
            assert await resp.json() == {"client": "bot-9", "acked": 1}
        del body["client"]
        body["aid"], body["args"] = 2, [[0, ["x"], 2]]
        async with http.post(url, json=body, headers=bearer(token(sub="bot-9"))) as resp:
            assert await resp.json() == {"seq": 2}


# --- public spectators ---------------------------------------------------------------------


async def test_public_spectators_read_without_a_token() -> None:
    """--public-spectators: tokenless spectators read; agents still need a token."""
    async with jwt_server(public_spectators=True) as srv:
        await _seed(srv)
        async with bare(srv.room_url("game-1")) as ws:
            welcome = await ws.hello("spectator")
            assert welcome["role"] == "spectator" and welcome["client"] is None
            assert (await ws.recv_type(3))[3] == {"x": 1}
        assert await refused(srv, "game-1", "agent") == 4001
        assert await refused(srv, "game-1", "spectator", token="garbage") == 4001
        async with http_session() as http:
            async with http.get(f"{srv.http_url}/rooms/game-1/state") as resp:
                assert resp.status == 200 and (await resp.json())["state"] == {"x": 1}
            body = {"client": "c", "aid": 1, "name": "patch", "args": []}
            async with http.post(f"{srv.http_url}/rooms/game-1/actions", json=body) as resp:
                assert resp.status == 401


# --- keys and the token command ------------------------------------------------------------


def test_a_remembered_token_still_expires() -> None:
    """A token verified once (and cached) is refused once its exp has passed."""
    now = [time.time()]
    auth = JwtAuth(SECRET, "HS256", clock=lambda: now[0])
    tok = token(ttl=60)
    assert auth.authorize(tok, "game-1", "agent", None).client == "bot-1"
    assert auth.authorize(tok, "game-1", "spectator", None).client == "bot-1"
    now[0] += 3600
    with pytest.raises(Unauthenticated, match="expired"):
        auth.authorize(tok, "game-1", "agent", None)


def test_short_or_missing_secret_is_refused_at_start() -> None:
    """--auth jwt refuses to start without a secret, or with one under 32 bytes."""
    with pytest.raises(ValueError, match="STATECAST_JWT_SECRET"):
        load_key(Config(auth="jwt"), environ={})
    with pytest.raises(ValueError, match="32 bytes"):
        load_key(Config(auth="jwt", jwt_secret="short"), environ={})
    assert load_key(Config(auth="jwt"), environ={"STATECAST_JWT_SECRET": SECRET}) == SECRET


def test_rs256_verifies_with_the_public_key(tmp_path: Path) -> None:
    """RS256: tokens signed with the private key verify with the configured public key."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "pub.pem").write_bytes(pem)
    config = Config(auth="jwt", jwt_algorithm="RS256", jwt_public_key=str(tmp_path / "pub.pem"))
    auth = JwtAuth.from_config(config)
    good = token(key=private, algorithm="RS256")  # type: ignore[arg-type]
    assert auth.authorize(good, "game-1", "agent", None).client == "bot-1"

    # HS256 signed with the public key as the secret must not pass (algorithm confusion).
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    claims = {"sub": "x", "role": "agent", "rooms": ["*"], "exp": int(time.time()) + 60}
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    signature = b64(hmac.new(pem, signing_input, hashlib.sha256).digest())
    forged = (signing_input + b"." + signature).decode()
    with pytest.raises(Unauthenticated):
        auth.authorize(forged, "game-1", "agent", None)


def test_serve_without_a_key_exits_with_a_message(tmp_path: Path) -> None:
    """`statecast serve --auth jwt` with no secret, or an unreadable key, exits 2 and says why."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATECAST_")}
    for extra, needle in (
        ([], "STATECAST_JWT_SECRET"),
        (["--jwt-algorithm", "RS256", "--jwt-public-key", str(tmp_path / "nope.pem")], "key"),
    ):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "statecast.server",
                "serve",
                "--auth",
                "jwt",
                "--port",
                "0",
                *extra,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 6,
            check=False,
        )
        assert done.returncode == 2 and needle in done.stderr, done.stderr


def run_token_cli(*args: str, secret: str | None = SECRET) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATECAST_")}
    if secret is not None:
        env["STATECAST_JWT_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "statecast.server", "token", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 6,
        check=False,
    )


def test_token_command_mints_a_token_the_server_accepts() -> None:
    """`statecast token` prints a token signed with STATECAST_JWT_SECRET carrying the claims."""
    done = run_token_cli(
        "--sub", "bot-3", "--role", "agent", "--rooms", "game-*,lobby", "--ttl", "2h"
    )
    assert done.returncode == 0, done.stderr
    minted = done.stdout.strip()
    assert done.stdout == minted + "\n"
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "bot-3" and claims["role"] == "agent"
    assert claims["rooms"] == ["game-*", "lobby"]
    assert 7190 <= claims["exp"] - time.time() <= 7210
    auth = JwtAuth(SECRET, "HS256")
    assert auth.authorize(minted, "lobby", "agent", None).client == "bot-3"


def test_token_command_signs_rs256_with_a_private_key(tmp_path: Path) -> None:
    """`statecast token --algorithm RS256 --private-key` mints what the public key verifies."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "signer.pem").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    args = ["--sub", "k", "--role", "agent", "--rooms", "r", "--algorithm", "RS256"]
    done = run_token_cli(*args, "--private-key", str(tmp_path / "signer.pem"), secret=None)
    assert done.returncode == 0, done.stderr
    auth = JwtAuth(public.decode(), "RS256")
    assert auth.authorize(done.stdout.strip(), "r", "agent", None).client == "k"


def test_token_command_without_a_secret_fails_cleanly() -> None:
    """Without a secret the command exits 2 with a message and prints no token."""
    done = run_token_cli("--sub", "a", "--role", "spectator", "--rooms", "*", secret=None)
    assert done.returncode == 2 and done.stdout == "" and "STATECAST_JWT_SECRET" in done.stderr
    flag = run_token_cli(
        "--sub", "a", "--role", "spectator", "--rooms", "*", "--secret", SECRET, secret=None
    )
    assert flag.returncode == 0
    assert jwt.decode(flag.stdout.strip(), SECRET, algorithms=["HS256"])["role"] == "spectator"
