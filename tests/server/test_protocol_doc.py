"""The worked session in docs/protocol.md §13, checked against its own bytes and a real server.

§13 shows one session as the bytes of every WebSocket message, each in a fenced
``frame`` block: a direction line, then for each message a ``=`` line with the
message as JSON and its bytes in hex, annotated. These tests read those blocks
out of the document and check that

* the hex decodes to exactly the messages the ``=`` lines state;
* the annotations are the ones :func:`annotate` writes for those bytes;
* sending the client's frames to a real server (the epoch swapped for the live
  one) draws server frames that are byte for byte the documented ones (the
  live epoch swapped back).

So the example cannot drift from the server or from itself. Alongside, every
section number cited in the code, the tests and the document must be a heading
of the document, so a renumbering cannot leave a citation pointing nowhere.

To record the example afresh against a real server, run
``python -m tests.server.test_protocol_doc --write`` from the repository root:
it rewrites §13's frame blocks in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets

from statecast.protocol.ops import apply_wire_ops
from tests.helpers import TIMEOUT, RunningServer, http_session, pack, running_server, unpack

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
ROOM = "example"

#: The client's side of the session, in order; the second HELLO resumes from (epoch, 1).
HELLO_BODY = {"v": 1, "role": "agent", "client": "alice"}
HELLO = [1, HELLO_BODY]
ACTION = [4, 1, "patch", [[0, ["cells", "a1"], "x"]]]
#: The change another agent makes over HTTP while alice is disconnected.
MEANWHILE = {"client": "bob", "aid": 1, "name": "patch", "args": [[0, ["cells", "b2"], "o"]]}

CLIENT_TO_SERVER = "client → server"
SERVER_TO_CLIENT = "server → client"
TYPE_NAMES = {
    1: "HELLO",
    2: "WELCOME",
    3: "SNAPSHOT",
    4: "ACTION",
    5: "DIFF",
    6: "RESYNC",
    7: "ACK",
    8: "ERROR",
}
FIELDS = {
    1: ["body"],
    2: ["body"],
    3: ["epoch", "seq", "state"],
    4: ["aid", "name", "args"],
    5: ["seq", "ops"],
    6: ["epoch", "seq"],
    7: ["aid", "seq"],
    8: ["aid", "code", "message"],
}
OP_NAMES = {0: "set", 1: "del", 2: "ins"}
LABEL_COLUMN = 48


@dataclass
class Frame:
    """One WebSocket message of the session: who sent it and its payload."""

    direction: str
    payload: bytes


# --- annotated hex ------------------------------------------------------------------------------


class _Reader:
    """Walks msgpack bytes item by item (the formats a statecast session uses)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        if len(chunk) != n:
            raise ValueError("truncated msgpack")
        self.pos += n
        return chunk

    def head(self) -> tuple[str, Any, bytes]:
        """The next item's header: (kind, value or length, its bytes so far)."""
        start = self.pos
        b = self.take(1)[0]
        kind: str
        value: Any
        if b <= 0x7F or b >= 0xE0:
            kind, value = "int", b if b <= 0x7F else b - 0x100
        elif 0x80 <= b <= 0x8F:
            kind, value = "map", b & 0x0F
        elif 0x90 <= b <= 0x9F:
            kind, value = "array", b & 0x0F
        elif 0xA0 <= b <= 0xBF:
            kind, value = "str", self.take(b & 0x1F).decode()
        elif b == 0xC0:
            kind, value = "nil", None
        elif b in (0xC2, 0xC3):
            kind, value = "bool", b == 0xC3
        elif b in (0xCC, 0xCD, 0xCE, 0xCF, 0xD0, 0xD1, 0xD2, 0xD3):
            size = 1 << ((b - 0xCC) % 4)
            kind, value = "int", int.from_bytes(self.take(size), "big", signed=b >= 0xD0)
        elif b == 0xCB:
            kind, value = "float", struct.unpack(">d", self.take(8))[0]
        elif b in (0xD9, 0xDA):
            size = int.from_bytes(self.take(1 if b == 0xD9 else 2), "big")
            kind, value = "str", self.take(size).decode()
        elif b in (0xDC, 0xDE):
            size = int.from_bytes(self.take(2), "big")
            kind, value = ("array" if b == 0xDC else "map"), size
        else:
            raise ValueError(f"format 0x{b:02x} is not used in the example")
        return kind, value, self.data[start : self.pos]


