"""The GitHub App stand-in answers as GitHub does: JWT checks with GitHub's messages, scoped tokens,
revocation, and its fault knobs. Driven over real HTTP from plain sync code."""

from __future__ import annotations

import email.utils
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from jwt import api_jws as jws

from tests.fakes import github as fake
from tests.fakes.github import AppKey, FakeGitHub


@pytest.fixture(scope="module")
def key() -> AppKey:
    return AppKey.generate()


@pytest.fixture
def gh(key: AppKey) -> Iterator[FakeGitHub]:
    with FakeGitHub(key=key) as server:
        yield server


def app_jwt(key: AppKey, iss: int | str = 4242, iat: int | None = None, exp: int | None = None) -> str:
    now = int(time.time())
    claims = {"iss": iss, "iat": now - 60 if iat is None else iat, "exp": now + 540 if exp is None else exp}
    # Signed as raw JSON: PyJWT's encode refuses a numeric ``iss``, which GitHub accepts.
    return jws.encode(json.dumps(claims).encode(), key.private_key, algorithm="RS256")


def call(
    method: str, url: str, auth: str | None = None, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw, status, headers = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        raw, status, headers = err.read(), err.code, dict(err.headers)
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = raw
    return status, headers, data


def test_a_valid_jwt_gets_the_installation_and_calls_are_counted(gh: FakeGitHub, key: AppKey) -> None:
    status, _, data = call("GET", f"{gh.url}/app/installations/1001", f"Bearer {app_jwt(key)}")
    assert status == 200
    assert data["account"]["login"] == "lobmob"
    assert gh.calls_of("installation") == 1
    # The numeric id as a string is accepted too, as GitHub does.
    assert call("GET", f"{gh.url}/app/installations/1001", f"Bearer {app_jwt(key, iss='4242')}")[0] == 200
    assert call("GET", f"{gh.url}/app/installations/77", f"Bearer {app_jwt(key)}")[0] == 404
    assert gh.calls_of("installation") == 3


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        # Times as offsets from when the test runs (not from collection: a long suite would age them).
        ({"iss": 999}, fake.MSG_UNDECODABLE),  # another app's id
        ({"exp": 900}, fake.MSG_EXP_TOO_FAR),
        ({"iat": -700, "exp": -100}, fake.MSG_EXPIRED),
        ({"iat": 300, "exp": 540}, fake.MSG_IAT),
    ],
)
def test_the_jwt_is_checked_with_githubs_messages(
    gh: FakeGitHub, key: AppKey, claims: dict[str, int], message: str
) -> None:
    now = int(time.time())
    given = {k: (v if k == "iss" else now + v) for k, v in claims.items()}
    status, _, data = call("GET", f"{gh.url}/app/installations/1001", f"Bearer {app_jwt(key, **given)}")
    assert (status, data["message"]) == (401, message)


def test_a_jwt_signed_by_another_key_is_undecodable(gh: FakeGitHub) -> None:
    status, _, data = call("GET", f"{gh.url}/app/installations/1001", f"Bearer {app_jwt(AppKey.generate())}")
    assert (status, data["message"]) == (401, fake.MSG_UNDECODABLE)


def test_tokens_are_scoped_listed_and_revoked(gh: FakeGitHub, key: AppKey) -> None:
    url = f"{gh.url}/app/installations/1001/access_tokens"
    body = {"repositories": ["repo1", "repo2"], "permissions": {"contents": "write", "metadata": "read"}}
    status, _, data = call("POST", url, f"Bearer {app_jwt(key)}", body)
    assert status == 201
    token = data["token"]
    assert token.startswith("ghs_") and len(token) == 40
    left = datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00")).timestamp() - time.time()
    assert 3590 < left <= 3600
    assert [r["full_name"] for r in data["repositories"]] == ["lobmob/repo1", "lobmob/repo2"]

    status, _, listed = call("GET", f"{gh.url}/installation/repositories", f"token {token}")
    assert (status, listed["total_count"]) == (200, 2)
    assert call("DELETE", f"{gh.url}/installation/token", f"Bearer {token}")[0] == 204
    status, _, data = call("GET", f"{gh.url}/installation/repositories", f"token {token}")
    assert (status, data["message"]) == (401, fake.MSG_BAD_CREDENTIALS)


def test_unknown_repositories_and_wider_permissions_are_422(gh: FakeGitHub, key: AppKey) -> None:
    url = f"{gh.url}/app/installations/1001/access_tokens"
    status, _, data = call("POST", url, f"Bearer {app_jwt(key)}", {"repositories": ["repo1", "ghost"]})
    assert (status, data["message"]) == (422, fake.MSG_REPOSITORIES)
    status, _, data = call("POST", url, f"Bearer {app_jwt(key)}", {"permissions": {"administration": "write"}})
    assert (status, data["message"]) == (422, fake.MSG_PERMISSIONS)
    status, _, data = call("POST", url, f"Bearer {app_jwt(key)}", {"permissions": {"metadata": "write"}})
    assert (status, data["message"]) == (422, fake.MSG_PERMISSIONS)
    assert gh.issued == {}


def test_fault_knobs_take_their_answers_in_turn(gh: FakeGitHub, key: AppKey) -> None:
    url = f"{gh.url}/app/installations/1001"
    gh.fail_next(2, status=503)
    gh.rate_limit_next(1, retry_after=7)
    gh.garbage_next(1)
    assert call("GET", url, f"Bearer {app_jwt(key)}")[0] == 503
    assert call("GET", url, f"Bearer {app_jwt(key)}")[0] == 503
    status, headers, data = call("GET", url, f"Bearer {app_jwt(key)}")
    assert (status, headers["Retry-After"], data["message"]) == (403, "7", fake.MSG_SECONDARY)
    status, _, data = call("GET", url, f"Bearer {app_jwt(key)}")
    assert status == 200 and isinstance(data, bytes)  # not JSON
    assert call("GET", url, f"Bearer {app_jwt(key)}")[0] == 200
    assert gh.calls_of("installation") == 5


def test_a_fault_for_one_endpoint_leaves_the_others_alone(gh: FakeGitHub, key: AppKey) -> None:
    gh.reject_next(1)
    assert call("GET", f"{gh.url}/app/installations/1001", f"Bearer {app_jwt(key)}")[0] == 200
    url = f"{gh.url}/app/installations/1001/access_tokens"
    status, _, data = call("POST", url, f"Bearer {app_jwt(key)}", {"repositories": ["repo1"]})
    assert (status, data["message"]) == (422, fake.MSG_REPOSITORIES)


def test_the_skewed_clock_moves_the_date_header_and_the_jwt_check(gh: FakeGitHub, key: AppKey) -> None:
    gh.clock_skew = 900.0
    status, headers, data = call("GET", f"{gh.url}/app/installations/1001", f"Bearer {app_jwt(key)}")
    # 15 minutes ahead, a JWT made on the host's clock has expired on the stand-in's.
    assert (status, data["message"]) == (401, fake.MSG_EXPIRED)
    date = email.utils.parsedate_to_datetime(headers["Date"]).timestamp()
    assert 895 < date - time.time() < 905


def test_delay_holds_every_answer(gh: FakeGitHub, key: AppKey) -> None:
    gh.delay = 0.3
    started = time.monotonic()
    assert call("GET", f"{gh.url}/app/installations/1001", f"Bearer {app_jwt(key)}")[0] == 200
    assert time.monotonic() - started >= 0.3
