"""SystemService (``service``): the legacy ``/health`` document.

May import ``core``, ``storage`` and ``api``; not another domain.
"""
