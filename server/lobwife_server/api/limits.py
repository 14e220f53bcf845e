"""HTTP limits against slow and idle clients (docs/http.md, "Slow clients"): the one place they are set.

The gateway's LimitedSite enforces them; config reads flags and environment into :class:`HttpLimits`.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

# HTTP limits against slow and idle clients (docs/http.md, "Slow clients").
# Headers: curl and the fleet's clients send a request's headers in one segment, so
# 10 s only ever ends a client that is stuck or hostile.
DEFAULT_HTTP_HEADER_TIMEOUT = 10.0
# Body: the bound is on silence (no byte for this long), not on the whole upload.
DEFAULT_HTTP_BODY_TIMEOUT = 30.0
# Idle keep-alive: long enough for a script's next call to reuse the connection, short
# enough that idle pools do not hold connection slots (and fds) for long.
DEFAULT_HTTP_IDLE_TIMEOUT = 15.0
# Open HTTP connections, by default: the fd limit minus a reserve for everything else
# (job runs, 2 fds each; the database; gRPC; logs), at most half the limit, capped.
HTTP_FD_RESERVE_BASE = 128
HTTP_MAX_CONNECTIONS_CAP = 1024
# An explicit --http-max-connections must leave at least this many fds for the rest.
HTTP_MIN_FD_RESERVE = 64


def fd_limit() -> int:
    """This process's file-descriptor limit (the soft RLIMIT_NOFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = hard if hard != resource.RLIM_INFINITY else 1 << 20
    return int(soft)


def default_http_max_connections(nofile: int, max_concurrent_runs: int) -> int:
    """The default bound on open HTTP connections for an fd limit of ``nofile``.

    ``nofile`` minus a reserve of 128 + 2 per concurrent job run (the reserve is at most
    half the limit), capped at 1024: 640 under the common soft limit of 1024 with 128
    runs, 128 under a limit of 256.
    """
    reserve = min(HTTP_FD_RESERVE_BASE + 2 * max_concurrent_runs, nofile // 2)
    return max(1, min(HTTP_MAX_CONNECTIONS_CAP, nofile - reserve))


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on what one HTTP client can hold (seconds; connections)."""

    header_timeout: float = DEFAULT_HTTP_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_HTTP_BODY_TIMEOUT
    idle_timeout: float = DEFAULT_HTTP_IDLE_TIMEOUT
    max_connections: int = HTTP_MAX_CONNECTIONS_CAP
