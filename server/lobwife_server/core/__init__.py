"""What every layer uses: errors and their status mapping, metrics, logging, time, generic validation, page tokens.

Imports nothing of lobwife_server outside ``core`` (checked by import-linter, see pyproject.toml).
"""
