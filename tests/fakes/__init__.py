"""Test doubles that are real servers (``github``: a GitHub App API stand-in on a free 127.0.0.1 port)."""
