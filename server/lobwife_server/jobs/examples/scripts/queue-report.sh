#!/bin/sh
# Reports the queue depth by calling lobwife back over HTTP, like the fleet's cron scripts.
# lobwife sets LOBWIFE_URL, LOBWIFE_JOB, LOBWIFE_RUN_ID and LOBWIFE_SCHEDULED_AT (and LOBWIFE_TOKEN, below).
set -eu
# With auth on, lobwife hands each run a credential of its own in $LOBWIFE_TOKEN.
body=$(curl -sf ${LOBWIFE_TOKEN:+-H "Authorization: Bearer $LOBWIFE_TOKEN"} "$LOBWIFE_URL/api/v1/tasks?status=queued&limit=500")
count=$(printf '%s' "$body" | grep -o '"task_id"' | wc -l | tr -d ' ')
echo "run $LOBWIFE_RUN_ID for slot $LOBWIFE_SCHEDULED_AT: $count queued task(s)"
