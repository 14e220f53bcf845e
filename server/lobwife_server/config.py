"""Server configuration: flags, then environment variables, then defaults."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

#: The example jobs shipped with the package: the quick start's default jobs file.
# Job runs at once. Cron makes herds (many jobs at :00); the fleet's scripts mostly wait on the
# network, so 128 lets a herd start together while bounding processes and fds (2 per run).
DEFAULT_MAX_CONCURRENT_RUNS = 128
EXAMPLE_JOBS = Path(__file__).resolve().parent / "examples" / "jobs.toml"


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/lobwife``, i.e. ``~/.local/state/lobwife`` by default."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lobwife"


@dataclass(frozen=True)
class Config:
    state_dir: Path
    host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_port: int = 8081
    grace: float = 10.0
    log_level: str = "info"
    log_format: str = "json"
    max_body_bytes: int = 1024 * 1024
    readers: int = 2
    commit_delay: float = 0.002  # seconds at most; see storage.DEFAULT_COMMIT_DELAY
    jobs_file: Path | None = EXAMPLE_JOBS
    max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS

    @property
    def db_path(self) -> Path:
        return self.state_dir / "lobwife.db"

    @property
    def url(self) -> str:
        """How jobs reach this server's HTTP API ($LOBWIFE_URL in their environment)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.http_port}"


class ConfigError(ValueError):
    pass


def _env_int(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected an integer") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value}: must be between {lo} and {hi}")
    return value


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lobwife serve", description="Run the lobwife server (gRPC + HTTP/JSON).")
    p.add_argument(
        "--state-dir",
        type=Path,
        help="state folder holding lobwife.db (env LOBWIFE_STATE_DIR; "
        "default $XDG_STATE_HOME/lobwife, i.e. ~/.local/state/lobwife)",
    )
    p.add_argument(
        "--host", help="address to bind both ports to (env LOBWIFE_HOST; default 127.0.0.1; use 0.0.0.0 in a container)"
    )
    p.add_argument("--grpc-port", type=_port, help="gRPC port (env LOBWIFE_GRPC_PORT; default 50051)")
    p.add_argument("--http-port", type=_port, help="HTTP/JSON port (env LOBWIFE_HTTP_PORT; default 8081)")
    p.add_argument(
        "--grace", type=float, help="seconds in-flight calls get to finish on SIGTERM (env LOBWIFE_GRACE; default 10)"
    )
    p.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="env LOBWIFE_LOG_LEVEL; default info"
    )
    p.add_argument("--log-format", choices=["json", "text"], help="env LOBWIFE_LOG_FORMAT; default json")
    p.add_argument(
        "--jobs",
        help="jobs file (TOML) reconciled on start (env LOBWIFE_JOBS_FILE; default: the "
        "example jobs shipped with lobwife; an empty value means none)",
    )
    p.add_argument(
        "--max-concurrent-runs",
        type=int,
        help=f"bound on job runs at once (env LOBWIFE_MAX_CONCURRENT_RUNS; default {DEFAULT_MAX_CONCURRENT_RUNS})",
    )
    return p


def from_args(args: argparse.Namespace) -> Config:
    env = os.environ
    state_dir = args.state_dir or (Path(env["LOBWIFE_STATE_DIR"]) if env.get("LOBWIFE_STATE_DIR") else None)
    grace = args.grace if args.grace is not None else float(env.get("LOBWIFE_GRACE") or 10.0)
    if not 0 <= grace <= 3600:
        raise ConfigError(f"grace must be between 0 and 3600 seconds, got {grace}")
    log_level = args.log_level or env.get("LOBWIFE_LOG_LEVEL") or "info"
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"LOBWIFE_LOG_LEVEL={log_level!r}: expected debug, info, warning or error")
    log_format = args.log_format or env.get("LOBWIFE_LOG_FORMAT") or "json"
    if log_format not in ("json", "text"):
        raise ConfigError(f"LOBWIFE_LOG_FORMAT={log_format!r}: expected json or text")
    jobs = args.jobs if args.jobs is not None else env.get("LOBWIFE_JOBS_FILE")
    jobs_file = EXAMPLE_JOBS if jobs is None else (Path(jobs).expanduser() if jobs.strip() else None)
    max_runs = (
        args.max_concurrent_runs
        if args.max_concurrent_runs is not None
        else _env_int("LOBWIFE_MAX_CONCURRENT_RUNS", DEFAULT_MAX_CONCURRENT_RUNS, 1, 1024)
    )
    if not 1 <= max_runs <= 1024:
        raise ConfigError(f"max concurrent runs must be between 1 and 1024, got {max_runs}")
    return Config(
        jobs_file=jobs_file,
        max_concurrent_runs=max_runs,
        state_dir=(state_dir or default_state_dir()).expanduser(),
        host=args.host or env.get("LOBWIFE_HOST") or "127.0.0.1",
        grpc_port=args.grpc_port if args.grpc_port is not None else _env_int("LOBWIFE_GRPC_PORT", 50051, 0, 65535),
        http_port=args.http_port if args.http_port is not None else _env_int("LOBWIFE_HTTP_PORT", 8081, 0, 65535),
        grace=grace,
        log_level=log_level,
        log_format=log_format,
    )
