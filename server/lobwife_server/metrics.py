"""Prometheus metrics, served on the HTTP port at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

RPC_CALLS = Counter(
    "lobwife_rpc_calls",
    "RPCs handled, by service, method, transport and gRPC status code.",
    ["service", "method", "transport", "code"],
    registry=REGISTRY,
)
RPC_LATENCY = Histogram(
    "lobwife_rpc_duration_seconds",
    "Time spent handling an RPC (for streams: the stream's lifetime).",
    ["service", "method", "transport"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
DB_COMMIT_BATCH = Histogram(
    "lobwife_db_commit_batch_size",
    "Writes committed together in one SQLite transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
WATCHERS = Gauge("lobwife_watch_streams", "Open WatchTasks streams.", registry=REGISTRY)


# labels() costs several microseconds a call; resolve each label set once.
_calls: dict[tuple[str, str, str, str], Counter] = {}
_latency: dict[tuple[str, str, str], Histogram] = {}


def observe_call(service: str, method: str, transport: str, code: str, seconds: float) -> None:
    key = (service, method, transport, code)
    counter = _calls.get(key)
    if counter is None:
        short = service.rsplit(".", 1)[-1]
        counter = _calls[key] = RPC_CALLS.labels(short, method, transport, code)
    counter.inc()
    hkey = (service, method, transport)
    hist = _latency.get(hkey)
    if hist is None:
        hist = _latency[hkey] = RPC_LATENCY.labels(service.rsplit(".", 1)[-1], method, transport)
    hist.observe(seconds)
