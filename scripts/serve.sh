#!/usr/bin/env bash
# Install lobwife into .venv (if needed) and start the server on its defaults:
# gRPC on 127.0.0.1:50051, HTTP on 127.0.0.1:8081, state in $XDG_STATE_HOME/lobwife
# (~/.local/state/lobwife). Extra arguments go to `lobwife serve`.
#
# The first run says what it does (the install is a quiet minute otherwise); later runs
# skip pip (it takes seconds even with nothing to do) unless pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
say() { echo "serve.sh: $*" >&2; }

if [ ! -x .venv/bin/python ]; then
  say "creating .venv ($PY -m venv)"
  "$PY" -m venv .venv
fi
. .venv/bin/activate

# What the last install here was made from; the code itself is an editable install.
STAMP=.venv/.lobwife-serve-installed
want=$(cksum < pyproject.toml)
if [ ! -x .venv/bin/lobwife ] || [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
  say "installing lobwife into .venv (first run takes a minute)"
  pip install -q --disable-pip-version-check -e '.[server]'
  echo "$want" > "$STAMP"
  say "starting: lobwife serve${*:+ $*}"
fi
exec lobwife serve "$@"
