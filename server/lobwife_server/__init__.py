"""The lobwife server: gRPC + HTTP/JSON gateway over SQLite."""

import os

# Job runs fork and exec at once; gRPC's fork handlers are not needed and, when
# enabled, log a line for every run. Must be set before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
