"""The package layering (core <- storage <- api <- domains <- app) and the storage boundary (sqlite3 only in
storage/) hold, and their checks can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tree / 'server'}:{tree / 'clients' / 'python'}"}
    return subprocess.run(
        [str(LINT), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        timeout=120,
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("layering")
    shutil.copytree(ROOT / "server", tree / "server", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "clients", tree / "clients", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_tree_keeps_the_contract(copy: Path) -> None:
    res = lint(copy)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 kept, 0 broken" in res.stdout


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("core/errors.py", "from lobwife_server.storage import database"),  # core reaching up
        ("storage/job_store.py", "from lobwife_server.jobs import definitions"),  # storage reaching a domain
        ("tasks/cache.py", "from lobwife_server.jobs import runner"),  # one domain into another
        ("api/codec.py", "from lobwife_server import app"),  # api reaching the assembly
        ("tasks/service.py", "import sqlite3"),  # SQLite outside storage
        ("app.py", "from sqlite3 import connect"),
    ],
)
def test_a_forbidden_import_breaks_it(copy: Path, module: str, forbidden: str) -> None:
    path = copy / "server" / "lobwife_server" / module
    original = path.read_text()
    path.write_text(original + f"\n{forbidden}  # noqa\n")
    try:
        res = lint(copy)
    finally:
        path.write_text(original)
    assert res.returncode != 0, res.stdout
    assert "BROKEN" in res.stdout