def _scalar(kind: str, value: Any) -> str:
    if kind == "nil":
        return "nil"
    if kind in ("str", "bool"):
        return json.dumps(value)
    return repr(value)


def _line(depth: int, raw: bytes, label: str) -> str:
    hexes = "  " * depth + raw.hex(" ")
    return f"{hexes.ljust(LABEL_COLUMN - 2)}  {label}"


def _walk(r: _Reader, depth: int, label: str, role: str) -> Iterator[str]:
    """Lines for one item; ``label`` names it, ``role`` says how to name its children."""
    kind, value, raw = r.head()
    prefix = f"{label}: " if label else ""
    if kind not in ("array", "map"):
        shown = _scalar(kind, value)
        if role == "type":
            shown = f"type {value} ({TYPE_NAMES.get(value, '?')})"
        elif role == "op kind":
            shown = f"kind {value} ({OP_NAMES.get(value, '?')})"
        yield _line(depth, raw, prefix + shown)
        return
    yield _line(depth, raw, f"{prefix}{kind} of {value}")
    if kind == "map":
        for _ in range(value):
            key_kind, key, key_raw = r.head()
            assert key_kind == "str", "maps in the example have str keys"
            start = r.pos
            child_kind, child, child_raw = r.head()
            fits = 2 * (depth + 1) + 3 * (len(key_raw) + len(child_raw)) <= LABEL_COLUMN - 2
            if child_kind in ("array", "map") or not fits:
                r.pos = start
                yield _line(depth + 1, key_raw, json.dumps(key) + ":")
                yield from _walk(r, depth + 2, "", "value")
            else:
                both = key_raw + child_raw
                yield _line(depth + 1, both, f"{json.dumps(key)}: {_scalar(child_kind, child)}")
        return
    if role == "message":
        start = r.pos
        _, mtype, _ = r.head()
        r.pos = start
        yield from _walk(r, depth + 1, "", "type")
        for name in FIELDS.get(mtype, [])[: value - 1]:
            child_role = {"ops": "ops", "args": "ops" if mtype == 4 else "value"}.get(name, "value")
            yield from _walk(r, depth + 1, name, child_role)
        return
    for i in range(value):
        if role == "ops":
            yield from _walk(r, depth + 1, "", "op")
        elif role == "op":
            names = ["", "path", "value"]
            yield from _walk(r, depth + 1, names[i] if i < 3 else "", "op kind" if i == 0 else "")
        else:
            yield from _walk(r, depth + 1, "", "value")


def annotate(payload: bytes) -> list[str]:
    """Every message of ``payload``: its JSON form on a ``=`` line, then its annotated bytes."""
    lines = []
    r = _Reader(payload)
    for message in unpack(payload):
        lines.append("= " + json.dumps(message, ensure_ascii=False))
        lines.extend(_walk(r, 0, "", "message"))
    assert r.pos == len(payload)
    return lines


def render(frame: Frame) -> str:
    """One ``frame`` block as §13 shows it."""
    body = "\n".join([frame.direction, *annotate(frame.payload)])
    return f"```frame\n{body}\n```"


# --- reading the document -----------------------------------------------------------------------

