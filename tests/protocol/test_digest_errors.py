"""statecast.protocol.digest against RFC 8785's examples, and the error hints (no sockets)."""

from __future__ import annotations

import hashlib

import pytest

from statecast.protocol import errors
from statecast.protocol.digest import canonical_json, state_digest

# RFC 8785, section 3.2.2 ("Serialization of Primitive Data Types"): input and canonical output.
RFC8785_INPUT = {
    "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
    "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
    "literals": [None, True, False],
}
RFC8785_OUTPUT = (
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
)

# RFC 8785, section 3.2.3 ("Sorting of Object Properties"): keys sort by UTF-16 code units.
RFC8785_SORTING = {
    "\u20ac": "Euro Sign",
    "\r": "Carriage Return",
    "\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One",
    "\U0001f600": "Emoji: Grinning Face",
    "\u0080": "Control",
    "\u00f6": "Latin Small Letter O With Diaeresis",
}
RFC8785_SORTED_KEYS = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_canonical_json_matches_rfc8785_primitives_example() -> None:
    """Numbers, strings and literals serialize exactly as RFC 8785's worked example."""
    assert canonical_json(RFC8785_INPUT) == RFC8785_OUTPUT.encode("utf-8")


def test_digest_is_sha256_of_the_hand_written_canonical_form() -> None:
    """The digest is lowercase hex SHA-256 of the canonical UTF-8 bytes."""
    expected = hashlib.sha256(RFC8785_OUTPUT.encode("utf-8")).hexdigest()
    assert state_digest(RFC8785_INPUT) == expected
    assert expected == expected.lower() and len(expected) == 64


def test_keys_sort_by_utf16_code_units() -> None:
    """Map keys sort as RFC 8785 says: by UTF-16 code units, so the emoji precedes U+FB33."""
    body = "".join(
        f'"{k}":"{v}",'
        for k, v in ((k if k != "\r" else "\\r", RFC8785_SORTING[k]) for k in RFC8785_SORTED_KEYS)
    )
    assert canonical_json(RFC8785_SORTING) == ("{" + body[:-1] + "}").encode("utf-8")


def test_empty_state_digest() -> None:
    """The initial state {} digests as SHA-256 of the two bytes '{}'."""
    assert state_digest({}) == hashlib.sha256(b"{}").hexdigest()


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.MalformedMessage, 1007),
        (errors.MessageTooLarge, 1009),
        (errors.OutOfOrder, 4000),
        (errors.Unauthenticated, 4001),
        (errors.NotPermitted, 4003),
        (errors.NoSuchRoom, 4004),
        (errors.SlowConsumer, 4008),
        (errors.RateLimitExceeded, 4029),
    ],
)
def test_protocol_violations_carry_their_close_code(
    cls: type[errors.ProtocolViolation], code: int
) -> None:
    """Each protocol violation names its close code in docs/protocol.md's closing table (§8.1)."""
    exc = cls("why")
    assert exc.close_code == code and exc.reason == "why" and str(exc) == "why"
    assert isinstance(exc, errors.StatecastError)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("invalid", 400),
        ("unknown_action", 400),
        ("forbidden", 403),
        ("conflict", 409),
        ("too_large", 413),
        ("rate_limited", 429),
        ("unavailable", 503),
        ("something_new", 400),
    ],
)
def test_rejection_maps_to_its_http_status(code: str, status: int) -> None:
    """A Rejection's ERROR code maps to its HTTP status in docs/protocol.md §5.9 (400 otherwise)."""
    exc = errors.Rejection(code, "msg")
    assert (exc.code, exc.message, exc.http_status) == (code, "msg", status)
    assert str(exc) == f"{code}: msg"


def test_error_codes_and_retryable_closes() -> None:
    """The ERROR codes of docs/protocol.md §5.9; 1001, 1011, 4008 and 4029 are retryable."""
    assert {
        "forbidden",
        "invalid",
        "unknown_action",
        "rate_limited",
        "too_large",
        "conflict",
        "unavailable",
    } == errors.ERROR_CODES
    assert {1001, 1011, 4008, 4029} <= errors.RETRYABLE_CLOSE_CODES
    assert not {1003, 1007, 1009, 4000, 4001, 4003, 4004} & errors.RETRYABLE_CLOSE_CODES
    closed = errors.ServerClosed(4004, "no room")
    assert (closed.code, closed.reason, str(closed)) == (
        4004,
        "no room",
        "closed by server: 4004 no room",
    )
