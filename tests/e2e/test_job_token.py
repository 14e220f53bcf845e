"""A job run under ``--auth enforce`` gets a credential of its own (``$LOBWIFE_TOKEN``) to call lobwife back.

Without it, the fleet's cron scripts (which call ``$LOBWIFE_URL``) would be refused the moment
the server moves to enforce. The token is a service-role token for that run; a call without it
is refused, which shows the token is what lets the job in. With auth off no token is handed out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ServerProcess, start_server
from tests.e2e.test_scheduler import runs, wait_for

# The job calls back twice: with its token (must be let in) and without one (must be refused).
JOB = """
[jobs.callback]
command = ["sh", "-c", '''
  if [ -n "$LOBWIFE_TOKEN" ]; then echo token=yes; else echo token=no; fi
  url="$LOBWIFE_URL/api/v1/tasks?limit=1"
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $LOBWIFE_TOKEN" "$url")
  echo with=$code
  code=$(curl -s -o /dev/null -w '%{http_code}' "$url")
  echo without=$code''']
schedule = "every 1s"
"""


def _server(tmp_path: Path, *args: str) -> ServerProcess:
    path = tmp_path / "jobs.toml"
    path.write_text(JOB)
    return start_server(tmp_path / "state", "--jobs", str(path), *args)


def _first_output(srv: ServerProcess) -> str:
    done = wait_for(lambda: [r for r in runs(srv, "callback") if r["status"] in ("success", "failed")], timeout=20)
    return str(done[0]["output"])


@pytest.mark.parametrize("mode", ["enforce", "off"])
def test_a_run_calls_back_with_its_own_token(tmp_path: Path, mode: str) -> None:
    srv = _server(tmp_path, "--auth", mode)
    try:
        out = _first_output(srv)
        if mode == "enforce":
            assert "token=yes" in out and "with=200" in out and "without=401" in out, out
            assert "eyJ" not in srv.log()  # a JWT's first bytes: no token reaches the log
        else:
            assert "token=no" in out and "with=200" in out and "without=200" in out, out
    finally:
        srv.terminate()
    # The token was for the run only: it is nowhere on disk.
    db = (srv.state_dir / "lobwife.db").read_bytes()
    assert b"eyJ" not in db
