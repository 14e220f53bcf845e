-- wrk script for the POST measurements: every request sends the same JSON body.
-- Used for lobwife's POST /api/v1/tasks and the baseline's POST /json alike.
wrk.method = "POST"
wrk.body = '{"name": "bench task", "type": "swe", "repos": ["o/r"], "actor": "bench"}'
wrk.headers["Content-Type"] = "application/json"
