#!/bin/sh
# Fails about one time in three, so retries and the run history have something to show.
n=$(od -An -N1 -tu1 /dev/urandom | tr -d ' ')
if [ $((n % 3)) -eq 0 ]; then
  echo "bad luck this time (roll $n)" >&2
  exit 1
fi
echo "fine (roll $n)"
