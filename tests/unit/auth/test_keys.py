"""Signing keys: created once (0600, atomically), given as a secret, rotated with a grace period."""

from __future__ import annotations

import base64
import json
import stat
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lobwife_server.auth.keys import KEYS_FILE, KeyFileError, KeyRing, rotate, thumbprint


def test_the_first_start_creates_a_private_key_file(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    path = tmp_path / KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = KeyRing.load_or_create(tmp_path)
    assert again.current.kid == ring.current.kid
    assert list(tmp_path.joinpath("auth").iterdir()) == [path]  # no temporary file left behind


def test_racing_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    kids: list[str] = []
    start = threading.Barrier(8)

    def create() -> None:
        start.wait()
        kids.append(KeyRing.load_or_create(tmp_path).current.kid)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(kids) == 8 and len(set(kids)) == 1


def test_kid_is_the_rfc_7638_thumbprint() -> None:
    # RFC 8037, appendix A.3: the thumbprint of its example Ed25519 key.
    x = base64.urlsafe_b64decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    assert thumbprint(Ed25519PublicKey.from_public_bytes(x)) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_rotation_keeps_the_old_key_for_its_grace_then_drops_it(tmp_path: Path) -> None:
    first = KeyRing.load_or_create(tmp_path).current.kid
    now = time.time()
    ring = rotate(tmp_path, grace=60, now=now)
    assert ring.current.kid != first
    assert ring.public_key(first, now + 59) is not None  # in grace
    assert ring.public_key(first, now + 61) is None  # out of grace
    assert ring.public_key(ring.current.kid, now + 10**6) is not None
    # A later rotation, past the first one's grace, drops that key from the file.
    later = rotate(tmp_path, grace=60, now=now + 120)
    assert first not in later.keys and ring.current.kid in later.keys
    assert stat.S_IMODE((tmp_path / KEYS_FILE).stat().st_mode) == 0o600


def test_a_pem_secret_is_a_ring_of_one(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = tmp_path / "lobwife-signing-key.pem"
    path.write_bytes(pem)
    path.chmod(0o400)
    ring = KeyRing.load(path)
    assert ring.current.kid == thumbprint(key.public_key()) and not ring.writable


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"garbage", "neither a lobwife key ring"),
        (b'{"keys": []}', "exactly one current key"),
        (b'{"keys": [{"private_key": "nope"}]}', "not an unencrypted PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not an unencrypted PEM private key"),
    ],
)
def test_a_bad_key_file_is_refused_naming_it(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=message) as e:
        KeyRing.load(path)
    assert str(path) in str(e.value)


def test_errors_never_show_key_material(tmp_path: Path) -> None:
    KeyRing.load_or_create(tmp_path)
    path = tmp_path / KEYS_FILE
    doc = json.loads(path.read_text())
    pem = doc["keys"][0]["private_key"]
    doc["keys"][0]["alg"] = "HS256"
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError) as e:
        KeyRing.load(path)
    assert pem.splitlines()[1] not in str(e.value)
