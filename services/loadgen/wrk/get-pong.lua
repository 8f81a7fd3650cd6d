-- wrk script: GET of the URL given on the command line (e.g. /pong?limit=100), with the report hook.
dofile("services/loadgen/wrk/report.lua")
