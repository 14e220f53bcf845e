"""Argument types and the parser pieces every command group shares: global options, one leaf per action."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from lobwife.cli._connect import CONNECT_TIMEOUT_S
from lobwife.client import DEFAULT_ADDR, parse_status


def status_arg(text: str) -> int:
    try:
        return parse_status(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("status: ")) from None


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def time_arg(text: str, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> datetime:
    """An ISO 8601 time (naive means UTC) or an age such as ``30m``, ``2h``, ``7d``."""
    match = _DURATION.match(text.strip())
    if match:
        return now() - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use ISO 8601 (2025-01-31, 2025-01-31T12:00:00Z) or an age (30m, 2h, 7d)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number 0 or more, not {text}")
    return value


_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_arg(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``8h``, ``7d`` or ``2w``; more than 0."""
    value = text.strip()
    match = _DURATION.match(value)
    try:
        seconds = int(match[1]) * _SECONDS[match[2]] if match else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 90s, 30m, 8h, 7d)") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return float(seconds)


def global_options() -> argparse.ArgumentParser:
    # SUPPRESS defaults: the options can be given before and after the command, and
    # a later parser that did not see an option must not overwrite an earlier value.
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument(
        "--addr", default=argparse.SUPPRESS, help=f"server address (env LOBWIFE_ADDR, default {DEFAULT_ADDR})"
    )
    group.add_argument(
        "--timeout", type=positive_float, default=argparse.SUPPRESS, help="deadline per call in seconds (default 10)"
    )
    group.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help=f"give up when no server answers within this (default {CONNECT_TIMEOUT_S:g})",
    )
    group.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        metavar="TOKEN",
        help="bearer token sent with every call (env LOBWIFE_TOKEN, which keeps it out of the process list)",
    )
    group.add_argument(
        "--token-file",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="read the bearer token from this file, e.g. a pod's projected service-account token"
        " (env LOBWIFE_TOKEN_FILE)",
    )
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return common


#: What ``add_subparsers()`` returns (argparse keeps the class private).
Subcommands = Any
#: A command: the parsed arguments and a connected client in, the exit status out.
Command = Callable[..., int]


def leaf(
    actions: Subcommands, common: argparse.ArgumentParser, name: str, func: Command, help: str
) -> argparse.ArgumentParser:
    """An action of a command group (``tasks create``): its parser, which runs ``func``."""
    p: argparse.ArgumentParser = actions.add_parser(name, help=help, description=help, parents=[common])
    p.set_defaults(func=func, parser=p)
    return p


def page_size_option(p: argparse.ArgumentParser) -> None:
    """``--limit`` of a paged list: the page size asked for. The server's default and maximum apply;
    they are the server's rule (one table, api/limits), so the CLI does not repeat them."""
    p.add_argument("--limit", type=positive_int, help="page size (the server's default and maximum apply)")
