"""The lobwife server: gRPC + HTTP/JSON gateway over SQLite."""
