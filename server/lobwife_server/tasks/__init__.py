"""TaskService (``service``): tasks and their events, the write-through cache (``cache``) and the
change feed behind WatchTasks (``watch``), auth's TaskDirectory (``directory``) and what the domain
asks of the token broker (``broker_link``: app.py wires the broker in).

May import ``core``, ``storage`` and ``api``; not another domain.
"""
