"""scripts/serve.sh: says what it does on a cold machine, is quiet on warm runs.

The real script runs in a copy of the repository's layout with a stand-in Python whose
``-m venv`` makes a .venv with a recording ``pip`` (which "installs" a ``lobwife`` that
prints its arguments): no network, no minute-long install, the script's own logic.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "serve.sh", repo / "scripts" / "serve.sh")
    (repo / "pyproject.toml").write_text('[project]\nname = "lobwife"\n')
    template = tmp_path / "venv-bin"
    template.mkdir()
    (template / "activate").write_text('PATH="$PWD/.venv/bin:$PATH"\n')
    _executable(template / "python", "#!/bin/sh\nexit 0\n")
    _executable(
        template / "pip",
        '#!/bin/sh\nd=$(dirname "$0")\necho "pip $*" >> "$d/../pip.log"\n'
        'printf \'#!/bin/sh\\necho "lobwife $*"\\n\' > "$d/lobwife"\nchmod +x "$d/lobwife"\n',
    )
    python = tmp_path / "fake-python3"
    _executable(
        python,
        '#!/bin/sh\n[ "$1" = -m ] && [ "$2" = venv ] || exit 9\nmkdir -p "$3/bin"\ncp "$TEMPLATE"/* "$3/bin/"\n',
    )
    return repo, python


def _serve(repo: Path, python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": str(python), "TEMPLATE": str(python.parent / "venv-bin")}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        ["bash", str(repo / "scripts" / "serve.sh"), *args],
        env=env,
        cwd=python.parent,  # the script finds the repository from its own path
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cold_run_says_what_it_does_and_warm_runs_are_quiet(tmp_path: Path) -> None:
    repo, python = _layout(tmp_path)
    cold = _serve(repo, python, "--grpc-port", "1")
    assert cold.returncode == 0, cold.stderr
    assert cold.stderr.splitlines() == [
        f"serve.sh: creating .venv ({python} -m venv)",
        "serve.sh: installing lobwife into .venv (first run takes a minute)",
        "serve.sh: starting: lobwife serve --grpc-port 1",
    ]
    assert cold.stdout == "lobwife serve --grpc-port 1\n"
    pip_log = repo / ".venv" / "pip.log"
    assert pip_log.read_text() == "pip install -q --disable-pip-version-check -e .[server]\n"

    warm = _serve(repo, python)
    assert (warm.returncode, warm.stderr, warm.stdout) == (0, "", "lobwife serve\n")
    assert len(pip_log.read_text().splitlines()) == 1  # no pip on a warm run

    # A changed pyproject.toml (new dependencies) installs again, without a new .venv.
    (repo / "pyproject.toml").write_text('[project]\nname = "lobwife"\nversion = "2"\n')
    changed = _serve(repo, python)
    assert changed.returncode == 0, changed.stderr
    assert changed.stderr.splitlines() == [
        "serve.sh: installing lobwife into .venv (first run takes a minute)",
        "serve.sh: starting: lobwife serve",
    ]
    assert len(pip_log.read_text().splitlines()) == 2
