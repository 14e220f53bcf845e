"""lobmob's own clients, unchanged, against lobwife (issue 10's "done when").

The clients live in the public repository ``minsley/lobmob`` (read at commit 2617568). Each test below
makes the requests one of them makes, in its order, with its flags and bodies, and checks exactly what
that client relies on in the answer (which keys, which status codes, which text it greps for); the
docstrings name the file and the lines mirrored so the next person can re-check them. No lobmob code is
copied here: the calls are rewritten from what the clients send and read.

The server is the real process with auth off (the quick start's default, given explicitly) and its
token broker pointed at the GitHub stand-in, whose one installation is on ``minsley`` (the account
lobmob registers its repositories under).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ServerProcess, start_server
from tests.fakes.github import AppKey, FakeGitHub, Installation
from tests.http_util import curl

VAULT_REPO = "minsley/lobmob-vault"
REPOS = ["lobmob-vault", "lobmob", "lobwife", "robot-arm"]

# The jobs lobmob's daemon ran (scripts/server/lobwife_jobs.py JOB_DEFS: names, schedules, descriptions);
# here each job's command is `true`, so a manual trigger finishes at once.
LOBMOB_JOBS = """
[jobs.task-manager]
description = "Task assignment, timeout detection, orphan recovery"
command = ["true"]
schedule = "*/5 * * * *"

[jobs.review-prs]
description = "Deterministic PR validation and auto-merge"
command = ["true"]
schedule = "*/2 * * * *"

[jobs.status-reporter]
description = "Fleet summary posted to Discord"
command = ["true"]
schedule = "*/30 * * * *"

[jobs.flush-logs]
description = "Flush event logs to vault"
command = ["true"]
schedule = "*/30 * * * *"
"""


@pytest.fixture
def gh(app_key: AppKey) -> Iterator[FakeGitHub]:
    with FakeGitHub(key=app_key, installations=[Installation(1001, "minsley", list(REPOS))]) as server:
        yield server


def serve(tmp_path: Path, gh: FakeGitHub | None) -> ServerProcess:
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(LOBMOB_JOBS)
    env = {**(gh.env() if gh is not None else {}), "LOBWIFE_BROKER_GITHUB_TIMEOUT": "3"}
    return start_server(tmp_path / "state", "--auth", "off", "--jobs", str(jobs), env=env)


@pytest.fixture
def srv(tmp_path: Path, gh: FakeGitHub) -> Iterator[ServerProcess]:
    server = serve(tmp_path, gh)
    yield server
    if server.proc.poll() is None:
        server.terminate()


# -- the shell side: real curl with the flags the scripts use ---------------------------------------


def sh(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Runs ``script`` in bash as lobmob's scripts run (no set -e here: the exit code is the result)."""
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run(["bash", "-c", script], env=full, capture_output=True, text=True, timeout=30)


