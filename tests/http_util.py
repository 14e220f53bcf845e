"""Real curl, as the bash clients in the field call lobwife."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def curl(
    method: str,
    url: str,
    body: bytes | str | dict[str, Any] | list[Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 20,
) -> Reply:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "body"
        args = [
            "curl",
            "-sS",
            "-X",
            method,
            "-o",
            str(out),
            "-w",
            "%{http_code} %{content_type}",
            "--max-time",
            str(timeout),
        ]
        for k, v in (headers or {}).items():
            args += ["-H", f"{k}: {v}"]
        if body is not None:
            data = (
                json.dumps(body).encode()
                if isinstance(body, dict | list)
                else (body.encode() if isinstance(body, str) else body)
            )
            src = Path(tmp) / "req"
            src.write_bytes(data)
            args += ["-H", "Content-Type: application/json", "--data-binary", f"@{src}"]
        args.append(url)
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout + 5)
        if done.returncode != 0:
            raise RuntimeError(f"curl failed ({done.returncode}): {done.stderr}")
        code, _, ctype = done.stdout.partition(" ")
        return Reply(int(code), out.read_bytes() if out.exists() else b"", ctype)
