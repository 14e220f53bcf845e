"""lobwife's token signing keys: created in the state folder on first start, or given as a secret.

Algorithm: Ed25519 (JWS ``EdDSA``). Asymmetric, so whatever only verifies (a
second replica, a sidecar) needs no key that can mint; and of the asymmetric
algorithms PyJWT offers it is the fastest to sign and verify, with 32-byte keys
and no parameters to get wrong. HS256 would be faster still, but a shared secret
that verifies also mints, and it invites the key-confusion attack (a public key
used as an HMAC secret) that an explicit ``algorithms=["EdDSA"]`` rules out.

The key file (``<state>/auth/signing-keys.json``, mode 0600 in a 0700 folder) holds
a ring: one current key that signs, and the keys it replaced, each still accepted
until its ``valid_until`` (the rotation's grace period), so tokens minted before a
rotation keep working for a while. Every key has a ``kid`` (its RFC 7638 JWK
thumbprint), which tokens carry in their header.

The file is created at most once, atomically: written aside, then hard-linked into
place, so two processes starting at once (the server and ``lobwife auth mint``)
end up with the same key. A rotation rewrites it under an exclusive lock
(``flock``) and an atomic rename. Given as a secret (``--auth-signing-key``: a
ring file of this format, or one Ed25519 private key in PEM), the file is only
ever read. Key material is never logged: only kids are.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger("lobwife.auth")

ALGORITHM = "EdDSA"
#: Where the ring lives, relative to the state folder.
KEYS_FILE = Path("auth") / "signing-keys.json"
#: How long a replaced key still verifies, by default: longer than the longest-lived task.
DEFAULT_GRACE = 24 * 3600.0
_FORMAT = 1


class KeyFileError(Exception):
    """A key file that cannot be used; the message names the file and the problem, never key material."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(public: Ed25519PublicKey) -> str:
    """The key's RFC 7638 JWK thumbprint (SHA-256 over the canonical OKP JWK): a stable ``kid``."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True)
class SigningKey:
    """One Ed25519 key of the ring: its kid (RFC 7638 thumbprint), the pair, and when it was made and retired."""

    kid: str
    private: Ed25519PrivateKey
    public: Ed25519PublicKey
    created_at: float
    #: When a rotation replaced it (None: the current key).
    retired_at: float | None = None
    #: Tokens signed with it are refused after this (None: no end).
    valid_until: float | None = None

    @classmethod
    def generate(cls, now: float | None = None) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        public = private.public_key()
        return cls(thumbprint(public), private, public, time.time() if now is None else now)

    def verifies_at(self, now: float) -> bool:
        return self.valid_until is None or now <= self.valid_until

    def _to_json(self) -> dict[str, Any]:
        pem = self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return {
            "kid": self.kid,
            "alg": ALGORITHM,
            "private_key": pem.decode(),
            "created_at": self.created_at,
            "retired_at": self.retired_at,
            "valid_until": self.valid_until,
        }


def _private_from_pem(data: bytes, where: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{where}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{where}: the key is not an Ed25519 key (lobwife signs with EdDSA)")
    return key


def _key_from_json(obj: Any, where: str) -> SigningKey:
    if not isinstance(obj, dict):
        raise KeyFileError(f"{where}: each key must be an object")
    if obj.get("alg", ALGORITHM) != ALGORITHM:
        raise KeyFileError(f"{where}: alg must be {ALGORITHM}")
    pem = obj.get("private_key")
    if not isinstance(pem, str):
        raise KeyFileError(f"{where}: private_key (PEM) is missing")
    private = _private_from_pem(pem.encode(), where)
    public = private.public_key()
    kid = obj.get("kid") or thumbprint(public)
    if not isinstance(kid, str):
        raise KeyFileError(f"{where}: kid must be a string")

    def num(name: str) -> float | None:
        v = obj.get(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise KeyFileError(f"{where}: {name} must be a number of seconds since the epoch")
        return float(v)

    return SigningKey(kid, private, public, num("created_at") or 0.0, num("retired_at"), num("valid_until"))


class KeyRing:
    """The keys tokens may be signed with: one current (it signs), the rest verifying until their end."""

    def __init__(self, keys: list[SigningKey], path: Path | None = None, *, writable: bool = False) -> None:
        current = [k for k in keys if k.retired_at is None]
        if len(current) != 1:
            raise KeyFileError(
                f"{path or 'key ring'}: expected exactly one current key (not retired), found {len(current)}"
            )
        self.current = current[0]
        self.keys = {k.kid: k for k in keys}
        self.path = path
        self.writable = writable
        self._stamp = _stamp(path) if path is not None else None

    # -- reading --------------------------------------------------------------

    def public_key(self, kid: str, now: float) -> Ed25519PublicKey | None:
        """The key a token with this ``kid`` is checked with; None when unknown or past its grace."""
        key = self.keys.get(kid)
        if key is None or not key.verifies_at(now):
            return None
        return key.public

    def valid_until(self, kid: str) -> float | None:
        key = self.keys.get(kid)
        return None if key is None else key.valid_until

    def kids(self) -> list[str]:
        return list(self.keys)

    def changed_on_disk(self) -> bool:
        """The file differs from what was loaded (blocking: call from a thread)."""
        return self.path is not None and _stamp(self.path) != self._stamp

    # -- files ----------------------------------------------------------------

    @classmethod
    def load(cls, path: Path, *, writable: bool = False) -> KeyRing:
        """Read a ring file, or a single Ed25519 PEM private key (a secret given as a file)."""
        try:
            data = path.read_bytes()
        except OSError as e:
            raise KeyFileError(f"{path}: cannot read the signing key file: {e.strerror}") from None
        _warn_if_open(path)
        if data.lstrip().startswith(b"-----BEGIN"):
            private = _private_from_pem(data, str(path))
            key = SigningKey(thumbprint(private.public_key()), private, private.public_key(), 0.0)
            return cls([key], path, writable=False)
        try:
            obj = json.loads(data)
        except ValueError:
            raise KeyFileError(f"{path}: neither a lobwife key ring (JSON) nor a PEM private key") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("keys"), list):
            raise KeyFileError(f"{path}: a key ring is an object with a list of keys")
        keys = [_key_from_json(k, f"{path}: keys[{i}]") for i, k in enumerate(obj["keys"])]
        return cls(keys, path, writable=writable)

    @classmethod
    def load_or_create(cls, state_dir: Path) -> KeyRing:
        """The state folder's ring, created on first use (atomically: one winner among racing processes)."""
        path = state_dir / KEYS_FILE
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            ring = cls([SigningKey.generate()])
            tmp = _write_aside(path, ring._to_bytes())
            try:
                os.link(tmp, path)
                _fsync_dir(path.parent)
                log.info("created a signing key", extra={"kid": ring.current.kid, "path": str(path)})
            except FileExistsError:
                pass  # another process created it first: use theirs
            finally:
                tmp.unlink(missing_ok=True)
        return cls.load(path, writable=True)

    def _to_bytes(self) -> bytes:
        body = {"format": _FORMAT, "keys": [k._to_json() for k in self.keys.values()]}
        return json.dumps(body, indent=2).encode() + b"\n"


