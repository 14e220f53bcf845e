"""Kubernetes projected service-account tokens against a real local OIDC issuer (tests/fakes/oidc.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lobwife_server.auth.enforcer import Authenticator, MemoryDirectory
from lobwife_server.auth.kubernetes import JwksSource, KubernetesSettings, KubernetesVerifier, load_role_map
from lobwife_server.auth.policy import Role
from lobwife_server.auth.tokens import AuthError, Source
from tests.fakes.oidc import FakeOIDC

ROLES = {"lobmob/lobboss": Role.ADMIN, "lobmob/lobster": Role.TASK, "monitoring/*": Role.READER}


@pytest.fixture
def oidc() -> Iterator[FakeOIDC]:
    with FakeOIDC() as fake:
        yield fake


def verifier(oidc: FakeOIDC, directory: MemoryDirectory | None = None, **over: Any) -> KubernetesVerifier:
    settings = KubernetesSettings(issuer=oidc.issuer, roles=ROLES, **over)
    return KubernetesVerifier(settings, directory or MemoryDirectory())


async def identify(v: KubernetesVerifier, token: str) -> Any:
    authn = Authenticator(None, v)
    try:
        return await authn.identify(token)
    finally:
        await v.close()


async def reason(v: KubernetesVerifier, token: str) -> str:
    with pytest.raises(AuthError) as e:
        await identify(v, token)
    assert token not in e.value.message
    return e.value.reason


async def test_a_mapped_service_account_gets_its_role_via_discovery(oidc: FakeOIDC) -> None:
    v = verifier(oidc)
    who = await identify(v, oidc.sa_token("lobmob", "lobboss"))
    assert (who.role, who.subject, who.source, who.task) == (Role.ADMIN, "lobmob/lobboss", Source.KUBERNETES, None)
    assert oidc.discoveries == 1 and oidc.fetches == 1
    reader = await identify(verifier(oidc), oidc.sa_token("monitoring", "grafana"))
    assert reader.role is Role.READER  # namespace/* matches


async def test_an_unmapped_account_has_no_role(oidc: FakeOIDC) -> None:
    assert await reason(verifier(oidc), oidc.sa_token("default", "default")) == "unmapped"


async def test_a_pod_is_bound_to_the_task_that_recorded_it(oidc: FakeOIDC) -> None:
    directory = MemoryDirectory(live={7: True, 8: False}, workers={"lobster-t7-x1": 7, "uid-8": 8})
    token = oidc.sa_token("lobmob", "lobster", pod="lobster-t7-x1")
    who = await identify(verifier(oidc, directory), token)
    assert (who.role, who.task, who.subject) == (Role.TASK, 7, "lobmob/lobster@lobster-t7-x1")
    by_uid = await identify(verifier(oidc, directory), oidc.sa_token("lobmob", "lobster", pod="p", pod_uid="uid-8"))
    assert by_uid.task is None  # its task has ended: bound to nothing
    # A pod that no task names is authenticated but bound to nothing, and not cached (it may be registered soon).
    v = verifier(oidc, directory)
    authn = Authenticator(None, v)
    stranger = oidc.sa_token("lobmob", "lobster", pod="lobster-stranger")
    assert (await authn.identify(stranger)).task is None
    directory.workers["lobster-stranger"] = 7
    assert (await authn.identify(stranger)).task == 7
    await v.close()


async def test_labels_or_claims_other_than_the_pod_do_not_bind_a_task(oidc: FakeOIDC) -> None:
    directory = MemoryDirectory(live={7: True}, workers={"lobster-t7-x1": 7})
    forged = oidc.sa_token("lobmob", "lobster", pod="other-pod", extra={"assigned_to": "lobster-t7-x1", "task": 7})
    assert (await identify(verifier(oidc, directory), forged)).task is None


async def test_wrong_audience_issuer_and_expiry_are_refused(oidc: FakeOIDC) -> None:
    assert await reason(verifier(oidc), oidc.sa_token("lobmob", "lobboss", audience="vault")) == "audience"
    assert await reason(verifier(oidc), oidc.sa_token("lobmob", "lobboss", issuer="https://evil")) == "issuer"
    old = time.time() - 7200
    assert await reason(verifier(oidc), oidc.sa_token("lobmob", "lobboss", now=old, ttl=600)) == "expired"
    late = time.time() + 3600
    assert await reason(verifier(oidc), oidc.sa_token("lobmob", "lobboss", now=late)) == "not_yet_valid"


async def test_hs256_with_the_clusters_public_key_is_refused(oidc: FakeOIDC) -> None:
    jwk = oidc.current.public_jwk()
    secret = json.dumps(jwk).encode()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    real = oidc.sa_token("lobmob", "lobboss")
    payload = real.split(".")[1]
    header = b64(json.dumps({"alg": "HS256", "kid": oidc.current.kid}).encode())
    sig = b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    assert await reason(verifier(oidc), f"{header}.{payload}.{sig}") == "algorithm"
    none = b64(json.dumps({"alg": "none", "kid": oidc.current.kid}).encode())
    assert await reason(verifier(oidc), f"{none}.{payload}.") == "algorithm"


async def test_a_header_that_picks_another_algorithm_than_the_key_is_refused(oidc: FakeOIDC) -> None:
    es = oidc.rotate(alg="ES256")
    token = oidc.sa_token("lobmob", "lobboss", key=es)
    assert (await identify(verifier(oidc), token)).role is Role.ADMIN  # ES256 keys work
    header, payload, sig = token.split(".")
    fixed = json.loads(base64.urlsafe_b64decode(header + "=="))
    fixed["kid"] = oidc.keys[1].kid  # the RSA key's kid with an ES256 header
    forged = base64.urlsafe_b64encode(json.dumps(fixed).encode()).rstrip(b"=").decode()
    assert await reason(verifier(oidc), f"{forged}.{payload}.{sig}") == "algorithm"


async def test_a_rotated_cluster_key_is_fetched_on_its_first_token(oidc: FakeOIDC) -> None:
    v = verifier(oidc, refetch_interval=0)
    authn = Authenticator(None, v)
    assert (await authn.identify(oidc.sa_token("lobmob", "lobboss"))).role is Role.ADMIN
    await authn.identify(oidc.sa_token("lobmob", "lobboss"))  # another token, same key: no fetch
    assert oidc.fetches == 1
    oidc.rotate(keep_old=False)
    assert (await authn.identify(oidc.sa_token("lobmob", "lobboss"))).role is Role.ADMIN
    assert oidc.fetches == 2
    await v.close()


async def test_unknown_kids_refetch_at_most_once_per_interval(oidc: FakeOIDC) -> None:
    clock = [1000.0]
    settings = KubernetesSettings(issuer=oidc.issuer, roles=ROLES, refetch_interval=60)
    v = KubernetesVerifier(settings, MemoryDirectory(), JwksSource(settings, clock=lambda: clock[0]))
    authn = Authenticator(None, v)
    await authn.identify(oidc.sa_token("lobmob", "lobboss"))
    strangers = [oidc.sa_token("lobmob", "lobboss", key=FakeOIDC().current) for _ in range(20)]

    async def unknown_kids() -> None:
        results = await asyncio.gather(*(authn.identify(t) for t in strangers), return_exceptions=True)
        assert all(isinstance(r, AuthError) and r.reason == "unknown_key" for r in results)

    await unknown_kids()
    assert oidc.fetches == 1  # within the interval of the first fetch: none
    clock[0] += 61
    await unknown_kids()
    assert oidc.fetches == 2  # one refetch for twenty unknown kids
    await unknown_kids()
    assert oidc.fetches == 2
    await v.close()


async def test_no_keys_at_all_is_unavailable_not_a_bad_credential(oidc: FakeOIDC) -> None:
    oidc.fail_next(5)
    assert await reason(verifier(oidc), oidc.sa_token("lobmob", "lobboss")) == "keys_unavailable"


async def test_a_jwks_file(oidc: FakeOIDC, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(oidc.jwks()))
    settings = KubernetesSettings(issuer=oidc.issuer, jwks_file=path, roles=ROLES)
    source = JwksSource(settings)
    who = await identify(KubernetesVerifier(settings, MemoryDirectory(), source), oidc.sa_token("lobmob", "lobboss"))
    assert who.role is Role.ADMIN and oidc.fetches == 0 and source.fetches == 1


def test_the_role_map_file(tmp_path: Path) -> None:
    path = tmp_path / "roles.toml"
    path.write_text('[roles]\n"lobmob/lobboss" = "admin"\n"monitoring/*" = "reader"\n')
    assert load_role_map(path) == {"lobmob/lobboss": Role.ADMIN, "monitoring/*": Role.READER}
    path.write_text('[roles]\n"lobmob" = "admin"\n')
    with pytest.raises(ValueError, match="expected namespace/serviceaccount"):
        load_role_map(path)
    path.write_text('[roles]\n"lobmob/x" = "root"\n')
    with pytest.raises(ValueError, match="role must be one of"):
        load_role_map(path)
