"""GitHubAppConfig.from_env: the old daemon's variables, errors naming the variable, no key material."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from lobwife_server.broker.github import DEFAULT_API_URL, GitHubAppConfig, GitHubConfigError, not_configured
from tests.fakes.github import AppKey


def env_of(key: AppKey, **overrides: str) -> dict[str, str]:
    env = {"GH_APP_ID": "4242", "GH_APP_INSTALL_ID": "1001", "GH_APP_PEM": key.pem_base64}
    env.update(overrides)
    return {k: v for k, v in env.items() if v != "<unset>"}


def error_of(env: dict[str, str]) -> str:
    with pytest.raises(GitHubConfigError) as info:
        GitHubAppConfig.from_env(env)
    # Nothing chained: a library's exception text is not ours to vouch for.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    return str(info.value)


def test_nothing_set_is_not_configured() -> None:
    assert GitHubAppConfig.from_env({}) is None
    assert "not configured" in not_configured().message
    assert not_configured().code.name == "UNAVAILABLE"


def test_the_old_daemons_variables(app_key: AppKey, tmp_path: Path) -> None:
    cfg = GitHubAppConfig.from_env(env_of(app_key))
    assert cfg is not None
    assert (cfg.app_id, cfg.installation_id, cfg.api_url) == ("4242", 1001, DEFAULT_API_URL)
    assert cfg.private_key.public_key().public_numbers() == app_key.public_key.public_numbers()

    pem = tmp_path / "app.pem"
    pem.write_bytes(app_key.pem)
    cfg = GitHubAppConfig.from_env(
        env_of(
            app_key,
            GH_APP_PEM="<unset>",
            GH_APP_PEM_PATH=str(pem),
            LOBWIFE_GITHUB_API_URL="https://ghe.example/api/v3/",
        )
    )
    assert cfg is not None and cfg.api_url == "https://ghe.example/api/v3"
    # A PEM pasted as is, not base64-encoded, is taken too.
    assert GitHubAppConfig.from_env(env_of(app_key, GH_APP_PEM=app_key.pem.decode())) is not None


def test_the_config_repr_shows_no_key(app_key: AppKey) -> None:
    cfg = GitHubAppConfig.from_env(env_of(app_key))
    assert "private_key" not in repr(cfg) and "BEGIN" not in repr(cfg)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"GH_APP_ID": "<unset>"}, "GH_APP_ID: not set"),
        ({"GH_APP_ID": "12 34"}, "GH_APP_ID="),
        ({"GH_APP_INSTALL_ID": "<unset>"}, "GH_APP_INSTALL_ID: not set"),
        ({"GH_APP_INSTALL_ID": "abc"}, "GH_APP_INSTALL_ID="),
        ({"GH_APP_INSTALL_ID": "0"}, "GH_APP_INSTALL_ID="),
        ({"GH_APP_PEM": "<unset>"}, "GH_APP_PEM or GH_APP_PEM_PATH: not set"),
        ({"GH_APP_PEM": "***not base64***"}, "GH_APP_PEM: not base64"),
        ({"GH_APP_PEM": base64.b64encode(b"hello, not a key").decode()}, "GH_APP_PEM: not a PEM private key"),
        ({"GH_APP_PEM_PATH": "/somewhere"}, "both set"),
        ({"GH_APP_PEM": "<unset>", "GH_APP_PEM_PATH": "/no/such/key.pem"}, "GH_APP_PEM_PATH='/no/such/key.pem'"),
        ({"LOBWIFE_GITHUB_API_URL": "ftp://github"}, "LOBWIFE_GITHUB_API_URL="),
    ],
)
def test_a_bad_value_is_an_error_naming_its_variable(app_key: AppKey, overrides: dict[str, str], named: str) -> None:
    assert named in error_of(env_of(app_key, **overrides))


def test_a_pem_that_is_not_a_key_says_so_without_quoting_it(app_key: AppKey, tmp_path: Path) -> None:
    # A real key cut short: the error names the variable and quotes nothing of the key.
    pem = app_key.pem
    broken = pem[:200] + pem[400:]
    body = b"".join(pem.splitlines()[1:-1]).decode()
    message = error_of(env_of(app_key, GH_APP_PEM=base64.b64encode(broken).decode()))
    assert message.startswith("GH_APP_PEM:")
    assert not any(body[i : i + 12] in message for i in range(0, len(body) - 12, 6))
    assert base64.b64encode(broken).decode()[:16] not in message

    path = tmp_path / "broken.pem"
    path.write_bytes(broken)
    message = error_of(env_of(app_key, GH_APP_PEM="<unset>", GH_APP_PEM_PATH=str(path)))
    assert message.startswith("GH_APP_PEM_PATH:") and "not a PEM private key" in message
    assert not any(body[i : i + 12] in message for i in range(0, len(body) - 12, 6))


def test_a_key_that_is_not_rsa_is_refused(app_key: AppKey) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert "GH_APP_PEM: not an RSA key" in error_of(env_of(app_key, GH_APP_PEM=base64.b64encode(pem).decode()))
