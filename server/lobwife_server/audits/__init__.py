"""Audit findings (``service``): reported by the audit jobs, counted by fingerprint, resolved by people.

May import ``core``, ``storage`` and ``api``; not another domain.
"""
