#!/usr/bin/env bash
# `buf breaking` for the contract, offline.
#
# Compares proto/ with a base revision: $BUF_BREAKING_AGAINST if set; otherwise
# main when on another branch, and on main the previous commit (so every commit
# that lands on main is checked against the one before it). Both sides are built
# with the googleapis protos staged from the installed package, since there is
# no network to fetch buf dependencies. A deliberate break is accepted only from
# a commit whose message has a `Breaking-Contract: <reason>` trailer.
set -euo pipefail
cd "$(dirname "$0")/.."

base="${BUF_BREAKING_AGAINST:-}"
if [ -z "$base" ]; then
  branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo HEAD)
  if [ "$branch" != "main" ] && git rev-parse -q --verify main >/dev/null; then
    base=main
  elif git rev-parse -q --verify HEAD~1 >/dev/null; then
    base=HEAD~1
  else
    echo "buf breaking: no base revision (first commit); nothing to compare"
    exit 0
  fi
fi

python scripts/gen_protos.py --stage-only >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$base" proto 2>/dev/null | tar -x -C "$tmp" || true
if [ ! -d "$tmp/proto/lobwife" ]; then
  echo "buf breaking: $base has no proto/lobwife; nothing to compare"
  exit 0
fi
mkdir -p "$tmp/build"
cp -r build/third_party "$tmp/build/third_party"
cp buf.yaml "$tmp/buf.yaml"
# Images of our files only (the staged googleapis files are imports, excluded).
(cd "$tmp" && buf build --path proto/lobwife -o "$tmp/base.binpb")
buf build --path proto/lobwife -o "$tmp/head.binpb"
if buf breaking "$tmp/head.binpb" --against "$tmp/base.binpb"; then
  echo "buf breaking: no breaking changes against $base"
  exit 0
fi
# An intentional break must say so in the commit that makes it, with a
# `Breaking-Contract: <reason>` trailer; it is then reported, not failed.
reason=$(git log -1 --format=%B | sed -n 's/^Breaking-Contract: *//p' | head -n 1)
if [ "$base" = "HEAD~1" ] && [ -n "$reason" ]; then
  echo "buf breaking: breaking changes above accepted by HEAD's Breaking-Contract trailer: $reason"
  exit 0
fi
exit 1
