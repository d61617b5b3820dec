"""core.passwords: scrypt hashes for the users file."""

from __future__ import annotations

import base64
import hashlib

import pytest

from core.passwords import dummy_hash, hash_password, verify_password


def test_round_trip() -> None:
    encoded = hash_password("correct horse")
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct hors", encoded)
    assert not verify_password("", encoded)


def test_format_and_parameters() -> None:
    encoded = hash_password("pw")
    scheme, n, r, p, salt, key = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    salt_bytes = base64.b64decode(salt, validate=True)
    key_bytes = base64.b64decode(key, validate=True)
    assert (len(salt_bytes), len(key_bytes)) == (16, 32)
    # The key is plain scrypt, so other tools can check it.
    assert key_bytes == hashlib.scrypt(b"pw", salt=salt_bytes, n=2**14, r=8, p=1, dklen=32)


def test_each_hash_has_its_own_salt() -> None:
    first, second = hash_password("same"), hash_password("same")
    assert first != second
    assert verify_password("same", first) and verify_password("same", second)


def test_unicode_is_normalised() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert verify_password(decomposed, hash_password(composed))


def test_other_parameters_in_a_stored_hash_still_verify() -> None:
    salt = b"0123456789abcdef"
    key = hashlib.scrypt(b"pw", salt=salt, n=2**10, r=4, p=2, dklen=48)
    encoded = f"scrypt$1024$4$2${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    assert verify_password("pw", encoded)
    assert not verify_password("pW", encoded)


def _valid_parts() -> list[str]:
    return hash_password("pw").split("$")


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, "bcrypt"),
        (1, "16385"),  # not a power of two
        (1, str(2**21)),  # too costly
        (1, "-16384"),
        (1, "\uff11\uff16\uff13\uff18\uff14"),  # full-width digits
        (2, "0"),
        (2, "x"),
        (3, "99"),
        (4, "***"),
        (4, ""),
        (5, "not base64!"),
        (5, base64.b64encode(b"short").decode()),
    ],
)
def test_malformed_hash_is_false(index: int, value: str) -> None:
    parts = _valid_parts()
    parts[index] = value
    assert verify_password("pw", "$".join(parts)) is False


@pytest.mark.parametrize("encoded", ["", "scrypt", "scrypt$16384$8$1$abc", "$" * 5, "x" * 200])
def test_garbage_is_false(encoded: str) -> None:
    assert verify_password("pw", encoded) is False


def test_tampered_key_is_false() -> None:
    parts = _valid_parts()
    key = bytearray(base64.b64decode(parts[5]))
    key[0] ^= 1
    parts[5] = base64.b64encode(bytes(key)).decode()
    assert verify_password("pw", "$".join(parts)) is False


def test_dummy_hash_is_valid_cached_and_matches_nothing_guessable() -> None:
    encoded = dummy_hash()
    assert encoded is dummy_hash()
    assert encoded.startswith("scrypt$16384$8$1$")
    assert not verify_password("", encoded)
    assert not verify_password("password", encoded)
