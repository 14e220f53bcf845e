"""JobService (``service``) and the cron scheduler: firing and recovery (``scheduler``), process groups
(``runner``), schedules (``schedules``), job rules (``definitions``), the TOML jobs file (``jobs_file``),
live run updates (``run_feed``), built-in jobs (``maintenance``) and the example jobs (``examples/``).

May import ``core``, ``storage`` and ``api``; not another domain.
"""