_BLOCK = re.compile(r"^```frame\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_HEX = re.compile(r"^\s*([0-9a-f]{2}(?: [0-9a-f]{2})*)(?: {2,}\S.*)?$")


@dataclass
class DocFrame:
    direction: str
    payload: bytes
    messages: list[Any]
    text: str


def doc_frames(text: str) -> list[DocFrame]:
    """Every ``frame`` block of the document, in order."""
    frames = []
    for block in _BLOCK.findall(text):
        lines = block.rstrip("\n").split("\n")
        direction, rest = lines[0], lines[1:]
        assert direction in (CLIENT_TO_SERVER, SERVER_TO_CLIENT), direction
        payload = bytearray()
        messages = []
        for line in rest:
            if line.startswith("= "):
                messages.append(json.loads(line[2:]))
                continue
            match = _HEX.match(line)
            assert match, f"not a line of annotated hex: {line!r}"
            payload += bytes.fromhex(match.group(1))
        frames.append(DocFrame(direction, bytes(payload), messages, block.rstrip("\n")))
    return frames


def doc_epoch(frames: list[DocFrame]) -> str:
    welcome = frames[1].messages[0]
    assert welcome[0] == 2
    return str(welcome[1]["epoch"])


# --- the session --------------------------------------------------------------------------------


async def run_session(
    server: RunningServer, client: list[bytes], shown: str
) -> tuple[list[Frame], str]:
    """Play the session against ``server``; return every frame, each way, and the live epoch.

    ``client`` holds the client's four frames: HELLO, ACTION, the resuming HELLO
    and the repeated ACTION. The resuming HELLO names the epoch ``shown``, which
    is swapped for the live epoch before sending; server frames come back with
    the live epoch swapped for ``shown``.
    """
    hello, action, resume, again = client
    frames: list[Frame] = []

    def swap(data: bytes, old: str, new: str) -> bytes:
        assert len(old) == len(new), "the example assumes 16-character epochs"
        return data.replace(old.encode(), new.encode())

    async def exchange(ws: Any, data: bytes) -> bytes:
        await ws.send(data)
        frames.append(Frame(CLIENT_TO_SERVER, data))
        reply = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert isinstance(reply, bytes)
        return bytes(reply)

    url = server.room_url(ROOM)
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        welcome = await exchange(ws, hello)
        live = unpack(welcome)[0][1]["epoch"]
        frames.append(Frame(SERVER_TO_CLIENT, swap(welcome, live, shown)))
        frames.append(Frame(SERVER_TO_CLIENT, swap(await exchange(ws, action), live, shown)))
        ws.transport.abort()  # the drop: the TCP connection is gone, no close handshake
    async with (
        http_session() as http,
        http.post(f"{server.http_url}/rooms/{ROOM}/actions", json=MEANWHILE) as r,
    ):
        assert r.status == 200 and await r.json() == {"seq": 2}
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        reply = await exchange(ws, swap(resume, shown, live))
        frames[-1].payload = resume  # record the client's frame as the document shows it
        frames.append(Frame(SERVER_TO_CLIENT, swap(reply, live, shown)))
        frames.append(Frame(SERVER_TO_CLIENT, swap(await exchange(ws, again), live, shown)))
    return frames, live


def client_frames(epoch: str) -> list[bytes]:
    resume = [1, {**HELLO_BODY, "resume": [epoch, 1]}]
    return [pack(HELLO), pack(ACTION), pack(resume), pack(ACTION)]


# --- the tests ----------------------------------------------------------------------------------


def test_example_hex_decodes_to_the_documented_messages() -> None:
    """§13: each frame's hex is exactly the msgpack stream of the messages shown above it."""
    frames = doc_frames(DOC.read_text())
    assert [f.direction for f in frames] == [CLIENT_TO_SERVER, SERVER_TO_CLIENT] * 4
    for frame in frames:
        assert unpack(frame.payload) == frame.messages
        assert pack(*frame.messages) == frame.payload  # smallest encodings, as msgpack packs
    epoch = doc_epoch(frames)
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", epoch)
    assert [f.payload for f in frames if f.direction == CLIENT_TO_SERVER] == client_frames(epoch)
    assert json.dumps(MEANWHILE) in DOC.read_text(), "§13 names the other agent's change"


def test_example_annotations_describe_their_bytes() -> None:
    """§13: every block is exactly what annotate() writes for its bytes (no hand-edited drift)."""
    for frame in doc_frames(DOC.read_text()):
        assert render(Frame(frame.direction, frame.payload)) == f"```frame\n{frame.text}\n```"


def test_example_names_the_websocket_header_of_the_first_server_frame() -> None:
    """§13: the stated length and unmasked header (0x82, length) fit the first server frame."""
    text = DOC.read_text()
    match = re.search(r"\((\d+) bytes\) travels as `82 ([0-9a-f]{2})`", text)
    assert match, "§13 states the first server frame's WebSocket header"
    size = len(doc_frames(text)[1].payload)
    assert size < 126  # a one-byte length
    assert (int(match.group(1)), int(match.group(2), 16)) == (size, size)


def test_every_cited_section_exists() -> None:
    """Every "§N" or "§N.M" cited in the code, the tests or the document is a heading of it."""
    text = DOC.read_text()
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.MULTILINE))
    root = DOC.parents[1]
    sources = [
        DOC,
        *(p for d in ("protocol", "server", "loadtest", "tests") for p in (root / d).rglob("*.py")),
    ]
    cited = {
        (source.relative_to(root).as_posix(), section)
        for source in sources
        for section in re.findall(r"§(\d+(?:\.\d+)?)", source.read_text())
    }
    assert {section for _, section in cited} >= {"5.2", "6.2", "8.1", "13"}, "citations are found"
    assert sorted((src, sec) for src, sec in cited if sec not in headings) == []


