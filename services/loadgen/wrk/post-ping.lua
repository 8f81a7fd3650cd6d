-- wrk script: POST /ping with a small JSON body (what `make bench` measures).
-- Run from the repository root: wrk -s services/loadgen/wrk/post-ping.lua http://127.0.0.1:8080/ping
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"msg": "benchmark message from wrk"}'
dofile("services/loadgen/wrk/report.lua")
