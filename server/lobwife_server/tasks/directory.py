"""auth's TaskDirectory over the tasks domain: which task a credential names, and whether it is still live.

A task is live while it is not completed, failed or cancelled and its broker registration has not
ended (``broker_status`` ``deregistered``, ``expired``, or another ended word an update gave): so a
task credential dies with its task's access to GitHub. Read-only; the hot path (``is_live``, on
every call of a task credential) reads the write-through cache, which every commit updates before
its caller is answered.

References are task numbers (``42``, ``T42``); a broker reference by slug or name resolves to no
task, so a task credential cannot use one.
"""

from __future__ import annotations

from collections.abc import Sequence

from lobwife.v1 import tasks_pb2
from lobwife_server.core.errors import ApiError
from lobwife_server.core.validation import parse_task_number
from lobwife_server.storage import task_store as store
from lobwife_server.storage.interfaces import Conn
from lobwife_server.tasks.broker_link import BROKER_ENDED
from lobwife_server.tasks.service import TaskService

_ENDED = frozenset({store.STATUS_VALUE[s] for s in store.FINAL_STATUSES})
#: Candidates read per worker name: a worker has one live task; a few old ones may share its name.
_PER_NAME = 4


def task_is_live(task: tasks_pb2.Task) -> bool:
    """Not completed, failed or cancelled, and not deregistered from the broker."""
    if task.status in _ENDED:
        return False
    return not (task.HasField("broker_status") and task.broker_status in BROKER_ENDED)


class TaskDirectory:
    """The :class:`lobwife_server.auth.enforcer.TaskDirectory` of the server (app.py hands it to auth)."""

    def __init__(self, tasks: TaskService) -> None:
        self.tasks = tasks

    async def resolve(self, ref: str) -> int | None:
        try:
            return parse_task_number(ref)
        except ApiError:
            return None

    async def is_live(self, number: int) -> bool:
        task = await self.tasks.snapshot(number)
        return task is not None and task_is_live(task)

    async def task_of_worker(self, names: Sequence[str]) -> int | None:
        tasks = self.tasks.store

        def find(c: Conn) -> set[int]:
            found: set[int] = set()
            for name in names:
                for number, _ in tasks.list_task_keys(c, store.TaskFilter(assigned_to=name), None, _PER_NAME):
                    task = tasks.get_task(c, number)
                    if task is not None and task_is_live(task):
                        found.add(number)
            return found

        live = await self.tasks.db.read(find)
        return live.pop() if len(live) == 1 else None  # none, or ambiguous: no task
