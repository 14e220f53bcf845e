#!/usr/bin/env bash
# The whole check, from a fresh clone: install what the tests need, then run
# every gate CI runs. Usage: ./scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian tools the tests use (curl is the bash clients' tool). Installed only if missing.
if ! command -v curl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq curl; else
    echo "curl is required: sudo apt-get install curl" >&2; exit 1; fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
. .venv/bin/activate
pip install -q --disable-pip-version-check -e '.[server,dev]'

echo "== generated code is fresh"
python scripts/gen_protos.py --check
echo "== buf lint"
buf lint
echo "== buf breaking"
scripts/buf_breaking.sh
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== import layering"
lint-imports --no-cache
echo "== docs"
python scripts/gen_http_docs.py --check
echo "== pytest"
python -m pytest -q "$@"
