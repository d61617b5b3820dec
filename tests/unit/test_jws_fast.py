"""The HS* fast path accepts exactly what PyJWT accepts, and declines the rest."""

from __future__ import annotations

import random
import time
from typing import Any

import jwt
import pytest

from core.jws_fast import HsFastPath
from tests.tokens import SECRET, good_claims, make_token, rsa_keypair, tamper_payload

FAST = HsFastPath({"HS256": SECRET})


def _pyjwt(token: str) -> dict[str, Any] | None:
    try:
        out = jwt.decode(
            token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_aud": False}
        )
    except jwt.PyJWTError:
        return None
    return dict(out)


def _corpus() -> list[str]:
    good = make_token(good_claims("alice"))
    _priv, pub = rsa_keypair()
    now = int(time.time())
    tokens = [
        good,
        make_token(good_claims("bob", exp=now - 100)),  # expiry is not the fast path's job
        make_token(good_claims("alice"), secret=pub),
        make_token(good_claims("alice"), secret=SECRET + "x"),
        make_token(good_claims("alice"), alg="HS512", secret=SECRET * 2),
        make_token(good_claims("alice"), headers={"crit": ["b64"], "b64": False}),
        make_token(good_claims("alice"), headers={"kid": "k1", "typ": "JWT"}),
        make_token(good_claims("alice"), headers={"kid": 7}),
        make_token(good_claims("alice"), headers={"kid": None}),
        tamper_payload(good, sub="mallory"),
        good + ".",
        good.replace(".", "", 1),
        "a.b.c",
        "",
        "...",
    ]
    # Python's base64 decoder maps '+' like '-' and '/' like '_', and skips '=':
    # a token so altered carries the same signature bytes, but PyJWT refuses it.
    for old, new in (("-", "+"), ("_", "/")):
        i = good.rfind(old)
        if i > 0:
            tokens.append(good[:i] + new + good[i + 1 :])
    tokens += [good + "=", good + "==", good[:-1] + "=" + good[-1]]
    head, body, sig = good.split(".")
    tokens += [f"{head}.{body}=.{sig}", f"{head}=.{body}.{sig}", f"{head}.{body}.{sig}A"]
    rng = random.Random(7)
    for _ in range(400):
        chars = list(good)
        i = rng.randrange(len(chars))
        chars[i] = rng.choice("ABCxyz019-_.=+/")
        tokens.append("".join(chars))
    return tokens


@pytest.mark.parametrize("token", _corpus())
def test_fast_path_never_accepts_what_pyjwt_refuses(token: str) -> None:
    fast = FAST.decode(token)
    if fast is not None:
        assert _pyjwt(token) == fast


def test_non_canonical_alphabets_are_left_to_pyjwt() -> None:
    # a signature holding both '-' and '_' (jti is random: try until one does)
    for _ in range(200):
        good = make_token(good_claims("alice"))
        head, body, sig = good.split(".")
        if "-" in sig and "_" in sig:
            break
    else:
        raise AssertionError("no signature with both '-' and '_' in 200 tokens")
    for old, new in (("-", "+"), ("_", "/")):
        altered = f"{head}.{body}.{sig.replace(old, new)}"
        # the same signature bytes to Python's decoder, refused by PyJWT
        assert _pyjwt(altered) is None
        assert FAST.decode(altered) is None
    assert FAST.decode(good + "=") is None
    assert FAST.decode(good) is not None
    # the same signature bytes with non-zero unused bits in its last character
    for last in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        odd = f"{head}.{body}.{sig[:-1]}{last}"
        if odd != good and _pyjwt(odd) is None:
            assert FAST.decode(odd) is None
    numeric_kid = make_token(good_claims("alice"), headers={"kid": 7})
    assert _pyjwt(numeric_kid) is None and FAST.decode(numeric_kid) is None


def test_fast_path_takes_the_common_case() -> None:
    token = make_token(good_claims("alice"))
    assert FAST.decode(token) == _pyjwt(token)
    kid = make_token(good_claims("alice"), headers={"kid": "k1"})
    assert FAST.decode(kid) is not None


def test_fast_path_declines_unusual_headers_and_other_algorithms() -> None:
    crit = make_token(good_claims("alice"), headers={"crit": ["exp"]})
    assert FAST.decode(crit) is None
    hs512 = make_token(good_claims("alice"), alg="HS512", secret=SECRET * 2)
    assert FAST.decode(hs512) is None  # not an allowed algorithm here
    assert not HsFastPath({})
