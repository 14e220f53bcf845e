#!/usr/bin/env bash
# Install lobwife into .venv (if needed) and start the server on its defaults:
# gRPC on 127.0.0.1:50051, HTTP on 127.0.0.1:8081, state in $XDG_STATE_HOME/lobwife
# (~/.local/state/lobwife). Extra arguments go to `lobwife serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
. .venv/bin/activate
pip install -q --disable-pip-version-check -e '.[server]'
exec lobwife serve "$@"
