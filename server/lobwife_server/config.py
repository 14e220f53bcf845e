"""Server configuration: flags, then environment variables, then defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from lobwife_server.api.limits import (
    DEFAULT_HTTP_BODY_TIMEOUT,
    DEFAULT_HTTP_HEADER_TIMEOUT,
    DEFAULT_HTTP_IDLE_TIMEOUT,
    HTTP_MAX_CONNECTIONS_CAP,
    HTTP_MIN_FD_RESERVE,
    HttpLimits,
    default_http_max_connections,
    fd_limit,
)
from lobwife_server.auth import settings as auth_settings
from lobwife_server.broker import settings as broker_settings
from lobwife_server.broker.github import GitHubConfigError
from lobwife_server.costs.budgets import BudgetSettings, BudgetSettingsError, parse_fleet_budget, parse_type_budgets
from lobwife_server.jobs.scheduler import DEFAULT_MAX_CONCURRENT_RUNS
from lobwife_server.vault.runner import DEFAULT_INTERVAL as DEFAULT_VAULT_INTERVAL
from lobwife_server.vault.runner import VaultSettings

#: The example jobs shipped with the package: the quick start's default jobs file.
EXAMPLE_JOBS = Path(__file__).resolve().parent / "jobs" / "examples" / "jobs.toml"


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/lobwife``, i.e. ``~/.local/state/lobwife`` by default."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lobwife"


@dataclass(frozen=True)
class Config:
    """Everything the server is told at start (flags, then environment, then these defaults); see README
    "Configuration"."""

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
    #: Price entries added to the shipped table (costs/prices.toml); None: the shipped table alone.
    prices_file: Path | None = None
    #: Default budgets per task type and the fleet's daily budget (costs/budgets.py); none by default.
    budgets: BudgetSettings = field(default_factory=BudgetSettings)
    #: The vault sync (--vault, VAULT_PATH); off by default.
    vault: VaultSettings = field(default_factory=VaultSettings)
    max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS
    http_limits: HttpLimits = field(default_factory=HttpLimits)
    #: --auth and its credentials (docs/auth.md).
    auth: auth_settings.AuthSettings = field(default_factory=auth_settings.AuthSettings)
    #: The token broker: GH_APP_* and LOBWIFE_BROKER_* (broker/settings.py); not configured by default.
    broker: broker_settings.BrokerSettings = field(default_factory=broker_settings.BrokerSettings)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "lobwife.db"

    @property
    def url(self) -> str:
        """How jobs reach this server's HTTP API ($LOBWIFE_URL in their environment)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.http_port}"


class ConfigError(ValueError):
    """A bad flag or environment value; the message names it (a usage error, exit 2)."""

    pass


def _vault(args: argparse.Namespace, env: Mapping[str, str]) -> VaultSettings:
    path = args.vault if args.vault is not None else env.get("VAULT_PATH")
    if not path or not path.strip():
        return VaultSettings()
    raw = args.vault_interval if args.vault_interval is not None else env.get("VAULT_SYNC_INTERVAL")
    try:
        interval = float(raw) if raw is not None else DEFAULT_VAULT_INTERVAL
    except ValueError:
        raise ConfigError(f"VAULT_SYNC_INTERVAL={raw!r}: expected seconds") from None
    if not 10 <= interval <= 86400:
        raise ConfigError(f"vault sync interval must be between 10 and 86400 seconds, got {interval:g}")
    remote = args.vault_remote if args.vault_remote is not None else env.get("LOBWIFE_VAULT_REMOTE", "origin")
    return VaultSettings(Path(path).expanduser(), interval, remote.strip() or None)


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


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number of seconds") from None


def _seconds(which: str, value: float | None, default: float) -> float:
    """An HTTP timeout from its flag, else its variable, else the default; out of range names both."""
    flag, env = f"--http-{which}-timeout", f"LOBWIFE_HTTP_{which.upper()}_TIMEOUT"
    seconds = value if value is not None else _env_float(env, default)
    if not 0.1 <= seconds <= 3600:  # also refuses nan
        raise ConfigError(f"{flag} / {env}={seconds:g}: must be between 0.1 and 3600 seconds")
    return seconds


