"""The write-through task cache: never older than what is committed, and it keeps what is read."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from lobwife.v1 import tasks_pb2
from lobwife_server.tasks.cache import TaskCache


def task(n: int, version: int = 1) -> tasks_pb2.Task:
    return tasks_pb2.Task(id=n, name=f"t{n}", updated_at=timestamp_pb2.Timestamp(seconds=version))


def test_fill_after_capacity_is_reached() -> None:
    """Regression: once full, every put evicts; fills must still be accepted when no eviction raced them."""
    cache = TaskCache(capacity=3)
    for n in range(1, 5):
        cache.put(task(n))
    assert cache.get(1) is None  # evicted (least recently used)
    mark = cache.mark()
    cache.fill(task(1), mark)
    assert cache.get(1) == task(1)


def test_a_late_fill_never_shadows_a_newer_write() -> None:
    cache = TaskCache(capacity=10)
    mark = cache.mark()  # a read of task 1 starts, and sees version 1
    cache.put(task(1, version=2))  # meanwhile a write commits version 2
    cache.fill(task(1, version=1), mark)  # the read returns late
    assert cache.get(1) == task(1, version=2)


def test_a_fill_racing_an_eviction_is_refused() -> None:
    cache = TaskCache(capacity=2)
    cache.put(task(1, version=1))
    mark = cache.mark()  # read of task 1 (version 1) begins
    cache.put(task(1, version=2))
    cache.put(task(2))
    cache.put(task(3))  # evicts task 1 (version 2)
    cache.fill(task(1, version=1), mark)
    assert cache.get(1) is None


def test_reads_keep_hot_tasks_cached_under_write_churn() -> None:
    cache = TaskCache(capacity=3)
    cache.put(task(1))
    for n in range(2, 50):
        assert cache.get(1) is not None  # read between writes: stays most recently used
        cache.put(task(n))
    assert cache.get(1) == task(1)
    assert cache.peek_version(1, 1_000_000) == task(1) and cache.peek_version(1, 5) is None


def test_serialized_form_matches_each_version() -> None:
    cache = TaskCache(capacity=10)
    cache.put(task(1, version=1))
    assert cache.get_bytes(1) == task(1, version=1).SerializeToString()
    cache.put(task(1, version=2))
    data = cache.peek_bytes(1, 2_000_000)
    assert data is not None and tasks_pb2.Task.FromString(data) == task(1, version=2)
    assert cache.peek_bytes(1, 1_000_000) is None  # an older version is never handed out
    assert cache.get_bytes(2) is None
    mark = cache.mark()
    cache.fill(task(2), mark)
    assert cache.get_bytes(2) == task(2).SerializeToString()
