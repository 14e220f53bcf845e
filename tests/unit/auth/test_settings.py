"""The --auth and --k8s-* options: flags over environment, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from lobwife_server import config
from lobwife_server.auth.enforcer import Mode
from lobwife_server.auth.policy import Role
from lobwife_server.auth.settings import parse_duration


def cfg(*argv: str, env: dict[str, str] | None = None, monkeypatch: pytest.MonkeyPatch) -> config.Config:
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    return config.from_args(config.build_parser().parse_args(["--state-dir", "/tmp/x", *argv]))


def test_off_is_the_default_and_the_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOBWIFE_AUTH", raising=False)
    assert cfg(monkeypatch=monkeypatch).auth.mode is Mode.OFF
    assert cfg(env={"LOBWIFE_AUTH": "permissive"}, monkeypatch=monkeypatch).auth.mode is Mode.PERMISSIVE
    assert cfg("--auth", "enforce", env={"LOBWIFE_AUTH": "off"}, monkeypatch=monkeypatch).auth.mode is Mode.ENFORCE


def test_a_bad_mode_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(config.ConfigError, match="LOBWIFE_AUTH='strict'"):
        cfg(env={"LOBWIFE_AUTH": "strict"}, monkeypatch=monkeypatch)


def test_kubernetes_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    roles = tmp_path / "roles.toml"
    roles.write_text('[roles]\n"lobmob/lobster" = "task"\n"lobmob/lobboss" = "reader"\n')
    c = cfg(
        "--k8s-issuer",
        "https://kubernetes.default.svc",
        "--k8s-role-map",
        str(roles),
        "--k8s-role",
        "lobmob/lobboss=admin",
        monkeypatch=monkeypatch,
    )
    k8s = c.auth.kubernetes
    assert k8s is not None and k8s.issuer == "https://kubernetes.default.svc"
    assert k8s.roles == {"lobmob/lobster": Role.TASK, "lobmob/lobboss": Role.ADMIN}  # the flag wins
    with pytest.raises(config.ConfigError, match="need --k8s-issuer"):
        cfg("--k8s-jwks-url", "https://x/jwks", monkeypatch=monkeypatch)
    with pytest.raises(config.ConfigError, match="NAMESPACE/SERVICEACCOUNT=ROLE"):
        cfg("--k8s-issuer", "https://k", "--k8s-role", "lobmob/lobster", monkeypatch=monkeypatch)
    with pytest.raises(config.ConfigError, match="role must be one of"):
        cfg("--k8s-issuer", "https://k", "--k8s-role", "lobmob/lobster=root", monkeypatch=monkeypatch)


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "30m", "1h", "7d", "1.5h")] == [90, 90, 1800, 3600, 604800, 5400]
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration("1 week")