def rotate(state_dir: Path, grace: float = DEFAULT_GRACE, now: float | None = None) -> KeyRing:
    """A new current key in the state folder's ring; the old one verifies for ``grace`` seconds more.

    Keys whose grace has ended are dropped. Runs under an exclusive lock, so two rotations at once
    do not lose a key. A running server picks the new key up the first time it sees its kid.
    """
    if not 0 <= grace <= 366 * 86400:
        raise ValueError(f"grace must be between 0 and 366 days, got {grace:g} seconds")
    now = time.time() if now is None else now
    path = state_dir / KEYS_FILE
    KeyRing.load_or_create(state_dir)
    with _locked(path):
        ring = KeyRing.load(path, writable=True)
        kept = [k for k in ring.keys.values() if k.verifies_at(now) and k is not ring.current]
        old = replace(ring.current, retired_at=now, valid_until=now + grace)
        fresh = SigningKey.generate(now)
        new = KeyRing([fresh, old, *kept], path, writable=True)
        tmp = _write_aside(path, new._to_bytes())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    log.info("rotated the signing key", extra={"kid": fresh.kid, "previous_kid": old.kid, "grace_seconds": grace})
    return KeyRing.load(path, writable=True)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _write_aside(path: Path, data: bytes) -> Path:
    """``data`` in a new 0600 file beside ``path``, on disk."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _warn_if_open(path: Path) -> None:
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "the signing key file can be read by other users; chmod 600 it",
                extra={"path": str(path), "mode": oct(stat.S_IMODE(mode))},
            )
