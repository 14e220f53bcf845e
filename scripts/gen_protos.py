#!/usr/bin/env python3
"""Regenerate the Python code of the lobwife contract.

    python scripts/gen_protos.py           # write clients/python/lobwife/v1/*
    python scripts/gen_protos.py --check   # exit 1 if the committed code is stale
    python scripts/gen_protos.py --stage-only  # only stage third-party protos for buf

Third-party protos (google/api, google/rpc) are not committed: they are staged
from the installed `googleapis-common-protos` package into build/third_party,
so buf and protoc see the same files the runtime imports.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("lobwife") / "v1"
OUT_ROOT = ROOT / "clients" / "python"
STAGE = ROOT / "build" / "third_party"
# The google/* files our protos import (and what those import in turn).
THIRD_PARTY = [
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/field_behavior.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
    "google/rpc/code.proto",
]


def googleapis_root() -> Path:
    import google.api.annotations_pb2 as ann  # from googleapis-common-protos

    # site-packages/google/api/annotations_pb2.py -> site-packages
    return Path(ann.__file__).resolve().parent.parent.parent


def well_known_root() -> Path:
    import grpc_tools

    return Path(grpc_tools.__file__).resolve().parent / "_proto"


def stage_third_party() -> Path:
    src = googleapis_root()
    for rel in THIRD_PARTY:
        dest = STAGE / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dest)
    return STAGE


def generate(out_root: Path) -> None:
    stage_third_party()
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    out_dir = out_root / PACKAGE_DIR
    if out_dir.exists():
        for old in out_dir.iterdir():
            if old.name != "__init__.py" and old.is_file():
                old.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{STAGE}",
        f"-I{well_known_root()}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=ROOT)
    init = out_dir / "__init__.py"
    init.write_text('"""Generated from proto/lobwife/v1 by scripts/gen_protos.py. Do not edit."""\n')
    write_services(out_dir / "services.py", protos)
    (out_root / "lobwife" / "py.typed").touch()


SERVICE_RE = re.compile(r"^service\s+(\w+)\s*\{", re.M)


def write_services(path: Path, protos: list[str]) -> None:
    """The list of the contract's services, in file order: the one list every other list derives from
    (the server's dispatcher, the typed client, the app's health names, the docs generator)."""
    found: list[tuple[str, str]] = []
    for rel in protos:
        module = Path(rel).stem + "_pb2"
        text = (PROTO_ROOT / rel).read_text()
        found += [(module, name) for name in SERVICE_RE.findall(text)]
    modules = sorted({m for m, _ in found})
    lines = [
        '"""Generated from proto/lobwife/v1 by scripts/gen_protos.py. Do not edit.',
        "",
        "Every service of the contract: the one list the server's dispatcher, the typed client and the",
        'docs derive theirs from."""',
        "",
        "from google.protobuf.descriptor import ServiceDescriptor",
        "",
        f"from lobwife.v1 import {', '.join(modules)}",
        "",
        "SERVICES: tuple[ServiceDescriptor, ...] = (",
        *[f'    {m}.DESCRIPTOR.services_by_name["{n}"],' for m, n in found],
        ")",
        "SERVICE_NAMES: tuple[str, ...] = tuple(s.full_name for s in SERVICES)",
        "",
    ]
    path.write_text("\n".join(lines))


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        (fresh / "lobwife").mkdir()
        generate(fresh)
        a, b = OUT_ROOT / PACKAGE_DIR, fresh / PACKAGE_DIR
        cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
        stale = cmp.left_only + cmp.right_only + cmp.diff_files
        if stale:
            print("generated code is stale; run `python scripts/gen_protos.py`:", ", ".join(sorted(stale)))
            return 1
    print("generated code is fresh")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if committed generated code is stale")
    ap.add_argument("--stage-only", action="store_true", help="only stage third-party protos")
    args = ap.parse_args()
    if args.stage_only:
        print(stage_third_party())
        return 0
    if args.check:
        return check()
    generate(OUT_ROOT)
    print(f"generated {OUT_ROOT / PACKAGE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
