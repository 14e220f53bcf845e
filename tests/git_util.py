"""Real git for the vault tests: a person's git, an isolated config, and a bare remote with a first commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

#: Commits made by "a person" (a test's second clone); lobwife commits as itself.
PERSON = ("-c", "user.name=Person", "-c", "user.email=person@example.com")


def git(cwd: Path, *args: str, timeout: float = 30) -> str:
    """``git ARGS`` in ``cwd`` as the person; its stdout. The test fails when git does."""
    out = subprocess.run(["git", *PERSON, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout)
    assert out.returncode == 0, f"git {' '.join(args)} failed: {out.stdout}{out.stderr}"
    return out.stdout


def isolate_git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody's ~/.gitconfig (signing, hooks paths, default branch) may change what a test sees."""
    cfg = tmp_path / "gitconfig"
    cfg.write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def seeded_bare(tmp_path: Path, bare: Path) -> None:
    """A bare repository at ``bare`` whose ``main`` has one commit (a README), as a vault's remote has."""
    bare.parent.mkdir(parents=True, exist_ok=True)
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / f"seed-{bare.name}"
    git(tmp_path, "clone", "-q", str(bare), str(seed))
    (seed / "README.md").write_text("# the vault\n")
    git(seed, "add", "README.md")
    git(seed, "commit", "-q", "-m", "seed")
    git(seed, "push", "-q", "origin", "HEAD:main")
