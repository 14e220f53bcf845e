"""Cost events (``service``) and the price table they are computed with (``prices``, ``prices.toml``).

May import ``core``, ``storage`` and ``api``; not another domain.
"""
