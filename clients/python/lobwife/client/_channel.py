"""How a lobwife channel is set up: the address, the retry policy gRPC applies, reconnect backoff, metadata."""

from __future__ import annotations

import json
import os
from typing import Any

from lobwife import __version__
from lobwife.v1.services import SERVICE_NAMES

DEFAULT_ADDR = "127.0.0.1:50051"

# The backoff between attempts: initial, multiplier and cap. See the docstring of lobwife.client.
RETRY_INITIAL_BACKOFF_S = 0.5
RETRY_BACKOFF_MULTIPLIER = 2.0
RETRY_MAX_BACKOFF_S = 5.0
# gRPC ignores maxAttempts above 5 (it silently caps them), so more than 4 retries
# cannot be honoured; say so instead of pretending.
MAX_RETRIES = 4
# While the server is down the channel's own reconnect backoff decides when a new
# connection is tried; gRPC's default starts at 1 s and grows to 120 s, which would
# make late retry attempts fail fast against a stale TRANSIENT_FAILURE state although
# the server is back. Reconnecting sooner lets every retry attempt find a server that
# has just come up.
RECONNECT_INITIAL_BACKOFF_MS = 200
RECONNECT_MAX_BACKOFF_MS = 2000

#: Every service of the contract; the retry policy applies to all of them.
LOBWIFE_SERVICES: tuple[str, ...] = SERVICE_NAMES


def service_config(retries: int = MAX_RETRIES) -> dict[str, Any]:
    """The gRPC service config the clients' channels carry (as a dict; the channel gets its JSON).

    ``retries`` is the number of retries after the first attempt, 0 to 4.
    """
    if not 0 <= retries <= MAX_RETRIES:
        raise ValueError(f"retries must be between 0 and {MAX_RETRIES} (gRPC allows at most 5 attempts), not {retries}")
    method_config: dict[str, Any] = {"name": [{"service": name} for name in LOBWIFE_SERVICES]}
    if retries:
        # maxAttempts counts the first attempt; a retryPolicy with maxAttempts < 2 is
        # invalid and would make gRPC reject the whole service config.
        method_config["retryPolicy"] = {
            "maxAttempts": retries + 1,
            "initialBackoff": f"{RETRY_INITIAL_BACKOFF_S}s",
            "maxBackoff": f"{RETRY_MAX_BACKOFF_S}s",
            "backoffMultiplier": RETRY_BACKOFF_MULTIPLIER,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return {"methodConfig": [method_config]}


def channel_options(retries: int = MAX_RETRIES) -> list[tuple[str, str | int]]:
    """Channel arguments for a lobwife channel: the retry service config and reconnect backoff."""
    return [
        ("grpc.service_config", json.dumps(service_config(retries))),
        ("grpc.enable_retries", 1),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_BACKOFF_MS),
        ("grpc.primary_user_agent", f"lobwife-python/{__version__}"),
    ]


class Metadata(tuple[tuple[str, str], ...]):
    """Call metadata whose repr hides the credential: a traceback with locals, a debugger or a
    ``vars(client)`` in a log line shows ``Bearer <redacted>``, never the token."""

    __slots__ = ()

    def __repr__(self) -> str:
        shown = [(k, "Bearer <redacted>" if k == "authorization" else v) for k, v in self]
        return f"Metadata({shown!r})"

    __str__ = __repr__


def metadata(token: str | None) -> Metadata:
    return Metadata((("authorization", f"Bearer {token}"),) if token else ())


def resolve_addr(addr: str | None) -> str:
    return addr or os.environ.get("LOBWIFE_ADDR") or DEFAULT_ADDR


