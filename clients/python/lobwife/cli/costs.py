"""``lobwife costs ...``: record a model call's usage, list the calls, summarise them, reprice them.

Token counts follow the API's rule: ``--input`` excludes the cache (``--cache-read`` and
``--cache-write`` are apart), ``--reasoning`` is part of ``--output``.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from lobwife.cli._args import Subcommands, leaf, non_negative_float, non_negative_int, page_size_option, time_arg
from lobwife.cli._output import (
    _json,
    _print_json,
    fetch_page,
    format_table,
    format_timestamp,
    message_to_dict,
    print_page,
)
from lobwife.client import Client
from lobwife.v1 import costs_pb2

HEADERS = ("ID", "TIME", "TASK", "MODEL", "INPUT", "OUTPUT", "CACHE R", "CACHE W", "COST USD", "NOTE")
SUMMARY_HEADERS = ("KEY", "CALLS", "INPUT", "OUTPUT", "CACHE R", "CACHE W", "COST USD", "UNPRICED", "BUDGET")
GROUPS = ("model", "task", "type", "day", "hour")


def cost_row(c: costs_pb2.CostEvent) -> list[str]:
    return [
        str(c.id),
        format_timestamp(c.created_at),
        f"T{c.task_id}" if c.HasField("task_id") else "-",
        c.model,
        f"{c.input_tokens:,}",
        f"{c.output_tokens:,}",
        f"{c.cache_read_tokens:,}",
        f"{c.cache_write_tokens:,}",
        f"{c.cost_usd:.6f}",
        c.cost_note or ("caller" if c.HasField("caller_cost_usd") else ""),
    ]


def summary_row(r: costs_pb2.CostSummaryRow) -> list[str]:
    return [
        r.key or "-",
        f"{r.calls:,}",
        f"{r.input_tokens:,}",
        f"{r.output_tokens:,}",
        f"{r.cache_read_tokens:,}",
        f"{r.cache_write_tokens:,}",
        f"{r.cost_usd:.6f}",
        str(r.unpriced_calls),
        (f"{r.budget_usd:.2f}" + (" OVER" if r.budget_exceeded else "")) if r.HasField("budget_usd") else "",
    ]


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    costs = commands.add_parser("costs", help="model usage and its cost", parents=[common])
    actions = costs.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = leaf(actions, common, "record", cmd_record, "record one model call's usage")
    p.add_argument("model", metavar="MODEL", help="as the API reported it, e.g. claude-sonnet-4-5-20250929")
    p.add_argument("--task", dest="task_ref", metavar="T42")
    p.add_argument("--provider", help="anthropic, openai, ...")
    p.add_argument("--input", type=non_negative_int, default=0, help="input tokens, the cache excluded")
    p.add_argument("--output", type=non_negative_int, default=0, help="output tokens, reasoning included")
    p.add_argument("--cache-read", type=non_negative_int, default=0)
    p.add_argument("--cache-write", type=non_negative_int, default=0)
    p.add_argument("--reasoning", type=non_negative_int, default=0, help="of the output tokens, those spent reasoning")
    p.add_argument("--cost", type=non_negative_float, help="USD the provider billed (default: the price table's)")
    p.add_argument("--at", type=time_arg, help="when the call happened (default now)")
    p.add_argument("--request-id", help="makes a retried record count once")

    p = leaf(actions, common, "list", cmd_list, "list recorded calls, newest first")
    p.add_argument("--task", dest="task_ref", metavar="T42")
    p.add_argument("--model")
    p.add_argument("--provider")
    p.add_argument("--type", dest="task_type", help="the task type")
    p.add_argument("--since", type=time_arg, help="an ISO 8601 time, or 2h, 3d ago")
    p.add_argument("--until", type=time_arg)
    page_size_option(p)
    p.add_argument("--page-token", help="continue from a previous page")
    p.add_argument("--all", action="store_true", help="fetch every page")

    p = leaf(actions, common, "summary", cmd_summary, "totals by model, task, type, day or hour")
    p.add_argument("--by", choices=GROUPS, default="model")
    p.add_argument("--task", dest="task_ref", metavar="T42")
    p.add_argument("--model")
    p.add_argument("--since", type=time_arg)
    p.add_argument("--until", type=time_arg)

    p = leaf(actions, common, "reprice", cmd_reprice, "compute costs again with the price table as it is now")
    p.add_argument("--since", type=time_arg, required=True)
    p.add_argument("--until", type=time_arg)
    p.add_argument("--dry-run", action="store_true", help="count what would change, change nothing")


def cmd_record(ns: argparse.Namespace, client: Client) -> int:
    c = client.record_cost(
        ns.model,
        task_ref=ns.task_ref,
        provider=ns.provider,
        input_tokens=ns.input,
        output_tokens=ns.output,
        cache_read_tokens=ns.cache_read,
        cache_write_tokens=ns.cache_write,
        reasoning_tokens=ns.reasoning,
        cost_usd=ns.cost,
        at=ns.at,
        request_id=ns.request_id,
    )
    if _json(ns):
        _print_json(message_to_dict(c), sys.stdout)
    else:
        note = f" ({c.cost_note})" if c.cost_note else ""
        sys.stdout.write(f"recorded cost {c.id}: ${c.cost_usd:.6f}{note}\n")
    return 0


def cmd_list(ns: argparse.Namespace, client: Client) -> int:
    filters = {
        "task_ref": ns.task_ref,
        "model": ns.model,
        "provider": ns.provider,
        "task_type": ns.task_type,
        "start": ns.since,
        "end": ns.until,
    }
    found, next_token = fetch_page(
        ns, partial(client.iter_costs, **filters), partial(client.list_costs, **filters), lambda p: p.costs
    )
    return print_page(ns, "costs", found, next_token, HEADERS, cost_row)


def cmd_summary(ns: argparse.Namespace, client: Client) -> int:
    resp = client.summarize_costs(ns.by, task_ref=ns.task_ref, model=ns.model, start=ns.since, end=ns.until)
    if _json(ns):
        _print_json(message_to_dict(resp), sys.stdout)
        return 0
    rows = [summary_row(r) for r in resp.rows] + [summary_row(resp.total)]
    sys.stdout.write(format_table(SUMMARY_HEADERS, rows))
    if resp.HasField("fleet_budget"):
        f = resp.fleet_budget
        state = "OVER" if f.exceeded else "within"
        sys.stdout.write(
            f"fleet today ({f.day} UTC): ${f.spent_usd:.2f} of ${f.daily_budget_usd:.2f} daily budget, {state}\n"
        )
    return 0


def cmd_reprice(ns: argparse.Namespace, client: Client) -> int:
    resp = client.reprice_costs(ns.since, until=ns.until, dry_run=ns.dry_run)
    if _json(ns):
        _print_json(message_to_dict(resp), sys.stdout)
    else:
        verb = "would change" if ns.dry_run else "changed"
        sys.stdout.write(f"examined {resp.examined}, {verb} {resp.changed}, by ${resp.delta_usd:+.6f} in all\n")
    return 0
