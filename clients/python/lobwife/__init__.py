"""lobwife: typed client, CLI and generated stubs for the lobwife control plane."""

__version__ = "0.1.0"