def check_token(value: str, source: str) -> str | None:
    """``value`` as a bearer token to send (None when empty), or ValueError naming ``source``.

    Whitespace around it is dropped (a token read from a file ends with a newline). A token
    that cannot be a metadata value (a space or a control character inside) is refused here,
    with a message that does not repeat it: gRPC would fail each call less clearly.
    """
    value = value.strip()
    if not value:
        return None
    if value.lower().startswith("bearer "):
        raise ValueError(f"{source}: give the token alone, without the 'Bearer ' prefix (the client adds it)")
    if not all(33 <= ord(c) <= 126 for c in value):
        raise ValueError(f"{source}: a bearer token is printable ASCII without spaces")
    return value


def resolve_token(token: str | None) -> str | None:
    """The bearer token to send: ``token``, else ``$LOBWIFE_TOKEN``; ``""`` sends none."""
    if token is not None:
        return check_token(token, "token")
    return check_token(os.environ.get("LOBWIFE_TOKEN", ""), "LOBWIFE_TOKEN")


class TokenFile:
    """A bearer token kept in a file and read again whenever the file changes.

    For the projected service-account token a pod mounts: the kubelet replaces it before it
    expires (by swapping a symlink), so a long-lived client must not keep the first one. Each
    call costs one ``stat``; the file is read only when its inode, size or mtime moved. A read
    that fails or finds no valid token keeps the last good one (the kubelet's swap is atomic, so
    that is a passing state), and the first read must succeed.
    """

    __slots__ = ("_metadata", "_stamp", "path")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._stamp: tuple[int, int, int] | None = None
        self._metadata = Metadata()
        stamp = self._stat()
        if stamp is None:
            raise ValueError(f"token_file: cannot read {self.path}")
        token = self._read(strict=True)
        self._stamp, self._metadata = stamp, metadata(token)
        if token is None:
            raise ValueError(f"token_file: {self.path} is empty")

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _read(self, *, strict: bool) -> str | None:
        try:
            with open(self.path, encoding="ascii", errors="replace") as f:
                return check_token(f.read(MAX_TOKEN_FILE), f"token_file {self.path}")
        except (OSError, ValueError) as e:
            if strict:
                raise ValueError(f"token_file: cannot read {self.path}: {getattr(e, 'strerror', None) or e}") from None
            return None

    def metadata(self) -> Metadata:
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            token = self._read(strict=False)
            if token is not None:
                self._stamp, self._metadata = stamp, metadata(token)
        return self._metadata

    def __repr__(self) -> str:
        return f"TokenFile({self.path!r})"


#: More than any JWT (a service-account token is about 1 KiB); a bigger file is not a token.
MAX_TOKEN_FILE = 16 * 1024


class ChannelSettings:
    """What both faces keep of their arguments (the channel itself is the face's own)."""

    def __init__(
        self,
        addr: str | None,
        timeout: float,
        retries: int,
        token: str | None,
        secure: bool,
        token_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        if token is not None and token_file is not None:
            raise ValueError("give token or token_file, not both")
        self.addr = resolve_addr(addr)
        self.timeout = timeout
        self.retries = retries
        self.secure = secure
        self._options = channel_options(retries)
        # The token lives only in the call metadata: no attribute, repr or error shows it.
        self._token_file: TokenFile | None = None
        if token_file is None and token is None and not os.environ.get("LOBWIFE_TOKEN", "").strip():
            token_file = os.environ.get("LOBWIFE_TOKEN_FILE") or None
        if token_file is not None:
            self._token_file = TokenFile(token_file)
            self._fixed = Metadata()
        else:
            self._fixed = metadata(resolve_token(token))

    @property
    def _metadata(self) -> Metadata:
        """The metadata of the next call: the fixed token's, or the token file's as it is now."""
        return self._fixed if self._token_file is None else self._token_file.metadata()

    @property
    def has_token(self) -> bool:
        """Whether calls carry a bearer token (the token itself is not readable back)."""
        return bool(self._metadata)

    def __repr__(self) -> str:
        token = f", token_file={self._token_file.path!r}" if self._token_file else ""
        token = token or (", token=<set>" if self._metadata else "")
        return f"{type(self).__name__}({self.addr!r}, timeout={self.timeout:g}, secure={self.secure}{token})"

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout
