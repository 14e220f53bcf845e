#!/bin/sh
# Reports the queue depth by calling lobwife back over HTTP, like the fleet's cron scripts.
# lobwife sets LOBWIFE_URL, LOBWIFE_JOB, LOBWIFE_RUN_ID and LOBWIFE_SCHEDULED_AT.
set -eu
body=$(curl -sf "$LOBWIFE_URL/api/v1/tasks?status=queued&limit=500")
count=$(printf '%s' "$body" | grep -o '"task_id"' | wc -l | tr -d ' ')
echo "run $LOBWIFE_RUN_ID for slot $LOBWIFE_SCHEDULED_AT: $count queued task(s)"
