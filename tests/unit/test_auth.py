"""core.auth: every refusal rule with its reason, accepted tokens, issuance round-trips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt import api_jws

from core.auth import (
    AuthError,
    Claims,
    JwtSettings,
    TokenIssuer,
    TokenType,
    TokenVerifier,
    room_allowed,
)
from core.clock import ManualClock
from tests.tokens import (
    SECRET,
    b64url,
    ec_keypair,
    ed25519_keypair,
    good_claims,
    make_token,
    rsa_keypair,
    tamper_payload,
    unsigned_none_token,
)

LEEWAY = 5.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def settings(**overrides: Any) -> JwtSettings:
    base = JwtSettings(algorithms=("HS256",), secret=SECRET, leeway_s=LEEWAY)
    return dataclasses.replace(base, **overrides)


def verifier(clock: ManualClock, **overrides: Any) -> TokenVerifier:
    return TokenVerifier(settings(**overrides), clock)


def claims_at(clock: ManualClock, **extra: Any) -> dict[str, Any]:
    return good_claims(now=clock.wall(), **extra)


def refused(v: TokenVerifier, token: Any, reason: str, expected_type: TokenType = "access") -> None:
    with pytest.raises(AuthError) as info:
        v.verify(token, expected_type)
    assert info.value.reason == reason
    # Safe to log: no token text in the message, no chained PyJWT error quoting it.
    if isinstance(token, str) and token:
        assert token not in str(info.value)
        for segment in token.split("."):
            if len(segment) > 3:
                assert segment not in str(info.value)
    assert info.value.__cause__ is None


# -- accepted -------------------------------------------------------------------------


def test_hs256_token_is_accepted_with_its_claims(clock: ManualClock) -> None:
    raw = claims_at(clock, sub="alice", nbf=int(clock.wall()), role="admin")
    got = verifier(clock).verify(make_token(raw))
    assert got == Claims(
        sub="alice",
        exp=raw["exp"],
        jti=raw["jti"],
        iat=raw["iat"],
        nbf=raw["nbf"],
        role="admin",
    )
    assert room_allowed(got, "anything")


@pytest.mark.parametrize(
    ("alg", "keypair"),
    [
        ("RS256", rsa_keypair),
        ("PS256", rsa_keypair),
        ("ES256", ec_keypair),
        ("EdDSA", ed25519_keypair),
    ],
)
def test_asymmetric_tokens_are_accepted(clock: ManualClock, alg: str, keypair: Any) -> None:
    private, public = keypair()
    v = verifier(clock, algorithms=(alg,), secret=None, public_key=public)
    assert v.verify(make_token(claims_at(clock, sub="bob"), private, alg)).sub == "bob"


def test_rooms_claim_is_returned_as_a_tuple(clock: ManualClock) -> None:
    token = make_token(claims_at(clock, rooms=["lobby", "team-*"]))
    assert verifier(clock).verify(token).rooms == ("lobby", "team-*")


def test_aud_list_containing_the_audience_is_accepted(clock: ManualClock) -> None:
    token = make_token(claims_at(clock, aud=["other", "squall"]))
    assert verifier(clock, audience="squall").verify(token).sub == "alice"


def test_aud_is_ignored_when_no_audience_is_configured(clock: ManualClock) -> None:
    assert verifier(clock).verify(make_token(claims_at(clock, aud="whatever"))).sub == "alice"


def test_typ_access_is_accepted_as_access(clock: ManualClock) -> None:
    assert verifier(clock).verify(make_token(claims_at(clock, typ="access"))).typ == "access"


# -- algorithm ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused_even_when_configured(clock: ManualClock, alg: str) -> None:
    v = verifier(clock, algorithms=("HS256", "none"))
    assert v.algorithms == ("HS256",)
    refused(v, unsigned_none_token(claims_at(clock), alg=alg), "algorithm")


def test_hs256_signed_with_public_pem_refused_by_rs256_only_verifier(clock: ManualClock) -> None:
    _, public = rsa_keypair()
    v = verifier(clock, algorithms=("RS256",), secret=None, public_key=public)
    refused(v, make_token(claims_at(clock), public, "HS256"), "algorithm")


def test_hs256_signed_with_public_pem_refused_by_mixed_verifier(clock: ManualClock) -> None:
    # HS tokens are checked only with the secret, never with the PEM.
    _, public = rsa_keypair()
    v = verifier(clock, algorithms=("HS256", "RS256"), public_key=public)
    refused(v, make_token(claims_at(clock), public, "HS256"), "bad_signature")
    assert v.verify(make_token(claims_at(clock))).sub == "alice"


@pytest.mark.parametrize(
    ("alg", "key"),
    [
        ("HS512", SECRET),
        ("HS384", SECRET),
        ("RS256", rsa_keypair()[0]),
        ("ES256", ec_keypair()[0]),
        ("EdDSA", ed25519_keypair()[0]),
    ],
)
def test_algorithm_outside_allowlist_is_refused(clock: ManualClock, alg: str, key: str) -> None:
    refused(verifier(clock), make_token(claims_at(clock), key, alg), "algorithm")


def test_header_lying_about_alg_fails_signature(clock: ManualClock) -> None:
    long_secret = "z" * 64  # HS512 needs 64 bytes
    token = make_token(claims_at(clock), long_secret, "HS256", headers={"alg": "HS512"})
    v = verifier(clock, algorithms=("HS256", "HS512"), secret=long_secret)
    refused(v, token, "bad_signature")
    assert v.verify(make_token(claims_at(clock), long_secret, "HS512")).sub == "alice"


@pytest.mark.parametrize("header", [{"typ": "JWT"}, {"alg": 256}, {"alg": None}])
def test_missing_or_non_string_alg_is_refused(clock: ManualClock, header: Any) -> None:
    token = f"{b64url(json.dumps(header).encode())}.{b64url(b'{}')}.c2ln"
    refused(verifier(clock), token, "algorithm")


def test_token_from_another_asymmetric_key_fails_signature(clock: ManualClock) -> None:
    _, public = rsa_keypair()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    v = verifier(clock, algorithms=("RS256",), secret=None, public_key=public)
    refused(v, make_token(claims_at(clock), other_pem, "RS256"), "bad_signature")


# -- signature, structure -------------------------------------------------------------


@pytest.mark.parametrize("changes", [{"sub": "mallory"}, {"exp": 9_999_999_999}, {"role": "admin"}])
def test_tampered_payload_is_refused(clock: ManualClock, changes: dict[str, Any]) -> None:
    token = tamper_payload(make_token(claims_at(clock)), **changes)
    refused(verifier(clock), token, "bad_signature")


def test_tampered_asymmetric_payload_is_refused(clock: ManualClock) -> None:
    private, public = ec_keypair()
    v = verifier(clock, algorithms=("ES256",), secret=None, public_key=public)
    token = tamper_payload(make_token(claims_at(clock), private, "ES256"), sub="mallory")
    refused(v, token, "bad_signature")


def test_token_signed_with_another_secret_is_refused(clock: ManualClock) -> None:
    token = make_token(claims_at(clock), "another-secret-" + "y" * 40)
    refused(verifier(clock), token, "bad_signature")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "....",
        "eyJ.eyJ.sig",
        "é.é.é",
        "!!!!.!!!!.!!!!",
        f"{b64url(b'[1]')}.{b64url(b'{}')}.c2ln",
        f"{b64url(b'not json')}.{b64url(b'{}')}.c2ln",
        None,
        b"bytes.are.not.str",
        42,
    ],
)
def test_garbage_is_malformed(clock: ManualClock, token: Any) -> None:
    refused(verifier(clock), token, "malformed")


def test_signed_non_object_payload_is_malformed(clock: ManualClock) -> None:
    token = api_jws.encode(b"[1,2]", SECRET, algorithm="HS256")
    refused(verifier(clock), token, "malformed")


def test_detached_payload_header_is_malformed(clock: ManualClock) -> None:
    token = make_token(claims_at(clock), headers={"b64": False, "crit": ["b64"]})
    header, _, sig = token.split(".")
    refused(verifier(clock), f"{header}..{sig}", "malformed")


@pytest.mark.parametrize(
    "extra",
    [
        {"rooms": "lobby"},
        {"rooms": ["lobby", 3]},
        {"rooms": None},
        {"role": 1},
        {"typ": 1},
        {"fam": ["x"]},
        {"iat": "yesterday"},
        {"nbf": True},
    ],
)
def test_ill_typed_optional_claims_are_malformed(clock: ManualClock, extra: dict[str, Any]) -> None:
    refused(verifier(clock), make_token(claims_at(clock, **extra)), "malformed")


# -- required claims ------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["exp", "jti", "sub"])
def test_missing_required_claim_is_refused(clock: ManualClock, claim: str) -> None:
    raw = claims_at(clock)
    del raw[claim]
    refused(verifier(clock), make_token(raw), "missing_claim")


@pytest.mark.parametrize(
    "extra",
    [
        {"sub": ""},
        {"sub": 123},
        {"jti": ""},
        {"jti": 7},
        {"exp": "soon"},
        {"exp": None},
        {"exp": True},
        {"exp": float("inf")},
        {"exp": float("nan")},
    ],
)
def test_ill_typed_required_claim_is_refused(clock: ManualClock, extra: dict[str, Any]) -> None:
    refused(verifier(clock), make_token(claims_at(clock, **extra)), "missing_claim")


# -- time -----------------------------------------------------------------------------


def test_exp_inside_leeway_is_accepted_and_past_it_refused(clock: ManualClock) -> None:
    v = verifier(clock)
    token = make_token(claims_at(clock, ttl=300))
    clock.advance(300 + LEEWAY)  # exactly at exp + leeway: still valid
    assert v.verify(token).sub == "alice"
    clock.advance(0.5)
    refused(v, token, "expired")


def test_fractional_exp_is_honoured_and_floored_in_claims(clock: ManualClock) -> None:
    v = verifier(clock, leeway_s=0.0)
    token = make_token(claims_at(clock, exp=clock.wall() + 10.5))
    assert v.verify(token).exp == int(clock.wall()) + 10
    clock.advance(10.5)
    assert v.verify(token).sub == "alice"
    clock.advance(0.1)
    refused(v, token, "expired")


def test_nbf_in_future_beyond_leeway_is_refused(clock: ManualClock) -> None:
    v = verifier(clock)
    token = make_token(claims_at(clock, nbf=clock.wall() + 60))
    refused(v, token, "not_yet_valid")
    clock.advance(60 - LEEWAY)
    assert v.verify(token).nbf == int(clock.wall() + LEEWAY)


def test_nbf_boundary_is_the_leeway(clock: ManualClock) -> None:
    v = verifier(clock)
    assert v.verify(make_token(claims_at(clock, nbf=clock.wall() + LEEWAY))).sub == "alice"
    token = make_token(claims_at(clock, nbf=clock.wall() + LEEWAY + 0.5))
    refused(v, token, "not_yet_valid")
    clock.advance(0.5)
    assert v.verify(token).sub == "alice"


def test_iat_in_future_beyond_leeway_is_refused(clock: ManualClock) -> None:
    v = verifier(clock)
    token = make_token(claims_at(clock, iat=int(clock.wall()) + 30))
    refused(v, token, "not_yet_valid")
    clock.advance(30 - LEEWAY - 0.5)
    refused(v, token, "not_yet_valid")
    clock.advance(0.5)
    assert v.verify(token).sub == "alice"


# -- audience, issuer -----------------------------------------------------------------


@pytest.mark.parametrize("aud", ["other", ["other", "more"], [], 5, "SQUALL"])
def test_wrong_audience_is_refused(clock: ManualClock, aud: Any) -> None:
    refused(verifier(clock, audience="squall"), make_token(claims_at(clock, aud=aud)), "audience")


def test_missing_audience_is_refused_when_configured(clock: ManualClock) -> None:
    refused(verifier(clock, audience="squall"), make_token(claims_at(clock)), "audience")


def test_issuer_is_checked_when_configured(clock: ManualClock) -> None:
    v = verifier(clock, issuer="https://auth.example")
    assert v.verify(make_token(claims_at(clock, iss="https://auth.example"))).sub == "alice"
    refused(v, make_token(claims_at(clock, iss="https://evil.example")), "issuer")
    refused(v, make_token(claims_at(clock)), "issuer")


# -- token type -----------------------------------------------------------------------


def test_refresh_token_used_as_access_is_refused(clock: ManualClock) -> None:
    token = make_token(claims_at(clock, typ="refresh", fam="f1"))
    v = verifier(clock)
    refused(v, token, "wrong_type")
    assert v.verify(token, expected_type="refresh").family == "f1"


@pytest.mark.parametrize("extra", [{}, {"typ": "access"}, {"typ": "id", "fam": "f1"}])
def test_non_refresh_token_used_as_refresh_is_refused(
    clock: ManualClock, extra: dict[str, Any]
) -> None:
    refused(verifier(clock), make_token(claims_at(clock, **extra)), "wrong_type", "refresh")


def test_unknown_typ_is_refused_as_access(clock: ManualClock) -> None:
    refused(verifier(clock), make_token(claims_at(clock, typ="id")), "wrong_type")


def test_refresh_token_without_family_is_refused(clock: ManualClock) -> None:
    token = make_token(claims_at(clock, typ="refresh"))
    refused(verifier(clock), token, "missing_claim", "refresh")


# -- issuance -------------------------------------------------------------------------


def test_issue_access_round_trips(clock: ManualClock) -> None:
    s = settings(audience="squall", issuer="squall-test", access_ttl_s=600)
    token, issued = TokenIssuer(s, clock).issue_access("alice", rooms=["lobby"], role="admin")
    assert issued.exp == int(clock.wall()) + 600
    assert issued.typ == "access"
    assert TokenVerifier(s, clock).verify(token) == issued
    clock.advance(600 + LEEWAY + 1)
    refused(TokenVerifier(s, clock), token, "expired")


def test_issue_access_ttl_override_and_unique_jti(clock: ManualClock) -> None:
    issuer = TokenIssuer(settings(), clock)
    _, first = issuer.issue_access("alice", ttl_s=30)
    _, second = issuer.issue_access("alice")
    assert first.exp == int(clock.wall()) + 30
    assert second.exp == int(clock.wall()) + 900
    assert first.jti != second.jti
    assert first.rooms is None and first.role is None


def test_issue_refresh_round_trips(clock: ManualClock) -> None:
    s = settings(refresh_ttl_s=3600)
    issuer = TokenIssuer(s, clock)
    token, issued = issuer.issue_refresh("alice", "fam-1")
    assert (issued.typ, issued.family, issued.exp) == ("refresh", "fam-1", int(clock.wall()) + 3600)
    v = TokenVerifier(s, clock)
    assert v.verify(token, expected_type="refresh") == issued
    refused(v, token, "wrong_type")
    assert issuer.issue_refresh("alice", "fam-1")[1].jti != issued.jti


@pytest.mark.parametrize(
    ("alg", "keypair"),
    [("RS256", rsa_keypair), ("ES256", ec_keypair), ("EdDSA", ed25519_keypair)],
)
def test_asymmetric_issuance_round_trips(clock: ManualClock, alg: str, keypair: Any) -> None:
    private, public = keypair()
    signer = settings(algorithms=(alg,), secret=None, private_key=private)
    token, issued = TokenIssuer(signer, clock).issue_access("carol")
    checker = settings(algorithms=(alg,), secret=None, public_key=public)
    assert TokenVerifier(checker, clock).verify(token) == issued
    # Without a public key, the verifier derives it from the private key.
    assert TokenVerifier(signer, clock).verify(token) == issued


def test_issuer_signs_with_first_allowed_algorithm(clock: ManualClock) -> None:
    _, public = rsa_keypair()
    s = settings(algorithms=("none", "HS256", "RS256"), public_key=public)
    issuer = TokenIssuer(s, clock)
    assert issuer.algorithm == "HS256"
    token, issued = issuer.issue_access("alice")
    assert TokenVerifier(s, clock).verify(token) == issued


def test_issuer_without_signing_key_raises_on_issue(clock: ManualClock) -> None:
    _, public = rsa_keypair()
    no_private = TokenIssuer(settings(algorithms=("RS256",), secret=None, public_key=public), clock)
    no_secret = TokenIssuer(settings(secret=None), clock)
    for issuer in (no_private, no_secret):
        with pytest.raises(AuthError) as info:
            issuer.issue_access("alice")
        assert info.value.reason == "no_signing_key"
        with pytest.raises(AuthError):
            issuer.issue_refresh("alice", "fam")


def test_issuer_rejects_misuse(clock: ManualClock) -> None:
    issuer = TokenIssuer(settings(), clock)
    with pytest.raises(ValueError):
        issuer.issue_access("")
    with pytest.raises(ValueError):
        issuer.issue_access("alice", rooms="lobby")
    with pytest.raises(ValueError):
        issuer.issue_access("alice", ttl_s=0)
    with pytest.raises(ValueError):
        issuer.issue_refresh("alice", "")


def test_issuer_rejects_private_key_of_wrong_type(clock: ManualClock) -> None:
    private, _ = ec_keypair()
    with pytest.raises(ValueError, match=r"auth\.private_key_file"):
        TokenIssuer(settings(algorithms=("RS256",), secret=None, private_key=private), clock)


# -- construction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"secret": None}, "auth.secret"),
        ({"secret": "short"}, "auth.secret"),
        ({"algorithms": ("HS512",)}, "auth.secret"),  # SECRET is 52 bytes, HS512 needs 64
        ({"secret": rsa_keypair()[1]}, "auth.secret"),  # a PEM is no HMAC secret
        ({"algorithms": ("RS256",), "secret": None}, "auth.public_key_file"),
        ({"algorithms": ("ES256",), "public_key": rsa_keypair()[1]}, "auth.public_key_file"),
        ({"algorithms": ("RS256",), "public_key": "not a pem"}, "auth.public_key_file"),
        ({"algorithms": ("HS257",)}, "auth.algorithms"),
        ({"algorithms": ("none",)}, "auth.algorithms"),
    ],
)
def test_verifier_refuses_unusable_configuration(
    clock: ManualClock, overrides: dict[str, Any], key: str
) -> None:
    with pytest.raises(ValueError) as info:
        verifier(clock, **overrides)
    assert key in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [{"algorithms": ()}, {"leeway_s": -1.0}, {"access_ttl_s": 0}, {"refresh_ttl_s": -5}],
)
def test_settings_validate_values(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="auth"):
        settings(**overrides)


def test_settings_repr_hides_secrets() -> None:
    private, _ = rsa_keypair()
    text = repr(settings(private_key=private))
    assert SECRET not in text
    assert "PRIVATE KEY" not in text


def test_settings_from_auth_config_reads_pem_files(tmp_path: Path) -> None:
    private, public = ec_keypair()
    (tmp_path / "pub.pem").write_text(public)
    (tmp_path / "priv.pem").write_text(private)
    cfg = SimpleNamespace(
        algorithms=["ES256"],
        secret=None,
        public_key_file=str(tmp_path / "pub.pem"),
        private_key_file=str(tmp_path / "priv.pem"),
        audience="squall",
        issuer=None,
        leeway_s=2,
        access_ttl_s=60,
        refresh_ttl_s=120,
        timeout_s=5.0,
        users_file=None,
    )
    s = JwtSettings.from_auth_config(cfg)
    assert s == JwtSettings(
        algorithms=("ES256",),
        public_key=public,
        private_key=private,
        audience="squall",
        leeway_s=2.0,
        access_ttl_s=60,
        refresh_ttl_s=120,
    )
    cfg.public_key_file = str(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match=r"auth\.public_key_file"):
        JwtSettings.from_auth_config(cfg)


# -- rooms ----------------------------------------------------------------------------


def _with_rooms(rooms: tuple[str, ...] | None) -> Claims:
    return Claims(sub="alice", exp=0, jti="j", rooms=rooms)


@pytest.mark.parametrize(
    ("rooms", "room", "allowed"),
    [
        (None, "anything", True),
        ((), "lobby", False),
        (("lobby",), "lobby", True),
        (("lobby",), "lobby2", False),
        (("lobby",), "Lobby", False),
        (("team-*",), "team-red", True),
        (("team-*",), "team-", True),
        (("team-*",), "teams", False),
        (("chat-?",), "chat-1", True),
        (("chat-?",), "chat-10", False),
        (("[ab]x",), "bx", True),
        (("[ab]x",), "cx", False),
        (("lobby", "dm:alice:*"), "dm:alice:bob", True),
        (("lobby", "dm:alice:*"), "dm:bob:alice", False),
    ],
)
def test_room_allowed(rooms: tuple[str, ...] | None, room: str, allowed: bool) -> None:
    assert room_allowed(_with_rooms(rooms), room) is allowed


def test_lone_surrogate_in_sub_is_malformed() -> None:
    from core.auth import AuthError, JwtSettings, TokenVerifier
    from core.clock import SystemClock
    from tests.tokens import SECRET, good_claims, make_token

    verifier = TokenVerifier(JwtSettings(secret=SECRET), SystemClock())
    tok = make_token(good_claims("\ud800x"))
    try:
        verifier.verify(tok)
    except AuthError as e:
        assert e.reason == "malformed"
    else:
        raise AssertionError("accepted a sub with a lone surrogate")