def test_example_states_the_sizes_that_chose_replay() -> None:
    """§13.3 (§6.2): the replayed DIFF and the SNAPSHOT it beat have the sizes stated."""
    text = DOC.read_text()
    match = re.search(
        r"DIFF \((\d+) bytes\) is smaller than a SNAPSHOT at\s+seq 2 \((\d+) bytes", text
    )
    assert match, "§13.3 states the sizes"
    frames = doc_frames(text)
    state: dict[str, Any] = {}
    for diff_message in (frames[3].messages[0], frames[5].messages[1]):
        apply_wire_ops(state, diff_message[2])
    diff = pack(frames[5].messages[1])
    snapshot = pack([3, doc_epoch(frames), 2, state])
    assert (int(match.group(1)), int(match.group(2))) == (len(diff), len(snapshot))
    assert len(diff) < len(snapshot)


async def test_example_session_replays_against_a_real_server() -> None:
    """§13: the client's frames, sent to a real server, draw the documented server frames."""
    frames = doc_frames(DOC.read_text())
    epoch = doc_epoch(frames)
    client = [f.payload for f in frames if f.direction == CLIENT_TO_SERVER]
    async with running_server() as server:
        played, _ = await run_session(server, client, epoch)
    assert [(f.direction, f.payload) for f in played] == [(f.direction, f.payload) for f in frames]


async def _record() -> list[str]:
    placeholder = "E" * 16  # the live epoch is known only once the server has answered
    async with running_server() as server:
        frames, epoch = await run_session(server, client_frames(placeholder), placeholder)
    for frame in frames:
        frame.payload = frame.payload.replace(placeholder.encode(), epoch.encode())
    return [render(f) for f in frames]


def _write(blocks: list[str]) -> None:
    """Replace the document's frame blocks, in order, with freshly recorded ones."""
    text = DOC.read_text()
    found = _BLOCK.findall(text)
    assert len(found) == len(blocks), f"§13 has {len(found)} frame blocks, not {len(blocks)}"
    pieces = iter(blocks)
    DOC.write_text(_BLOCK.sub(lambda _: next(pieces), text))


if __name__ == "__main__":
    with contextlib.redirect_stdout(sys.stderr):
        recorded = asyncio.run(_record())
    if sys.argv[1:] == ["--write"]:
        _write(recorded)
    else:
        print("\n\n".join(recorded))
