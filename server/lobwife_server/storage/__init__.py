"""The database: one writer thread with group commit and a pool of readers (``database``), the
migrations and the legacy import (``migrations``), and each domain's SQL (``task_store``, ``job_store``).

May import ``core`` only. SQLite lives here and nowhere else is meant to (issue 9 finishes that).
"""
