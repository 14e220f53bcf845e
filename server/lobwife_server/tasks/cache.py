"""A write-through cache of Task messages, so hot reads skip SQLite and row decoding.

Why it is safe: every write goes through this process's single writer thread,
and each write puts the task's new snapshot here after its COMMIT and before the
client is answered. So a client always reads its own acknowledged writes.

Two rules keep a cached entry from ever being older than what is committed:
- writes always replace the entry (``put``);
- a read that missed may add what it read (``fill``) only if the entry is still
  absent and nothing was evicted since the read began (an eviction could have
  dropped a newer snapshot that a late fill would then shadow).

Eviction is least-recently-used: writes and ``get`` (GetTask) refresh an entry;
reader threads only look (``peek_version``), they never reorder.

Each entry also keeps the task's serialized bytes, made once per version: GetTask
and ListTasks answer with them (``rpc.WireMessage``) instead of copying messages,
and the HTTP gateway's JSON fragment cache is keyed by those same bytes objects.

List reads also compare each cached task's ``updated_at`` with the row they
selected (a task's ``updated_at`` strictly increases with every change), so a
list never mixes a stale snapshot into a fresh filter result.
"""

from __future__ import annotations

from collections import OrderedDict

from lobwife.v1 import tasks_pb2
from lobwife_server.core.timeutil import set_ts, to_us


class TaskCache:
    """Write-through cache of task snapshots with their serialized bytes, newest kept, oldest evicted."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        # id -> (updated_at in µs, task, task serialized); the number saves a proto
        # access per list row. An OrderedDict, not a dict: dropping the oldest entry of a
        # dict again and again (next(iter(d))) walks the holes its deletions leave.
        self._items: OrderedDict[int, tuple[int, tasks_pb2.Task, bytes]] = OrderedDict()
        self._seq = 0  # bumped by every put and eviction
        self._last_evict = -1
        self.hits = 0
        self.misses = 0

    def mark(self) -> int:
        """Call before a read whose result may be filled in later."""
        return self._seq

    def _touch(self, task_id: int) -> tuple[int, tasks_pb2.Task, bytes] | None:
        entry = self._items.get(task_id)
        if entry is None:
            self.misses += 1
            return None
        self._items.move_to_end(task_id)
        self.hits += 1
        return entry

    def get(self, task_id: int) -> tasks_pb2.Task | None:
        """The cached task, refreshed as most recently used (call on the event loop only)."""
        entry = self._touch(task_id)
        return None if entry is None else entry[1]

    def get_bytes(self, task_id: int) -> bytes | None:
        """The cached task's serialized bytes, as :meth:`get` (event loop only)."""
        entry = self._touch(task_id)
        return None if entry is None else entry[2]

    def status(self, task_id: int) -> int | None:
        """The cached task's status (a ``TaskStatus`` value), as :meth:`get`; None when it is not cached.
        Read from the message kept beside the bytes: nothing is parsed."""
        entry = self._touch(task_id)
        return None if entry is None else entry[1].status

    def put_token_count(self, task_id: int, token_count: int, updated_us: int) -> None:
        """A committed change of nothing but the task's ``token_count`` (and so its ``updated_at``), put
        after its commit like any write's snapshot, without the whole row: the new snapshot is the
        cached one with those two fields set (one copy and one serialization, on the event loop).

        The cached entry is then the version just before this one: writes put their snapshots in
        commit order and a read fills only what no write put since it began. Or it is this version
        or a newer one, filled by a read that began after the commit: left as it is. When the task
        is not cached, nothing is put, but a read that began before this commit must not fill the
        older version it read: that is refused as after an eviction.
        """
        entry = self._items.get(task_id)
        if entry is None:
            self._seq += 1
            self._last_evict = self._seq
            return
        if entry[0] >= updated_us:
            return
        task = tasks_pb2.Task()
        task.CopyFrom(entry[1])
        task.token_count = token_count
        set_ts(task.updated_at, updated_us)
        self.put(task, None, updated_us)

    def peek_version(self, task_id: int, updated_us: int) -> tasks_pb2.Task | None:
        """The cached task if it is exactly that version (safe from reader threads: one dict read)."""
        entry = self._items.get(task_id)
        if entry is not None and entry[0] == updated_us:
            return entry[1]
        return None

    def peek_bytes(self, task_id: int, updated_us: int) -> bytes | None:
        """The cached task's serialized bytes if it is exactly that version (as :meth:`peek_version`)."""
        entry = self._items.get(task_id)
        if entry is not None and entry[0] == updated_us:
            return entry[2]
        return None

    def newest(self, top: int, count: int) -> list[tuple[int, bytes]] | None:
        """Tasks ``top``, ``top - 1``, ... (``count`` of them, down to task 1) as (id, bytes), if all are here.

        With ids handed out in sequence and never deleted, those are exactly the
        newest tasks at or below ``top``, so an unfiltered page needs no query when
        the cache holds every one of them; None means some are not cached. Like the
        reader threads' peeks, it does not reorder the entries.
        """
        items = self._items
        out: list[tuple[int, bytes]] = []
        for number in range(top, max(0, top - count), -1):
            entry = items.get(number)
            if entry is None:
                return None
            out.append((number, entry[2]))
        return out

    def put(self, task: tasks_pb2.Task, data: bytes | None = None, updated_us: int | None = None) -> None:
        """Store a committed snapshot; ``data`` (its serialized form) and ``updated_us`` when the caller has them."""
        self._seq += 1
        self._items[task.id] = (
            to_us(task.updated_at) if updated_us is None else updated_us,
            task,
            task.SerializeToString() if data is None else data,
        )
        self._items.move_to_end(task.id)  # recently written stays longest
        self._evict()

    def fill(self, task: tasks_pb2.Task, mark: int, data: bytes | None = None) -> None:
        # Refused when an eviction happened after the read began (it may have
        # dropped a newer snapshot of this task that the read did not see).
        if task.id in self._items or self._last_evict > mark:
            return
        self._items[task.id] = (to_us(task.updated_at), task, task.SerializeToString() if data is None else data)
        self._evict()

    def _evict(self) -> None:
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
            self._seq += 1
            self._last_evict = self._seq

    def __len__(self) -> int:
        return len(self._items)