def curl_sf(method: str, url: str, body: dict[str, Any] | None = None, *, json_header: bool = True) -> str:
    """``curl -sf -X METHOD URL [-H 'Content-Type: application/json' -d BODY]``: the body on success;
    a status >= 400 makes curl -f exit 22, which the scripts see as failure."""
    args = ["curl", "-sf", "--max-time", "20", "-X", method, url]
    if body is not None:
        if json_header:
            args += ["-H", "Content-Type: application/json"]
        args += ["-d", json.dumps(body)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"curl -sf {method} {url} exited {done.returncode}: {done.stderr}"
    return done.stdout


def curl_rc(method: str, url: str, body: dict[str, Any] | None = None) -> int:
    """The exit code of ``curl -sf`` alone (0, or 22 for a status >= 400)."""
    args = ["curl", "-sf", "-o", "/dev/null", "--max-time", "20", "-X", method, url]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    return subprocess.run(args, capture_output=True, timeout=30).returncode


def fake_repos(gh: FakeGitHub, token: str) -> list[str]:
    """What the token reaches at the GitHub stand-in (as `gh` would find out with it)."""
    req = urllib.request.Request(gh.url + "/installation/repositories", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return sorted(x["full_name"] for x in json.load(r)["repositories"])


# -- 1. tests/lobwife-task-lifecycle ----------------------------------------------------------------


def test_task_lifecycle_curl_suite(srv: ServerProcess) -> None:
    """Mirrors ``tests/lobwife-task-lifecycle`` (the whole script, steps 0-10): every call is
    ``curl -sf`` (so each must answer < 400) and each answer is read with ``python3 -c 'json.load(...)'``.

    0. ``GET /health`` must succeed.  1. ``POST /api/v1/tasks`` with name/type/priority/slug/
    estimate_minutes; reads ``id`` (> 0) and ``task_id`` (starts with T).  2. ``GET /api/v1/tasks/{id}``:
    ``status == 'queued'``, ``type``, ``slug``, ``estimate_minutes == 30``.  3. ``POST
    /api/v1/tasks/{id}/register`` ``{"repos": ["minsley/lobmob-vault"], "lobster_type": "swe"}``:
    ``status == 'registered'``; then the task has ``broker_repos`` not None and ``broker_status ==
    'active'``.  4. ``PATCH`` status active + assigned_to + assigned_at + actor: ``'status' in updated``;
    ``POST .../events`` spawned.  5. ``POST .../events`` started.  6. ``PATCH`` completed +
    completed_at: ``'status' in updated``; event completed.  7. the task: completed, ``completed_at`` not
    None, ``assigned_to`` kept.  8. ``GET .../events``: a JSON array whose ``event_type`` values include
    created, broker_registered, spawned, started, completed.  9. ``POST /api/token`` for the T id with
    ``curl -s -w %{http_code}``: 503 or 403 (the task is finished).  10. ``GET /api/v1/tasks?status=
    completed`` is a non-empty array; ``?status=queued&type=swe`` parses as JSON.
    """
    api = srv.http_url
    assert curl_rc("GET", api + "/health") == 0

    created = json.loads(
        curl_sf(
            "POST",
            api + "/api/v1/tasks",
            {
                "name": "Lifecycle test task",
                "type": "swe",
                "priority": "normal",
                "slug": "lifecycle-test",
                "estimate_minutes": 30,
            },
        )
    )
    db_id, task_id = created["id"], created["task_id"]
    # The script compares them with bash [[ -gt 0 ]] and == T*: a JSON number printed by python3.
    assert isinstance(db_id, int) and db_id > 0
    assert isinstance(task_id, str) and task_id.startswith("T")

    got = json.loads(curl_sf("GET", f"{api}/api/v1/tasks/{db_id}"))
    assert (got["status"], got["type"], got["slug"]) == ("queued", "swe", "lifecycle-test")
    assert got["estimate_minutes"] == 30

    reg = json.loads(
        curl_sf("POST", f"{api}/api/v1/tasks/{db_id}/register", {"repos": [VAULT_REPO], "lobster_type": "swe"})
    )
    assert reg["status"] == "registered"
    got = json.loads(curl_sf("GET", f"{api}/api/v1/tasks/{db_id}"))
    assert got.get("broker_repos") is not None and got.get("broker_status") == "active"

    assign = json.loads(
        curl_sf(
            "PATCH",
            f"{api}/api/v1/tasks/{db_id}",
            {
                "status": "active",
                "assigned_to": "lobster-swe-lifecycle",
                "assigned_at": "2026-02-16T12:00:00Z",
                "actor": "task_poller",
            },
        )
    )
    assert "status" in assign["updated"]
    events_url = f"{api}/api/v1/tasks/{db_id}/events"
    curl_sf("POST", events_url, {"event_type": "spawned", "detail": "lobster-swe-lifecycle", "actor": "task_poller"})
    curl_sf("POST", events_url, {"event_type": "started", "detail": "model=claude-opus-4-6", "actor": "lobster"})

    complete = json.loads(
        curl_sf(
            "PATCH",
            f"{api}/api/v1/tasks/{db_id}",
            {"status": "completed", "completed_at": "2026-02-16T12:30:00Z", "actor": "lobster"},
        )
    )
    assert "status" in complete["updated"]
    curl_sf("POST", events_url, {"event_type": "completed", "detail": "turns=12 cost=$1.50", "actor": "lobster"})

    final = json.loads(curl_sf("GET", f"{api}/api/v1/tasks/{db_id}"))
    assert final["status"] == "completed" and final["completed_at"] is not None
    assert final["assigned_to"] == "lobster-swe-lifecycle"

    events = json.loads(curl_sf("GET", events_url))
    kinds = [e["event_type"] for e in events]
    assert {"created", "broker_registered", "spawned", "started", "completed"} <= set(kinds), kinds

    code = sh(
        'curl -s -o /dev/null -w "%{http_code}" -X POST "$API/api/token" -H "Content-Type: application/json" '
        '-d "{\\"task_id\\": \\"$TASK_ID\\"}"',
        API=api,
        TASK_ID=task_id,
    ).stdout
    assert code in ("503", "403"), code

    done = json.loads(curl_sf("GET", api + "/api/v1/tasks?status=completed"))
    assert isinstance(done, list) and len(done) > 0
    assert isinstance(json.loads(curl_sf("GET", api + "/api/v1/tasks?status=queued&type=swe")), list)


# -- 2. scripts/commands/verify.sh, verify_lobwife() ------------------------------------------------


def test_verify_script_lobwife_checks(srv: ServerProcess, gh: FakeGitHub) -> None:
    """Mirrors ``scripts/commands/verify.sh`` ``verify_lobwife()`` (lines 59-160), its HTTP checks (the
    script reaches the API through a port-forward to the web proxy, which passes ``/health`` and
    ``/api/*`` through and serves ``/`` itself). Each is ``curl -sf URL || true`` and a bash glob match
    on the raw body: ``/health`` contains ``"status"`` and ``"ok"``; ``/api/status`` contains
    ``"jobs"``; ``/api/jobs`` contains ``"task-manager"``, ``"review-prs"``, ``"flush-logs"``;
    ``/api/jobs/task-manager`` contains ``"schedule"``; ``/`` contains ``lobwife``; ``POST
    /api/jobs/flush-logs/trigger`` (no body) contains ``triggered``; ``/health`` contains ``"broker"`` and
    python3 prints ``d.get('broker',{}).get('enabled','')`` as ``True``; ``POST
    /api/tasks/verify-test/register`` contains ``"registered"``; ``GET /api/tasks`` contains
    ``"verify-test"``; ``POST /api/token {"task_id": "verify-test"}`` (``curl -s``) contains ``"token"``
    and python3 reads ``['token']`` (the script then runs ``git ls-remote`` with it; here the stand-in's
    ``GET /installation/repositories`` stands for GitHub); ``DELETE /api/tasks/verify-test`` contains
    ``"removed"``; ``GET /api/token/audit`` contains ``"task_registered"``.
    """
    u = srv.http_url
    health = curl_sf("GET", u + "/health")
    assert '"status"' in health and '"ok"' in health
    assert '"jobs"' in curl_sf("GET", u + "/api/status")
    jobs = curl_sf("GET", u + "/api/jobs")
    for name in ("task-manager", "review-prs", "flush-logs"):
        assert f'"{name}"' in jobs, name
    assert '"schedule"' in curl_sf("GET", u + "/api/jobs/task-manager")
    assert "lobwife" in curl_sf("GET", u + "/")
    assert "triggered" in curl_sf("POST", u + "/api/jobs/flush-logs/trigger")

    health = curl_sf("GET", u + "/health")
    assert '"broker"' in health
    enabled = sh(
        'printf \'%s\' "$BODY" | python3 -c "import sys,json; d=json.load(sys.stdin); '
        "print(d.get('broker',{}).get('enabled',''))\"",
        BODY=health,
    ).stdout.strip()
    assert enabled == "True"

    reg = curl_sf("POST", u + "/api/tasks/verify-test/register", {"repos": [VAULT_REPO], "lobster_type": "test"})
    assert '"registered"' in reg
    assert '"verify-test"' in curl_sf("GET", u + "/api/tasks")

    out = sh(
        'curl -s -X POST "$U/api/token" -H "Content-Type: application/json" -d \'{"task_id": "verify-test"}\'', U=u
    ).stdout
    assert '"token"' in out, out
    token = sh(
        "printf '%s' \"$BODY\" | python3 -c \"import sys,json; print(json.load(sys.stdin)['token'])\"", BODY=out
    ).stdout.strip()
    assert fake_repos(gh, token) == [VAULT_REPO]

    assert '"removed"' in curl_sf("DELETE", u + "/api/tasks/verify-test")
    assert '"task_registered"' in curl_sf("GET", u + "/api/token/audit")


def test_verify_script_token_check_without_a_broker(tmp_path: Path) -> None:
    """Mirrors ``scripts/commands/verify.sh`` lines 124-146, the other branch: with no App key the
    script's ``curl -s -X POST /api/token`` body must contain ``not configured`` (it then passes with
    "no PEM configured"), and python3 prints ``broker.enabled`` from ``/health`` as ``False`` (a warning,
    not a failure)."""
    srv = serve(tmp_path, None)
    try:
        u = srv.http_url
        assert '"registered"' in curl_sf("POST", u + "/api/tasks/verify-test/register", {"repos": [VAULT_REPO]})
        out = sh(
            'curl -s -X POST "$U/api/token" -H "Content-Type: application/json" -d \'{"task_id": "verify-test"}\'',
            U=u,
        ).stdout
        assert '"token"' not in out and "not configured" in out, out
        assert json.loads(curl_sf("GET", u + "/health"))["broker"]["enabled"] is False
    finally:
        srv.terminate()


# -- 3. src/common/lobwife_client.py and its callers --------------------------------------------------


class LobwifeAPIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"lobwife API {status}: {message}")


class LobmobClient:
    """Does what ``src/common/lobwife_client.py`` ``_request()`` does with each answer: ``await
    resp.json()`` (aiohttp's strict check: the answer must be ``application/json``, else ContentTypeError,
    which lobmob's client takes for a network error and retries), then ``status >= 400`` raises with
    ``body.get("error")``. Retries are left out: a test must see the first answer."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def request(
        self, method: str, path: str, *, json: dict[str, Any] | None = None, params: dict[str, str] | None = None
    ) -> Any:
        async with self.session.request(
            method, self.base + path, json=json, params=params, timeout=aiohttp.ClientTimeout(total=15)
        ) as resp:
            body = await resp.json()
            if resp.status >= 400:
                raise LobwifeAPIError(resp.status, body.get("error", str(body)) if isinstance(body, dict) else body)
            return body

    async def create_task(self, name: str, type: str = "swe", priority: str = "normal", **kwargs: Any) -> Any:
        return await self.request(
            "POST", "/api/v1/tasks", json={"name": name, "type": type, "priority": priority, **kwargs}
        )

    async def get_task(self, task_id: int) -> Any:
        return await self.request("GET", f"/api/v1/tasks/{task_id}")

    async def list_tasks(self, *, status: str | None = None, type: str | None = None, limit: int = 100) -> Any:
        params = {"limit": str(limit)}
        if status:
            params["status"] = status
        if type:
            params["type"] = type
        return await self.request("GET", "/api/v1/tasks", params=params)

    async def update_task(self, task_id: int, **fields: Any) -> Any:
        return await self.request("PATCH", f"/api/v1/tasks/{task_id}", json=fields)

    async def log_event(
        self, task_id: int, event_type: str, detail: str | None = None, actor: str | None = None
    ) -> Any:
        payload = {"event_type": event_type}
        if detail:
            payload["detail"] = detail
        if actor:
            payload["actor"] = actor
        return await self.request("POST", f"/api/v1/tasks/{task_id}/events", json=payload)

    async def register_broker(self, task_id: int, repos: list[str], lobster_type: str) -> Any:
        # The old client's registration is a PATCH of the broker fields, stamped with Python's own
        # isoformat() (microseconds and a +00:00 offset, not a Z).
        return await self.update_task(
            task_id,
            broker_repos=repos,
            broker_status="active",
            broker_registered_at=datetime.now(UTC).isoformat(),
            actor=f"broker/{lobster_type}",
        )


PRIORITY_ORDER = {"critical": 0, "high": 1, "normal": 2, "low": 3}


async def test_python_client_poller_and_lobster_flow(srv: ServerProcess, gh: FakeGitHub) -> None:
    """Mirrors ``src/common/lobwife_client.py`` (create_task, get_task, list_tasks with ``limit`` as a
    string param, update_task, log_event, register_broker as a PATCH) as its callers use it:

    * ``src/lobboss/task_poller.py`` ``poll_and_spawn()`` lines 60-120: ``list_tasks(status="queued")``
      (an array), drops ``type == "system"``, sorts by ``(PRIORITY_ORDER[priority], t.get("queued_at",
      t.get("created_at", "")))`` (so those must be comparable strings), reads ``id``, ``task_id``,
      ``type``, ``workflow``, ``repos`` (a list); ``register_broker(id, [VAULT_REPO, *repos], type)``; then
      ``update_task(status="active", assigned_to=JOB, assigned_at=Z time, actor="task_poller")`` and
      ``log_event(id, "spawned", ..., "task_poller")``;
    * ``src/lobster/run_task.py`` ``_setup_gh_token()`` lines 175-196: aiohttp ``POST /api/token``
      ``{"task_id": "T42"}``, success only on status 200, reads ``["token"]``; ``_parse_db_id``: the
      database id is ``int(task_id[1:])``; ``log_event(started)``; ``get_task(id).get("slug")``;
      ``update_task(status=..., actor="lobster", completed_at=Z time)``; ``log_event(completed|failed)``;
    * ``src/lobster/verify.py`` lines 52-60: ``get_task(int(task_id[1:])).get("slug")``;
    * ``scripts/server/lobmob-task-manager.py`` lines 84-110: ``GET /api/v1/tasks?status=active&limit=500``;
      ``create_task(name, type="system", priority="high", actor=...)`` reading ``task_id`` and ``id``;
    * and what every caller catches: a 404 is a ``LobwifeAPIError`` whose text comes from the JSON
      ``error`` (no content-type failure, which would mean retries and a RuntimeError).
    """
    async with aiohttp.ClientSession() as session:
        api = LobmobClient(session, srv.http_url)
        low = await api.create_task("write the docs", type="research", priority="low", slug="write-docs")
        fix = await api.create_task(
            "fix the arm", type="swe", priority="critical", slug="fix-arm", repos=["minsley/robot-arm"]
        )
        await api.create_task("investigate", type="system", priority="high")
        for made in (low, fix):
            assert isinstance(made["id"], int) and made["task_id"] == f"T{made['id']}"

        queued = await api.list_tasks(status="queued")
        assert isinstance(queued, list) and len(queued) == 3
        queued = [t for t in queued if t.get("type") != "system"]
        assert all(isinstance(t.get("queued_at", t.get("created_at", "")), str) for t in queued)
        queued.sort(
            key=lambda t: (
                PRIORITY_ORDER.get(t.get("priority", "normal"), 2),
                t.get("queued_at", t.get("created_at", "")),
            )
        )
        assert [t["task_id"] for t in queued] == [fix["task_id"], low["task_id"]]

        task = queued[0]
        db_id, task_id, lobster_type = task["id"], task["task_id"], task.get("type", "research")
        assert task.get("workflow", "default") is None or isinstance(task.get("workflow", "default"), str)
        assert isinstance(task["repos"], list)
        reg = await api.register_broker(db_id, [VAULT_REPO, *task["repos"]], lobster_type)
        assert "broker_repos" in reg["updated"]

        job_name = f"lobster-swe-{db_id}"
        now_z = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        claimed = await api.update_task(
            db_id, status="active", assigned_to=job_name, assigned_at=now_z, actor="task_poller"
        )
        assert "status" in claimed["updated"]
        await api.log_event(db_id, "spawned", f"Job {job_name} ({lobster_type})", "task_poller")

        # The lobster pod: a token scoped to what the poller registered.
        async with session.post(
            srv.http_url + "/api/token", json={"task_id": task_id}, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            assert resp.status == 200
            token = (await resp.json())["token"]
        assert fake_repos(gh, token) == sorted([VAULT_REPO, "minsley/robot-arm"])

        pod_db_id = int(task_id[1:])
        assert pod_db_id == db_id
        await api.log_event(pod_db_id, "started", "type=swe model=claude-opus-4-6", "lobster")
        assert (await api.get_task(pod_db_id)).get("slug", "") == "fix-arm"
        assert len(await api.list_tasks(status="active", limit=500)) == 1
        done = await api.update_task(
            pod_db_id,
            status="completed",
            actor="lobster",
            completed_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        assert "status" in done["updated"]
        await api.log_event(pod_db_id, "completed", "turns=3 cost=$0.10", "lobster")
        kinds = [e["event_type"] for e in await api.request("GET", f"/api/v1/tasks/{db_id}/events")]
        assert {"created", "broker_registered", "spawned", "started", "completed"} <= set(kinds), kinds

        # The failure path of run_task.py (task file missing): failed + completed_at, then an event.
        failed = await api.update_task(low["id"], status="failed", actor="lobster", completed_at=now_z)
        assert "status" in failed["updated"]
        await api.log_event(low["id"], "failed", "Task file not found in vault", "lobster")

        # lobmob-task-manager.py's investigation task.
        inv = await api.create_task("Investigate failed task: T1", type="system", priority="high", actor="task-manager")
        assert inv["task_id"] == f"T{inv['id']}"

        with pytest.raises(LobwifeAPIError) as missing:
            await api.get_task(999_999)
        assert missing.value.status == 404 and "not found" in str(missing.value)
        with pytest.raises(LobwifeAPIError) as bad:
            await api.log_event(db_id, "")
        assert bad.value.status == 400


async def test_python_client_register_broker_twice_and_lobboss_register(srv: ServerProcess) -> None:
    """Mirrors ``src/common/lobwife_client.py`` ``register_broker()`` (a PATCH with ``broker_repos``,
    ``broker_status="active"``, ``broker_registered_at=datetime.now(timezone.utc).isoformat()``,
    ``actor="broker/TYPE"``) called again for the same task, as a poller retry does: it must not be an
    error (the callers skip the spawn on LobwifeAPIError). And ``src/lobboss/mcp_tools.py``
    ``_register_task_with_broker()`` lines 92-110: aiohttp ``POST /api/tasks/{T id}/register``
    ``{"repos", "lobster_type"}``, success only on status 200."""
    async with aiohttp.ClientSession() as session:
        api = LobmobClient(session, srv.http_url)
        made = await api.create_task("retry me")
        await api.register_broker(made["id"], [VAULT_REPO], "swe")
        await api.register_broker(made["id"], [VAULT_REPO], "swe")
        task = await api.get_task(made["id"])
        assert (task["broker_repos"], task["broker_status"]) == ([VAULT_REPO], "active")
        async with session.post(
            f"{srv.http_url}/api/tasks/{made['task_id']}/register",
            json={"repos": [VAULT_REPO, "minsley/lobmob"], "lobster_type": "swe"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp:
            assert resp.status == 200


# -- 4. scripts/gh-lobwife ----------------------------------------------------------------------------

# A `gh-real` stand-in: it does what the real gh does with GH_TOKEN first (an API call with it), against
# the GitHub stand-in, and prints what the token reaches.
GH_REAL = """#!/bin/sh
curl -sf -H "Authorization: token ${GH_TOKEN}" "${FAKE_GITHUB}/installation/repositories" \\
  | python3 -c "import sys, json; print(' '.join(sorted(r['full_name'] for r in json.load(sys.stdin)['repositories'])))"
"""

# Our own wrapper doing what scripts/gh-lobwife does, step by step (see the test's docstring).
GH_WRAPPER = """#!/bin/bash
set -euo pipefail
saved="${GH_TOKEN:-}"
unset GH_TOKEN
got=""
if [[ -n "${LOBWIFE_URL:-}" && -n "${TASK_ID:-}" ]]; then
  got=$(curl -sf -X POST "$LOBWIFE_URL/api/token" -H "Content-Type: application/json" \\
        -d "{\\"task_id\\": \\"$TASK_ID\\"}" 2>/dev/null \\
        | python3 -c "import sys, json; print(json.load(sys.stdin)['token'])" 2>/dev/null) || true
elif [[ -n "${LOBWIFE_URL:-}" && -n "${SERVICE_NAME:-}" ]]; then
  got=$(curl -sf -X POST "$LOBWIFE_URL/api/v1/service-token" -H "Content-Type: application/json" \\
        -d "{\\"service\\": \\"$SERVICE_NAME\\"}" 2>/dev/null \\
        | python3 -c "import sys, json; print(json.load(sys.stdin)['token'])" 2>/dev/null) || true
fi
GH_TOKEN="${got:-$saved}" exec "$GH_REAL" "$@"
"""


@pytest.fixture
def gh_wrapper(tmp_path: Path) -> Path:
    real = tmp_path / "gh-real"
    real.write_text(GH_REAL)
    real.chmod(0o755)
    wrapper = tmp_path / "gh"
    wrapper.write_text(GH_WRAPPER)
    wrapper.chmod(0o755)
    return wrapper


def run_gh(wrapper: Path, gh: FakeGitHub, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GH_REAL": str(wrapper.parent / "gh-real"),
        "FAKE_GITHUB": gh.url,
        **env,
    }
    return subprocess.run([str(wrapper), "repo", "list"], env=full, capture_output=True, text=True, timeout=30)


def test_gh_wrapper_for_a_task(srv: ServerProcess, gh: FakeGitHub, gh_wrapper: Path) -> None:
    """Mirrors ``scripts/gh-lobwife`` with ``TASK_ID`` set (a lobster pod; the pod spec in
    ``k8s/base/lobster-job-template.yaml`` lines 36-46 does the same call): ``curl -sf -X POST
    $LOBWIFE_URL/api/token -H 'Content-Type: application/json' -d '{"task_id": "T42"}'`` piped to
    ``python3 -c "...['token']"``; an empty result (curl -f failing on >= 400, or no ``token`` key)
    falls back to the ``GH_TOKEN`` the pod had. So: a registered task's token must reach its
    repositories, and a refusal must be a status >= 400 (a 200 with an error body would hand gh an
    empty token instead of the fallback)."""
    made = json.loads(curl_sf("POST", srv.http_url + "/api/v1/tasks", {"name": "arm fix", "type": "swe"}))
    reg = curl(
        "POST", f"{srv.http_url}/api/v1/tasks/{made['id']}/register", {"repos": [VAULT_REPO, "minsley/robot-arm"]}
    )
    assert reg.status == 200, reg.body
    out = run_gh(gh_wrapper, gh, LOBWIFE_URL=srv.http_url, TASK_ID=made["task_id"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == sorted([VAULT_REPO, "minsley/robot-arm"])

    # Not registered: lobwife refuses with a 4xx, the wrapper falls back to the pod's own token.
    fallback = gh_wrapper_service_token(srv)
    assert curl_rc("POST", srv.http_url + "/api/token", {"task_id": "T999"}) == 22
    out = run_gh(gh_wrapper, gh, LOBWIFE_URL=srv.http_url, TASK_ID="T999", GH_TOKEN=fallback)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) == len(REPOS)


def gh_wrapper_service_token(srv: ServerProcess) -> str:
    token: str = json.loads(curl_sf("POST", srv.http_url + "/api/v1/service-token", {"service": "lobboss"}))["token"]
    return token


def test_gh_wrapper_for_a_service(srv: ServerProcess, gh: FakeGitHub, gh_wrapper: Path) -> None:
    """Mirrors ``scripts/gh-lobwife`` with ``SERVICE_NAME`` set (lobboss, lobsigliere, lobwife; also
    ``k8s/base/lobboss-deployment.yaml`` lines 34-40 and ``containers/lobsigliere/entrypoint.sh``
    lines 36-42): ``curl -sf -X POST $LOBWIFE_URL/api/v1/service-token -H 'Content-Type:
    application/json' -d '{"service": "NAME"}'`` piped to ``python3 -c "...['token']"``: a token for
    every repository of the installation."""
    for service in ("lobboss", "lobsigliere", "lobwife"):
        out = run_gh(gh_wrapper, gh, LOBWIFE_URL=srv.http_url, SERVICE_NAME=service)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == sorted(f"minsley/{r}" for r in REPOS), service
    audit = json.loads(curl_sf("GET", srv.http_url + "/api/token/audit"))
    assert [e["action"] for e in audit].count("service_token_issued") == 3


def test_lobboss_vault_init_wget_and_sed(srv: ServerProcess, gh: FakeGitHub) -> None:
    """Mirrors ``k8s/base/lobboss-deployment.yaml`` lines 34-40 (the vault-init container, which has no
    python3): ``wget -qO- --post-data='{"service":"lobboss-init"}' --header='Content-Type:
    application/json' $LOBWIFE_URL/api/v1/service-token`` and the token cut out of the raw body with
    ``sed -n 's/.*"token": *"\\([^"]*\\)".*/\\1/p'``. So the body must hold ``"token": "..."`` with only
    spaces between the colon and the quoted value, the whole pair on one line."""
    out = sh(
        "wget -qO- --post-data='{\"service\":\"lobboss-init\"}' --header='Content-Type: application/json' "
        '"$LOBWIFE_URL/api/v1/service-token" | sed -n \'s/.*"token": *"\\([^"]*\\)".*/\\1/p\'',
        LOBWIFE_URL=srv.http_url,
    )
    token = out.stdout.strip()
    assert out.returncode == 0 and token.startswith("ghs_"), (out.stdout, out.stderr)
    assert fake_repos(gh, token) == sorted(f"minsley/{r}" for r in REPOS)


# -- 5. tests/lobwife-db (its HTTP part; the migration part is test_legacy_upgrade's) -----------------


def test_lobwife_db_script_crud_and_broker_unification(srv: ServerProcess) -> None:
    """Mirrors ``tests/lobwife-db`` lines 150-240 (not named by issue 10, but another lobmob client of the
    same routes), every call ``curl -sf``: create (``id > 0``, ``task_id`` starts with T); get (``name``,
    ``status == 'queued'``); list (a non-empty array) and ``?status=queued&type=swe`` (non-empty); PATCH
    status active + assigned_to (``'status' in updated``); events include ``created``; POST an event
    ``note`` and it appears; ``DELETE /api/v1/tasks/{id}`` has ``status == 'cancelled'`` and the task
    says so; a second DELETE with ``curl -s -w %{http_code}`` is ``409``. Then broker unification:
    ``POST /api/v1/tasks/{id}/register`` is ``registered`` and sets ``broker_repos``/``broker_status ==
    'active'``; the compat ``POST /api/tasks/{slug}/register`` and ``/api/tasks/T{id}/register`` are
    ``registered``; ``PATCH`` ``{"broker_repos": [...], "token_count": 5}`` has ``'broker_repos' in
    updated``."""
    api = srv.http_url
    made = json.loads(curl_sf("POST", api + "/api/v1/tasks", {"name": "Test task", "type": "swe", "priority": "high"}))
    n = made["id"]
    assert n > 0 and made["task_id"].startswith("T")
    got = json.loads(curl_sf("GET", f"{api}/api/v1/tasks/{n}"))
    assert (got["name"], got["status"]) == ("Test task", "queued")
    listing = json.loads(curl_sf("GET", api + "/api/v1/tasks"))
    assert isinstance(listing, list) and len(listing) > 0
    assert len(json.loads(curl_sf("GET", api + "/api/v1/tasks?status=queued&type=swe"))) > 0
    patched = json.loads(
        curl_sf("PATCH", f"{api}/api/v1/tasks/{n}", {"status": "active", "assigned_to": "lobster-swe-1"})
    )
    assert "status" in patched["updated"]
    assert json.loads(curl_sf("GET", f"{api}/api/v1/tasks/{n}"))["status"] == "active"
    assert "created" in [e["event_type"] for e in json.loads(curl_sf("GET", f"{api}/api/v1/tasks/{n}/events"))]
    curl_sf("POST", f"{api}/api/v1/tasks/{n}/events", {"event_type": "note", "detail": "test event"})
    assert "note" in [e["event_type"] for e in json.loads(curl_sf("GET", f"{api}/api/v1/tasks/{n}/events"))]
    assert json.loads(curl_sf("DELETE", f"{api}/api/v1/tasks/{n}"))["status"] == "cancelled"
    assert json.loads(curl_sf("GET", f"{api}/api/v1/tasks/{n}"))["status"] == "cancelled"
    again = sh('curl -s -o /dev/null -w "%{http_code}" -X DELETE "$U"', U=f"{api}/api/v1/tasks/{n}").stdout
    assert again == "409"

    b = json.loads(
        curl_sf("POST", api + "/api/v1/tasks", {"name": "Broker test", "type": "swe", "slug": "broker-test-slug"})
    )["id"]
    reg = json.loads(
        curl_sf("POST", f"{api}/api/v1/tasks/{b}/register", {"repos": ["minsley/lobmob"], "lobster_type": "swe"})
    )
    assert reg["status"] == "registered"
    got = json.loads(curl_sf("GET", f"{api}/api/v1/tasks/{b}"))
    assert got.get("broker_repos") is not None and got.get("broker_status") == "active"
    for ref, repos in (("broker-test-slug", [VAULT_REPO]), (f"T{b}", ["minsley/lobmob"])):
        out = json.loads(curl_sf("POST", f"{api}/api/tasks/{ref}/register", {"repos": repos, "lobster_type": "swe"}))
        assert out["status"] == "registered", ref
    patched = json.loads(
        curl_sf("PATCH", f"{api}/api/v1/tasks/{b}", {"broker_repos": ["minsley/lobmob", VAULT_REPO], "token_count": 5})
    )
    assert "broker_repos" in patched["updated"]
