"""The lobwife server: gRPC + HTTP/JSON gateway over SQLite."""

__version__ = "0.1.0"
