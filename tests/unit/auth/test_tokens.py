"""lobwife tokens: what verifies, what is refused and why, and the cache of verified tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from lobwife_server.auth import mint_from_state_dir
from lobwife_server.auth.enforcer import Authenticator
from lobwife_server.auth.keys import KeyRing, SigningKey, rotate
from lobwife_server.auth.policy import Role
from lobwife_server.auth.tokens import LEEWAY, AuthError, Identity, LobwifeTokens, Source, VerifiedCache


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path)


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "lobwife",
        "aud": "lobwife",
        "sub": "ops",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "role": "admin",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def signed(ring: KeyRing, body: dict[str, Any], key: SigningKey | None = None) -> str:
    k = key or ring.current
    return jwt.encode(body, k.private, algorithm="EdDSA", headers={"kid": ring.current.kid})


def verify(ring: KeyRing, token: str) -> Identity:
    return LobwifeTokens(ring).verify(token, jwt.get_unverified_header(token))[0]


def reason(ring: KeyRing, token: str) -> str:
    with pytest.raises(AuthError) as e:
        verify(ring, token)
    assert token not in e.value.message
    return e.value.reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_minted_token_verifies_to_its_identity(ring: KeyRing) -> None:
    tokens = LobwifeTokens(ring)
    token, exp = tokens.mint(Role.TASK, task=42, ttl=120)
    who = verify(ring, token)
    assert who == Identity(Role.TASK, "task-T42", 42, Source.LOBWIFE, exp)
    assert jwt.get_unverified_header(token)["kid"] == ring.current.kid
    assert abs(exp - time.time() - 120) < 5


@pytest.mark.parametrize(
    ("role", "task", "subject", "ttl", "field"),
    [
        (Role.TASK, None, None, 60, "task"),
        (Role.READER, 3, None, 60, "task"),
        (Role.ADMIN, None, "", 60, "subject"),
        (Role.ADMIN, None, "a\nb", 60, "subject"),
        (Role.ADMIN, None, None, 0, "ttl"),
        (Role.ADMIN, None, None, 400 * 86400, "ttl"),
    ],
)
def test_mint_refuses_a_bad_request_naming_the_field(
    ring: KeyRing, role: Role, task: int | None, subject: str | None, ttl: float, field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        LobwifeTokens(ring).mint(role, task, subject, ttl)


def test_expired(ring: KeyRing) -> None:
    old = time.time() - 7200
    token, _ = LobwifeTokens(ring, clock=lambda: old).mint(Role.ADMIN, ttl=3600)
    assert reason(ring, token) == "expired"


def test_not_yet_valid(ring: KeyRing) -> None:
    later = time.time() + 3600
    token, _ = LobwifeTokens(ring, clock=lambda: later).mint(Role.ADMIN, ttl=3600)
    assert reason(ring, token) == "not_yet_valid"


def test_a_small_clock_skew_is_allowed(ring: KeyRing) -> None:
    ahead = time.time() + 5  # the minting clock 5 s ahead: inside the leeway
    token, _ = LobwifeTokens(ring, clock=lambda: ahead).mint(Role.ADMIN, ttl=3600)
    assert verify(ring, token).role is Role.ADMIN


def test_wrong_audience(ring: KeyRing) -> None:
    assert reason(ring, signed(ring, claims(aud="someone-else"))) == "audience"


def test_wrong_issuer(ring: KeyRing) -> None:
    assert reason(ring, signed(ring, claims(iss="evil"))) == "issuer"


@pytest.mark.parametrize("missing", ["exp", "nbf", "iat", "sub", "aud", "iss"])
def test_every_time_and_identity_claim_is_required(ring: KeyRing, missing: str) -> None:
    assert reason(ring, signed(ring, claims(**{missing: None}))) in ("claims", "issuer", "audience")


def test_alg_none_is_refused(ring: KeyRing) -> None:
    token = jwt.encode(claims(), None, algorithm="none", headers={"kid": ring.current.kid})
    assert reason(ring, token) == "algorithm"


def test_hs256_signed_with_the_public_key_is_refused(ring: KeyRing) -> None:
    # Key confusion: an attacker who knows the public key uses it as an HMAC secret.
    public_pem = ring.current.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw = ring.current.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for secret in (public_pem, raw):
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": ring.current.kid}).encode())
        payload = _b64(json.dumps(claims()).encode())
        sig = _b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        token = f"{header}.{payload}.{sig}"
        assert reason(ring, token) == "algorithm"
        # And when the header claims EdDSA, the HMAC is not a valid signature either.
        header2 = _b64(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": ring.current.kid}).encode())
        assert reason(ring, f"{header2}.{payload}.{sig}") in ("signature", "malformed")


def test_another_key_under_our_kid_is_a_bad_signature(ring: KeyRing) -> None:
    assert reason(ring, signed(ring, claims(), key=SigningKey.generate())) == "signature"


def test_a_tampered_payload_is_a_bad_signature(ring: KeyRing) -> None:
    token = signed(ring, claims(role="reader"))
    header, _, sig = token.split(".")
    forged = _b64(json.dumps(claims(role="admin")).encode())
    assert reason(ring, f"{header}.{forged}.{sig}") == "signature"


@pytest.mark.parametrize("claim", [{"role": "root"}, {"role": "task"}, {"role": "reader", "task": 3}])
def test_a_bad_role_or_task_claim(ring: KeyRing, claim: dict[str, Any]) -> None:
    assert reason(ring, signed(ring, claims(**claim))) == "claims"


async def test_garbage_is_malformed(ring: KeyRing) -> None:
    authn = Authenticator(LobwifeTokens(ring))
    for garbage in ("not-a-jwt", "a.b.c", "eyJhbGciOiJFZERTQSJ9..", "é" * 20):
        with pytest.raises(AuthError) as e:
            await authn.identify(garbage)
        assert e.value.reason == "malformed"


async def test_another_issuer_is_not_trusted(ring: KeyRing) -> None:
    authn = Authenticator(LobwifeTokens(ring))
    with pytest.raises(AuthError) as e:
        await authn.identify(signed(ring, claims(iss="https://kubernetes.default.svc")))
    assert e.value.reason == "issuer"


def test_a_rotated_key_verifies_in_its_grace_and_not_after(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    old_token, _ = LobwifeTokens(ring).mint(Role.READER)
    now = time.time()
    rotated = rotate(tmp_path, grace=60, now=now)
    new_token, _ = LobwifeTokens(rotated).mint(Role.READER)
    assert jwt.get_unverified_header(new_token)["kid"] == rotated.current.kid != ring.current.kid
    in_grace = LobwifeTokens(rotated, clock=lambda: now + 30)
    identity, until = in_grace.verify(old_token, jwt.get_unverified_header(old_token))
    assert identity.role is Role.READER and until == pytest.approx(now + 60)  # cached no longer than the grace
    after = LobwifeTokens(rotated, clock=lambda: now + 61)
    with pytest.raises(AuthError) as e:
        after.verify(old_token, jwt.get_unverified_header(old_token))
    assert e.value.reason == "retired_key"
    assert after.verify(new_token, jwt.get_unverified_header(new_token))[0].role is Role.READER


async def test_a_key_minted_after_start_is_found_by_reloading(tmp_path: Path) -> None:
    authn = Authenticator(LobwifeTokens(KeyRing.load_or_create(tmp_path)))
    rotated = rotate(tmp_path, grace=60)
    token, _ = LobwifeTokens(rotated).mint(Role.SERVICE)
    assert (await authn.identify(token)).role is Role.SERVICE


async def test_a_rotated_key_verifies_at_once_after_a_token_of_an_unknown_key(tmp_path: Path) -> None:
    # CI saw a fresh key's first token refused: a token of another lobwife's key a moment before had
    # spent a rate-limited look at the key file, so the rotation was not seen for a second.
    authn = Authenticator(LobwifeTokens(KeyRing.load_or_create(tmp_path)))
    stranger, _ = LobwifeTokens(KeyRing.load_or_create(tmp_path / "another")).mint(Role.ADMIN)
    with pytest.raises(AuthError) as e:
        await authn.identify(stranger)
    assert e.value.reason == "unknown_key"
    rotated = rotate(tmp_path, grace=60)
    token, _ = LobwifeTokens(rotated).mint(Role.SERVICE)
    assert (await authn.identify(token)).role is Role.SERVICE


class _Counting(LobwifeTokens):
    calls = 0

    def verify(self, token: str, header: dict[str, Any]) -> tuple[Identity, float]:
        self.calls += 1
        return super().verify(token, header)


async def test_a_cache_hit_does_not_verify_again_but_still_honours_exp(ring: KeyRing) -> None:
    clock = [time.time()]
    tokens = _Counting(ring, clock=lambda: clock[0])
    authn = Authenticator(tokens, cache=VerifiedCache(clock=lambda: clock[0]))
    token, exp = tokens.mint(Role.ADMIN, ttl=60)
    for _ in range(5):
        assert (await authn.identify(token)).role is Role.ADMIN
    assert tokens.calls == 1 and authn.cache.hits == 4
    clock[0] = exp + LEEWAY + 1  # past exp: the entry is gone, the token verified again, and refused
    with pytest.raises(AuthError) as e:
        await authn.identify(token)
    assert e.value.reason == "expired" and tokens.calls == 2


def test_the_cache_is_bounded_and_keyed_by_hash() -> None:
    cache = VerifiedCache(capacity=3)
    who = Identity(Role.READER, "r", None, Source.LOBWIFE, time.time() + 60)
    for i in range(5):
        cache.put(cache.key(f"token-{i}"), who, who.expires_at)
    assert len(cache) == 3
    assert cache.get(cache.key("token-0")) is None and cache.get(cache.key("token-4")) == who
    assert all(len(k) == 32 and b"token" not in k for k in cache._items)


def test_mint_from_state_dir_uses_the_servers_key(tmp_path: Path) -> None:
    token = mint_from_state_dir(tmp_path, "task", "T7", ttl=300)
    ring = KeyRing.load_or_create(tmp_path)
    who = verify(ring, token)
    assert (who.role, who.task, who.subject) == (Role.TASK, 7, "task-T7")
    with pytest.raises(ValueError, match=r"^role:"):
        mint_from_state_dir(tmp_path, "root")
    with pytest.raises(ValueError, match=r"^task:"):
        mint_from_state_dir(tmp_path, "task", "seven")
