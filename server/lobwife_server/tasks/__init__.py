"""TaskService (``service``): tasks and their events, the write-through cache (``cache``) and the
change feed behind WatchTasks (``watch``).

May import ``core``, ``storage`` and ``api``; not another domain.
"""
