"""Prometheus metrics, served on the HTTP port at /metrics."""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

REGISTRY = CollectorRegistry(auto_describe=True)

DB_COMMIT_BATCH = Histogram(
    "lobwife_db_commit_batch_size",
    "Writes committed together in one SQLite transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
WATCHERS = Gauge("lobwife_watch_streams", "Open WatchTasks streams.", registry=REGISTRY)
# The HTTP limits (api/limits.py): counted only where a limit acts, never per request.
HTTP_CONNECTIONS = Gauge(
    "lobwife_http_connections_open", "Open HTTP connections (the bound is --http-max-connections).", registry=REGISTRY
)
HTTP_REFUSED = Counter(
    "lobwife_http_connections_refused",
    "HTTP connections refused because the connection bound was reached.",
    registry=REGISTRY,
)
HTTP_TIMEOUTS = Counter(
    "lobwife_http_timeouts",
    "HTTP requests ended by a limit: phase=headers (not complete in time) or body (silent too long).",
    ["phase"],
    registry=REGISTRY,
)
# Auth (auth/enforcer.py): counted only when a call is (or would be) refused. `rule` is the RPC whose
# rule refused it, `reason` one word from a fixed set; never a subject or anything of the credential.
AUTH_DENIED = Counter(
    "lobwife_auth_denied",
    "Calls refused by --auth enforce, by rule (the RPC) and reason (missing, expired, role, other_task...).",
    ["rule", "reason"],
    registry=REGISTRY,
)
AUTH_WOULD_DENY = Counter(
    "lobwife_auth_would_deny",
    "Calls --auth permissive let through that enforce would refuse, by rule (the RPC) and reason.",
    ["rule", "reason"],
    registry=REGISTRY,
)
# Costs (costs/service.py): calls recorded for a model the price table has no price for (at that
# time). No model label: the model is the client's text, and a label per text is unbounded.
COSTS_UNPRICED = Counter(
    "lobwife_costs_unpriced",
    "Cost events recorded with no computed cost: the price table has no price for the model at that time.",
    registry=REGISTRY,
)
# A budget crossed (costs/budgets.py): `task` (a task's own or its type's default) or `fleet` (the
# daily budget). Two label values only.
COSTS_BUDGET_EXCEEDED = Counter(
    "lobwife_costs_budget_exceeded",
    "Budgets crossed by recorded costs (each crossing once: a task's budget, or the fleet's daily one).",
    ["scope"],
    registry=REGISTRY,
)


# Per-RPC counts and latencies are kept in plain dicts and lists and turned into
# metric families only when /metrics is scraped. prometheus_client's labelled
# Counter.inc + Histogram.observe cost about 2 µs a call (locks, a bucket loop);
# this costs a fraction of that, on every RPC. Everything runs on the event
# loop, so no lock is needed. The exposition is the same as before:
# lobwife_rpc_calls_total{service,method,transport,code} (+ _created) and the
# lobwife_rpc_duration_seconds histogram{service,method,transport}.
RPC_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _CallStats:
    __slots__ = ("counts", "hists")

    def __init__(self) -> None:
        # (service short name, method, transport, code) -> [count, created]
        self.counts: dict[tuple[str, str, str, str], list[float]] = {}
        # (service short name, method, transport) -> [per-bucket counts..., +Inf count, sum, created]
        self.hists: dict[tuple[str, str, str], list[float]] = {}


_stats = _CallStats()
_short: dict[str, str] = {}
_NB = len(RPC_BUCKETS)
_BOUND_TEXT: tuple[str, ...] = tuple(floatToGoString(b) for b in RPC_BUCKETS)  # type: ignore[no-untyped-call]


class CallMeter:
    """The counts and latencies of one method over one transport.

    The dispatcher makes one per (method, transport) at start-up, so a call costs
    no key building or look-up beyond its status code. Series appear in /metrics
    once their first call is seen, as with labelled prometheus_client metrics.
    """

    __slots__ = ("_codes", "_hist", "_key")

    def __init__(self, service: str, method: str, transport: str) -> None:
        short = _short.get(service)
        if short is None:
            short = _short[service] = service.rsplit(".", 1)[-1]
        self._key = (short, method, transport)
        self._codes: dict[str, list[float]] = {}
        self._hist: list[float] | None = None

    def observe(self, code: str, seconds: float) -> None:
        c = self._codes.get(code)
        if c is None:
            c = self._codes[code] = _stats.counts.setdefault((*self._key, code), [0, time.time()])
        c[0] += 1
        h = self._hist
        if h is None:
            h = self._hist = _stats.hists.setdefault(self._key, [0] * (_NB + 1) + [0.0, time.time()])
        h[bisect.bisect_left(RPC_BUCKETS, seconds)] += 1  # non-cumulative here; summed at scrape time
        h[_NB + 1] += seconds


class _CallCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "lobwife_rpc_calls",
            "RPCs handled, by service, method, transport and gRPC status code.",
            labels=["service", "method", "transport", "code"],
        )
        for key, (count, created) in list(_stats.counts.items()):
            calls.add_metric(list(key), count, created=created)
        yield calls
        latency = HistogramMetricFamily(
            "lobwife_rpc_duration_seconds",
            "Time spent handling an RPC (for streams: the stream's lifetime).",
            labels=["service", "method", "transport"],
        )
        created_samples: list[Sample] = []
        for hkey, hist in list(_stats.hists.items()):
            h = list(hist)
            buckets: list[tuple[str, float]] = []
            total = 0.0
            for i, text in enumerate(_BOUND_TEXT):
                total += h[i]
                buckets.append((text, total))
            buckets.append(("+Inf", total + h[_NB]))
            latency.add_metric(list(hkey), buckets, h[_NB + 1])
            labels = dict(zip(("service", "method", "transport"), hkey, strict=True))
            created_samples.append(Sample("lobwife_rpc_duration_seconds_created", labels, h[_NB + 2]))
        latency.samples.extend(created_samples)
        yield latency


REGISTRY.register(_CallCollector())