def _http_limits(args: argparse.Namespace, max_runs: int) -> HttpLimits:
    nofile = fd_limit()
    env = "LOBWIFE_HTTP_MAX_CONNECTIONS"
    conns = args.http_max_connections if args.http_max_connections is not None else _env_int(env, 0, 0, 1 << 20)
    highest = nofile - HTTP_MIN_FD_RESERVE
    if conns == 0:
        conns = default_http_max_connections(nofile, max_runs)
    elif not 1 <= conns <= highest:
        raise ConfigError(
            f"--http-max-connections / {env}={conns}: must be between 1 and {highest} "
            f"(the file-descriptor limit {nofile} minus {HTTP_MIN_FD_RESERVE} for the rest), or 0 for the default"
        )
    return HttpLimits(
        header_timeout=_seconds("header", args.http_header_timeout, DEFAULT_HTTP_HEADER_TIMEOUT),
        body_timeout=_seconds("body", args.http_body_timeout, DEFAULT_HTTP_BODY_TIMEOUT),
        idle_timeout=_seconds("idle", args.http_idle_timeout, DEFAULT_HTTP_IDLE_TIMEOUT),
        max_connections=conns,
    )


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
        "--vault",
        help="a git clone of the Obsidian vault to keep the tasks in (env VAULT_PATH; default: no vault sync)",
    )
    p.add_argument(
        "--vault-interval",
        type=float,
        help=f"seconds between vault syncs (env VAULT_SYNC_INTERVAL; default {DEFAULT_VAULT_INTERVAL:g})",
    )
    p.add_argument(
        "--vault-remote",
        help="the git remote the vault is pushed to (env LOBWIFE_VAULT_REMOTE; default origin; empty: commit only)",
    )
    p.add_argument(
        "--prices",
        help="a price file (TOML, the shape of the shipped costs/prices.toml) whose entries are added to the"
        " shipped table (env LOBWIFE_PRICES)",
    )
    p.add_argument(
        "--task-budget",
        action="append",
        metavar="TYPE=USD",
        help="the budget of a task of this type that has none of its own, in US dollars; repeat or comma-separate"
        " (swe=5,qa=2.5) (env LOBWIFE_TASK_BUDGETS)",
    )
    p.add_argument(
        "--fleet-daily-budget",
        metavar="USD",
        help="what the whole fleet may spend per UTC day, in US dollars (env LOBWIFE_FLEET_DAILY_BUDGET)",
    )
    p.add_argument(
        "--max-concurrent-runs",
        type=int,
        help=f"bound on job runs at once (env LOBWIFE_MAX_CONCURRENT_RUNS; default {DEFAULT_MAX_CONCURRENT_RUNS})",
    )
    p.add_argument(
        "--http-header-timeout",
        type=float,
        help="seconds a client gets to send a request's headers, from connecting or from its first byte "
        f"(env LOBWIFE_HTTP_HEADER_TIMEOUT; default {DEFAULT_HTTP_HEADER_TIMEOUT:g})",
    )
    p.add_argument(
        "--http-body-timeout",
        type=float,
        help="seconds a request body may go without a byte arriving "
        f"(env LOBWIFE_HTTP_BODY_TIMEOUT; default {DEFAULT_HTTP_BODY_TIMEOUT:g})",
    )
    p.add_argument(
        "--http-idle-timeout",
        type=float,
        help="seconds an idle keep-alive connection stays open "
        f"(env LOBWIFE_HTTP_IDLE_TIMEOUT; default {DEFAULT_HTTP_IDLE_TIMEOUT:g})",
    )
    p.add_argument(
        "--http-max-connections",
        type=int,
        help="bound on open HTTP connections; more are answered 503 and closed (env "
        "LOBWIFE_HTTP_MAX_CONNECTIONS; default 0: the fd limit minus 128 + 2 per concurrent run, "
        f"at most half the limit, capped at {HTTP_MAX_CONNECTIONS_CAP})",
    )
    auth_settings.add_arguments(p)
    return p


def _budgets(args: argparse.Namespace, env: Mapping[str, str]) -> BudgetSettings:
    try:
        if args.task_budget is not None:
            per_type = parse_type_budgets(args.task_budget, "--task-budget")
        else:
            per_type = parse_type_budgets([env.get("LOBWIFE_TASK_BUDGETS") or ""], "LOBWIFE_TASK_BUDGETS")
        if args.fleet_daily_budget is not None:
            fleet = parse_fleet_budget(args.fleet_daily_budget, "--fleet-daily-budget")
        else:
            fleet = parse_fleet_budget(env.get("LOBWIFE_FLEET_DAILY_BUDGET"), "LOBWIFE_FLEET_DAILY_BUDGET")
    except BudgetSettingsError as e:
        raise ConfigError(str(e)) from None
    return BudgetSettings(MappingProxyType(per_type), fleet)


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
    vault = _vault(args, env)
    prices = args.prices if args.prices is not None else env.get("LOBWIFE_PRICES")
    prices_file = Path(prices).expanduser() if prices and prices.strip() else None
    budgets = _budgets(args, env)
    max_runs = (
        args.max_concurrent_runs
        if args.max_concurrent_runs is not None
        else _env_int("LOBWIFE_MAX_CONCURRENT_RUNS", DEFAULT_MAX_CONCURRENT_RUNS, 1, 1024)
    )
    if not 1 <= max_runs <= 1024:
        raise ConfigError(f"max concurrent runs must be between 1 and 1024, got {max_runs}")
    try:
        auth = auth_settings.from_args(args, env)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        broker = broker_settings.from_env(env)
    except GitHubConfigError as e:
        # The message names the variable and never carries key material.
        raise ConfigError(f"token broker: {e}") from None
    return Config(
        auth=auth,
        broker=broker,
        http_limits=_http_limits(args, max_runs),
        jobs_file=jobs_file,
        prices_file=prices_file,
        budgets=budgets,
        vault=vault,
        max_concurrent_runs=max_runs,
        state_dir=(state_dir or default_state_dir()).expanduser(),
        host=args.host or env.get("LOBWIFE_HOST") or "127.0.0.1",
        grpc_port=args.grpc_port if args.grpc_port is not None else _env_int("LOBWIFE_GRPC_PORT", 50051, 0, 65535),
        http_port=args.http_port if args.http_port is not None else _env_int("LOBWIFE_HTTP_PORT", 8081, 0, 65535),
        grace=grace,
        log_level=log_level,
        log_format=log_format,
    )
