"""A git smart-HTTP server that takes tokens the way GitHub does: the real ``git http-backend`` run as a CGI
program over bare repositories, on a free 127.0.0.1 port, behind GitHub's check of the credential.

Repositories live at ``root/<owner>/<name>.git`` and are served at ``url("owner/name")``. Every request
must carry HTTP basic auth whose password is a token the GitHub stand-in (``tests/fakes/github.py``) issued
and that is still good there (not revoked, not expired on its clock); the user name is anything, as on
GitHub (git gets ``x-access-token``). The token must reach the repository (its installation's account is
the owner, and the repository is in its scope) with ``contents: read`` to fetch and ``contents: write``
to push. Otherwise: 401 with ``WWW-Authenticate`` (no credential, or one GitHub does not take), 404
(a repository the token cannot see, as GitHub hides it), 403 (no write permission).

What it does after the check is git's own: ``git http-backend`` gets the CGI variables (``PATH_INFO``,
``REQUEST_METHOD``, ``QUERY_STRING``, ``CONTENT_TYPE``, ``CONTENT_LENGTH``, ``REMOTE_USER``, the
``Git-Protocol`` and ``Content-Encoding`` headers) and the request body streamed to its stdin; its
``Status:`` and other CGI headers become the response's, and its output is streamed back.

``requests`` records each request (method, path, service, status, the token offered) for the tests;
``before_push`` (a callable, or None) is called when a push starts (its ``info/refs`` request), before
the credential is checked, so a test can change the world at that moment (expire the token, say).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes._server import LocalServer
from tests.fakes.github import LEVELS, FakeGitHub

# /owner/name.git/rest: the only paths GitHub serves git at.
_PATH = re.compile(r"/(?P<owner>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+?)\.git(?P<rest>/.*)")
_SERVICES = ("git-upload-pack", "git-receive-pack")
# Request headers http-backend reads as CGI variables (HTTP_*), as a web server would pass them.
_PASSED_HEADERS = ("Git-Protocol", "Content-Encoding")

MSG_BAD_CREDENTIALS = "Invalid username or token. Password authentication is not supported for Git operations."
MSG_NOT_FOUND = "Repository not found."


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    service: str | None
    status: int
    token: str | None


class GitHttp(LocalServer):
    """Serves the bare repositories under ``root`` over smart HTTP to holders of the GitHub stand-in's tokens."""

    name = "GitHttp"

    def __init__(self, root: Path, github: FakeGitHub) -> None:
        self.root = root
        self.github = github
        self.requests: list[Seen] = []
        self.before_push: Callable[[], None] | None = None
        git = shutil.which("git")
        if git is None:
            raise RuntimeError("git is not installed")
        self._git = git
        super().__init__()

    def url(self, repo: str) -> str:
        """The clone URL of ``owner/name``."""
        if not self.port:
            raise RuntimeError("GitHttp is not started")
        return f"http://127.0.0.1:{self.port}/{repo}.git"

    def bare(self, repo: str) -> Path:
        """Where ``owner/name`` lives on disk (create it with ``git init --bare``)."""
        return self.root / f"{repo}.git"

    def _runner_options(self) -> dict[str, Any]:
        # http-backend is handed the body as the client sent it (gzip and all), with HTTP_CONTENT_ENCODING,
        # as a CGI server does: aiohttp must not inflate it first.
        return {"access_log": None, "auto_decompress": False, "shutdown_timeout": 1.0}

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def _service(self, request: web.Request, rest: str) -> str | None:
        if rest == "/info/refs":
            service = request.query.get("service")
            return service if service in _SERVICES else None
        name = rest.removeprefix("/")
        return name if name in _SERVICES and request.method == "POST" else None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        m = _PATH.fullmatch(request.path)
        service = self._service(request, m.group("rest")) if m else None
        token = _password(request)
        if m is None or service is None:
            # No dumb HTTP, no other paths: GitHub serves git only through the smart protocol.
            return self._record(request, service, token, web.Response(status=404, text=MSG_NOT_FOUND))
        if service == "git-receive-pack" and m.group("rest") == "/info/refs" and self.before_push is not None:
            self.before_push()
        denied = self._check(m.group("owner"), m.group("name"), token, write=service == "git-receive-pack")
        if denied is not None:
            return self._record(request, service, token, denied)
        resp = await self._cgi(request, m.group("owner"), m.group("name"), m.group("rest"))
        return self._record(request, service, token, resp)

    def _record(
        self, request: web.Request, service: str | None, token: str | None, resp: web.StreamResponse
    ) -> web.StreamResponse:
        self.requests.append(Seen(request.method, request.path_qs, service, resp.status, token))
        return resp

    def _check(self, owner: str, name: str, token: str | None, *, write: bool) -> web.Response | None:
        """GitHub's answer to a credential that may not do this, or None when it may."""
        issued = self.github.token_valid(token) if token else None
        if issued is None:
            return web.Response(
                status=401, text=MSG_BAD_CREDENTIALS, headers={"WWW-Authenticate": 'Basic realm="GitHub"'}
            )
        inst = self.github.installations.get(issued.installation_id)
        if inst is None or inst.account.lower() != owner.lower():
            return web.Response(status=404, text=MSG_NOT_FOUND)
        scope = issued.repositories if issued.repositories is not None else tuple(inst.repositories)
        if name.lower() not in {r.lower() for r in scope}:
            return web.Response(status=404, text=MSG_NOT_FOUND)
        level = LEVELS.get(issued.permissions.get("contents", ""), 0)
        if level < LEVELS["write" if write else "read"]:
            return web.Response(status=403, text=f"Permission to {owner}/{name}.git denied to x-access-token.")
        return None

    async def _cgi(self, request: web.Request, owner: str, name: str, rest: str) -> web.StreamResponse:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # The repositories' own config only: nothing of the host's or the test's user.
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "HOME": str(self.root),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": f"HTTP/{request.version.major}.{request.version.minor}",
            "REQUEST_METHOD": request.method,
            "PATH_INFO": f"/{owner}/{name}.git{rest}",
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "REMOTE_ADDR": request.remote or "127.0.0.1",
            # Set for an authenticated user, as a web server does; http-backend allows a push only then.
            "REMOTE_USER": "x-access-token",
        }
        if request.content_length is not None:
            env["CONTENT_LENGTH"] = str(request.content_length)
        for header in _PASSED_HEADERS:
            if header in request.headers:
                env["HTTP_" + header.upper().replace("-", "_")] = request.headers[header]
        proc = await asyncio.create_subprocess_exec(
            self._git,
            "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        feeding = asyncio.create_task(_feed(request, proc.stdin))
        errors = asyncio.create_task(proc.stderr.read())
        try:
            status, headers = await _cgi_headers(proc.stdout)
            resp = web.StreamResponse(status=status)
            for key, value in headers:
                resp.headers.add(key, value)
            await resp.prepare(request)
            while chunk := await proc.stdout.read(65536):
                await resp.write(chunk)
            await resp.write_eof()
            await feeding
            await proc.wait()
            await errors
            return resp
        finally:
            feeding.cancel()
            errors.cancel()
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


def _password(request: web.Request) -> str | None:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credential, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep and password else None


async def _feed(request: web.Request, stdin: asyncio.StreamWriter) -> None:
    """The request body to http-backend's stdin, as it arrives, then EOF."""
    try:
        async for chunk in request.content.iter_chunked(65536):
            stdin.write(chunk)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # http-backend stopped reading (it answered an error); its answer says why
    finally:
        stdin.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await stdin.wait_closed()


async def _cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, list[tuple[str, str]]]:
    """The CGI response's status (``Status:``, 200 without one) and its other headers, up to the blank line."""
    status = 200
    headers: list[tuple[str, str]] = []
    while True:
        raw = await stdout.readline()
        if not raw:
            return 502, []  # http-backend ended before its headers did: a broken gateway, as a web server says
        line = raw.decode("latin-1").rstrip("\r\n")
        if not line:
            return status, headers
        key, _, value = line.partition(":")
        if key.strip().lower() == "status":
            status = int(value.split()[0])
        else:
            headers.append((key.strip(), value.strip()))
